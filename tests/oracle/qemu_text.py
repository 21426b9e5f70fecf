"""imgscope's text against qemu-img's, byte for byte, with the only differences allowed (docs/cli.md).

Shared by tests/oracle/test_human.py, tests/oracle/test_cli_options.py and both random-history
generators (tests/oracle/random_history.py, tests/formats/random_history.py):

* an error line starts with ``imgscope: `` where qemu-img's starts with ``qemu-img: ``;
* after qemu's stdout imgscope may print its own block after a blank line, starting with ``marker``;
* in JSON text, lines of ``"imgscope-..."`` keys, each saying something (true or a string).

Nothing here imports imgscope; functions return a description of the first difference, or None.
"""
from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

#: the line that starts imgscope's own block after qemu's stdout (imgscope/commands/info.py, imgscope/check.py)
INFO_ONLY = "imgscope (not shown by qemu-img):"
CHECK_ONLY = "imgscope findings and notes qemu-img check does not print:"
#: human output: name -> (qemu-img command and options, imgscope command and options)
COMMANDS = {
    "info": (("info", "-U"), ("info",)),
    "chain": (("info", "-U", "--backing-chain"), ("info", "--chain")),
    "map": (("map", "-U"), ("map",)),
    "check": (("check", "-U"), ("check", "--qemu-messages")),
    "snapshot": (("snapshot", "-l", "-U"), ("snapshots",)),
}
#: JSON text: name -> (qemu-img command and options, imgscope command and options)
JSON_COMMANDS = {
    "info": (("info", "--output=json"), ("info", "--output", "json")),
    "chain": (("info", "--output=json", "--backing-chain"), ("info", "--output", "json", "--backing-chain")),
    "check": (("check", "--output=json"), ("check", "--output", "json")),
}


def qemu_stderr_as_ours(stderr: str) -> str:
    """qemu-img's stderr with imgscope's program name at the start of its error lines."""
    return "".join("imgscope: " + line[len("qemu-img: "):] if line.startswith("qemu-img: ") else line
                   for line in stderr.splitlines(True))


def _first_line_diff(want: str, got: str) -> str:
    a, b = want.splitlines(True), got.splitlines(True)
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"line {i + 1}: imgscope {y!r} != qemu {x!r}"
    return f"imgscope has {len(b)} lines, qemu {len(a)}" + (f"; next: {(b or a)[min(len(a), len(b)):][:1]!r}"
                                                            if len(a) != len(b) else "")


def text_diff(theirs: tuple[str, str, int], ours: tuple[str, str, int], marker: str,
              own: bool | None) -> str | None:
    """(stdout, stderr, exit code) of imgscope against qemu-img's. ``own``: whether imgscope's own block
    (starting with ``marker``) must be there (True), must not (False), or may be (None)."""
    tout, terr, trc = theirs
    out, err, rc = ours
    if rc != trc:
        return f"exit code imgscope {rc} != qemu {trc} (stderr imgscope {err[:200]!r}, qemu {terr[:200]!r})"
    qerr = qemu_stderr_as_ours(terr)
    if err != qerr:
        return f"stderr {_first_line_diff(qerr, err)}"
    head, sep, _ = out.partition(marker + "\n")
    if own is not None and bool(sep) != own:
        return f"imgscope's own block {'missing' if own else 'unexpected'}"
    if sep:  # separated from qemu's text by a blank line, when qemu printed any
        if head and not head.endswith("\n\n"):
            return "imgscope's own block does not follow a blank line"
        head = head[:-1]
    if head != tout:
        return f"stdout {_first_line_diff(tout, head)}"
    return None


def own_json_lines(out: str) -> list[str]:
    """The lines of imgscope-only keys in imgscope's JSON text."""
    return [ln for ln in out.splitlines(True) if ln.lstrip().startswith('"imgscope-')]


def _without(text: str, drop: list[str]) -> str:
    """``text`` without the lines in ``drop``; a dropped last member takes the comma before it along."""
    kept: list[str] = []
    for ln in text.splitlines(True):
        if ln in drop:
            if not ln.rstrip().endswith(",") and kept and kept[-1].rstrip().endswith(","):
                kept[-1] = kept[-1].rstrip()[:-1] + "\n"
            continue
        kept.append(ln)
    return "".join(kept)


