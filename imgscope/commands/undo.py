"""Restore an image from the undo log of a repair (byte-identical, including its length)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("undo_file")
    p.add_argument("--image", help="restore this file instead of the path recorded in the log")
    p.add_argument("--force", action="store_true", help="restore even if the image changed after the repair")


def run(args: argparse.Namespace) -> int:
    import os

    from ..errors import ImageInUse, RepairError
    from ..io import Source
    from ..lock import exclusive_for_repair, probe
    from ..undo import read_log, restore
    log = read_log(args.undo_file)
    path = args.image or log.image_path
    who = probe(path)
    if who:
        raise ImageInUse(f"{path}: image is in use by {who}; stop it before restoring")
    with Source(path, writable=True) as src, exclusive_for_repair(src.fd, path):
        st = os.fstat(src.fd)
        if not args.image and not args.force and (st.st_dev, st.st_ino) != (log.device, log.inode):
            raise RepairError(f"{path} is not the file the undo log was written for (use --image/--force)")
        n = restore(src.fd, log, force=args.force)
    if not log.complete:
        print(f"{args.undo_file}: the repair never started writing; {path} is unchanged")
    else:
        print(f"restored {n} range(s) of {path} and its original length ({log.original_size} bytes)")
    return 0
