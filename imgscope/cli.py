"""``imgscope`` command line: one module per subcommand in :mod:`imgscope.commands`.

Errors about an image print one line (``imgscope: <structure> at offset 0x…: <reason>``)
and exit 1; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
import types
from typing import Any

# imgscope does no linear algebra, but numpy's OpenBLAS starts a thread per core at import that
# busy-waits for work, taking a core from the check for its first tenths of a second (before
# numpy is imported, so it takes effect; a user's own setting wins)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


class _Deferred(types.ModuleType):
    """A standard module imported on its first attribute use.  construct imports pdb (for its Debugger)
    and hashlib (for compile()) at import time, 28 of a check's ~300 ms, and uses neither in what
    imgscope calls.  (importlib.util.LazyLoader does not help: Python 3.11's ``import pdb`` reads the
    module's ``__spec__``, which loads it.)"""

    def __getattr__(self, attr: str) -> object:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


for _name in ("pdb", "hashlib"):
    sys.modules.setdefault(_name, _Deferred(_name))


from .errors import ImgscopeError  # noqa: E402

#: subcommand name -> module in imgscope.commands (each has add_arguments(p) and run(args) -> int)
COMMANDS = {
    "info": "info",
    "map": "map",
    "snapshots": "snapshots",
    "check": "check",
    "demo": "demo",
    "tree": "tree",
    "report": "report",
    "scan": "scan",
    "repair": "repair",
    "undo": "undo",
}


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, sized without ``shutil``: argparse imports it (and with it zlib, bz2 and
    lzma, ~2 ms) for the terminal width whenever an option is added, while only --help and usage errors
    print anything."""

    def __init__(self, prog: str, **kwargs: Any) -> None:
        if kwargs.get("width") is None:
            try:
                columns = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size(sys.__stdout__.fileno()).columns
            except (ValueError, OSError, AttributeError):
                columns = 80
            kwargs["width"] = columns - 2
        super().__init__(prog, **kwargs)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or with ``only`` one subcommand (its module alone is imported: a whole-process
    ``imgscope check`` does not pay for importing the other nine)."""
    parser = argparse.ArgumentParser(prog="imgscope", description="Inspect, check and repair virtual disk images.",
                                     formatter_class=_Formatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"imgscope {_version()}")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                        help="raise or lower a resource limit, e.g. max_l1_bytes=64M (docs/security.md)")
    parser.add_argument("--allow-backing-outside", action="store_true",
                        help="follow backing files/extents outside the image's own directory")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, mod in COMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(f"imgscope.commands.{mod}")
        p = sub.add_parser(name, help=module.__doc__.strip().splitlines()[0] if module.__doc__ else None,
                           formatter_class=_Formatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _version() -> str:
    from . import __version__
    return __version__


def _apply_safety_options(args: argparse.Namespace) -> None:
    """--limit and --allow-backing-outside (see imgscope.limits and imgscope.chain)."""
    if args.limit:
        from . import limits
        limits.configure(",".join(args.limit))
    if args.allow_backing_outside:
        from . import chain
        chain.ALLOW_OUTSIDE = True


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not a global option or its value)."""
    it = iter(argv)
    for a in it:
        if a == "--limit":
            next(it, None)
        elif not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    return _run(_parse(argv))


def entry() -> None:
    """The ``imgscope`` console script: ``sys.exit(main())``, with a read-only command (``_read_only``)
    ended by ``os._exit`` once stdout and stderr are flushed, and the cyclic garbage collector off
    for it.  Such a process writes no file, and its objects die with it: tearing down numpy and the
    check's arrays took 18 ms of a 1 TiB check's 208, collections during the imports 6 ms."""
    gc.disable()
    args = _parse(None)
    if not _read_only(args):
        gc.enable()
        sys.exit(_run(args))
    rc = _run(args)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader left: as in main
        pass
    os._exit(rc)


def _read_only(args: argparse.Namespace) -> bool:
    """Commands that read images and print, writing nothing (check without a repair)."""
    return args.command in ("info", "map", "snapshots") or (args.command == "check" and not args.repair)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    return build_parser(_command_in(sys.argv[1:] if argv is None else argv)).parse_args(argv)


def _run(args: argparse.Namespace) -> int:
    try:
        _apply_safety_options(args)
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
    entry()
