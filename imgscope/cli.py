"""``imgscope`` command line: one module per subcommand in :mod:`imgscope.commands`.

Errors about an image print one line (``imgscope: <structure> at offset 0x…: <reason>``)
and exit 1; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import ImgscopeError

#: subcommand name -> module in imgscope.commands (each has add_arguments(p) and run(args) -> int)
COMMANDS = {
    "info": "info",
    "map": "map",
    "snapshots": "snapshots",
    "check": "check",
    "demo": "demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgscope", description="Inspect, check and repair virtual disk images.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"imgscope {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, mod in COMMANDS.items():
        module = importlib.import_module(f"imgscope.commands.{mod}")
        p = sub.add_parser(name, help=module.__doc__.strip().splitlines()[0] if module.__doc__ else None)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _version() -> str:
    from . import __version__
    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ImgscopeError as exc:
        if args.debug:
            raise
        print(f"imgscope: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
