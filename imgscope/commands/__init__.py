"""Subcommands of the ``imgscope`` CLI (see imgscope.cli.COMMANDS)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_output(p: argparse.ArgumentParser, *choices: str) -> None:
    p.add_argument("--output", choices=choices or ("human", "json"), default="human", help="output format")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=4)
    sys.stdout.write("\n")