def json_text_diff(theirs: tuple[str, int], ours: tuple[str, int], filename: str | None = None) -> str | None:
    """JSON text (stdout, exit code) of imgscope against qemu-img's: equal once imgscope's own key lines,
    each true or a string, are taken out. ``filename``: qemu named the image otherwise (``--image-opts``),
    put this name in its ``"filename"`` values."""
    tout, trc = theirs
    out, rc = ours
    if filename is not None:
        tout = re.sub(r'"filename": "(?:[^"\\]|\\.)*"', lambda _: f'"filename": "{filename}"', tout)
    own = own_json_lines(out)
    bad = [ln for ln in own if not ln.rstrip().rstrip(",").endswith(("true", '"'))]
    if bad:
        return f"imgscope-only key saying nothing: {bad[0].strip()!r}"
    out = _without(out, own)
    if (rc, out) != (trc, tout):
        return f"exit code imgscope {rc} != qemu {trc}" if rc != trc else f"JSON text {_first_line_diff(tout, out)}"
    return None


def map_windows(vsize: int) -> list[tuple[str, ...]]:
    """``map --start-offset/--max-length`` options for an image of ``vsize`` bytes: an unaligned window
    inside the disk and the tail from an unaligned offset (qemu clips both the same way)."""
    start = vsize // 3 + 1000 if vsize > 3000 else 0
    return [("--start-offset", str(start), "--max-length", str(vsize // 4 + 4097)),
            ("--start-offset", str(max(0, vsize - 700)))]


Run = Callable[..., tuple[str, str, int]]


def outcome(p: subprocess.CompletedProcess) -> tuple[str, str, int]:
    """(stdout, stderr, exit code) of a finished process, as :func:`text_diffs` wants them."""
    return p.stdout, p.stderr, p.returncode


def text_diffs(qemu_img: Run, imgscope: Run, qemu_image: list[str], image: list[str], vsize: int,
               chain: bool, keyed: list[str] | None = None, filename: str | None = None) -> list[tuple[str, str]]:
    """(what, difference) for every text of one image that is not qemu-img's: the JSON text of ``info``
    (and ``--backing-chain`` with ``chain``) and ``check``; the human ``info`` (``--chain``), ``map``,
    ``check --qemu-messages`` and ``snapshots``; ``map`` windows, JSON and human.

    ``qemu_img(*argv)``/``imgscope(*argv)`` run a tool and return (stdout, stderr, exit code);
    ``qemu_image``/``image``: the arguments naming the image for each (``qemu_image`` may start with
    ``-f FMT``, left out for ``snapshot -l``); ``keyed``: qemu's arguments with the LUKS key (``--object
    ... --image-opts ...``) for what ``info`` does without (qemu then names the image by its options; in JSON
    text ``filename`` replaces that name, see :func:`json_text_diff`).  A qemu-img
    that dies of a signal is no oracle: that text is skipped."""
    out: list[tuple[str, str]] = []
    keyed = keyed or qemu_image
    no_fmt = keyed[2:] if keyed[:1] == ["-f"] else keyed
    own: dict[str, bool] = {}
    for name, (qargs, iargs) in JSON_COMMANDS.items():
        if name == "chain" and not chain:
            continue
        tout, _, trc = qemu_img(*qargs, "-U", *(qemu_image if qargs[0] == "info" else keyed))
        iout, _, irc = imgscope(*iargs, *image)
        own[name] = bool(own_json_lines(iout))
        diff = None if trc < 0 else json_text_diff((tout, trc), (iout, irc), None if qargs[0] == "info" else filename)
        if diff:
            out.append((f"{name}-json-text", diff))
    runs = [(name, qargs, iargs) for name, (qargs, iargs) in COMMANDS.items() if name != "chain" or chain]
    runs += [(f"map-window-{i}-{o}", ("map", "-U", f"--output={o}", *w), ("map", "--output", o, *w))
             for i, w in enumerate(map_windows(vsize)) for o in ("json", "human")]
    for name, qargs, iargs in runs:
        theirs = qemu_img(*qargs, *(no_fmt if name == "snapshot" else qemu_image if qargs[0] == "info" else keyed))
        if theirs[2] < 0:
            continue
        marker = {"info": INFO_ONLY, "chain": INFO_ONLY}.get(name, CHECK_ONLY)
        expected = own.get(name, False) if name in ("info", "chain") else None if name == "check" else False
        diff = text_diff(theirs, imgscope(*iargs, *image), marker, expected)
        if diff:
            out.append((f"{name}-text", diff))
    return out
