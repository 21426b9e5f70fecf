"""Run the main job on the bundled sample image: info, snapshots, check."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", nargs="?", help="image to use instead of the bundled sample")


def sample_path() -> str:
    from importlib import resources  # imported here: every CLI start builds the parser from this module
    return str(resources.files("imgscope") / "data" / "sample.qcow2")


def run(args: argparse.Namespace) -> int:
    import imgscope
    from .info import human
    from .snapshots import table
    path = args.image or sample_path()
    with imgscope.open(path) as img:
        print("== imgscope info ==")
        print(human(img.info_dict()))
        print("\n== imgscope snapshots ==")
        snaps = img.info_dict().get("snapshots", [])
        print("\n".join(table(snaps)) if snaps else "no snapshots")
        print("\n== imgscope check ==")
        res = img.check()
        print(res.report())
        print("\n== where the space goes (imgscope clusters) ==")
        roles = img.clusters()["role"].value_counts()
        print(roles[roles > 0].to_string())
    return 0
