"""Build and run every fuzz harness for a fixed time; print the exec counts (``make fuzz``).

    .venv/bin/python fuzz/run.py [--seconds 60] [--only native|python] [--format qcow2 ...]

Native harnesses (native/fuzz/fuzz_*.c, one per function of
native/imgscope_native.h) are compiled with clang ``-fsanitize=fuzzer,address,undefined``
against the extension's own sources (native/build_ffi.py SOURCES) and run on a
work corpus seeded from native/fuzz/corpus (make_corpus.py).  The Python
harness (fuzz/fuzz_images.py) runs once per registered format.  Work corpora,
binaries and crash files live under build/fuzz/.  Exit status 1 when any
harness crashed.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "native"
WORK = ROOT / "build" / "fuzz"
CFLAGS = ["-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined",
          "-Wall", "-Wextra", "-Werror", "-std=c99"]


@dataclass
class Result:
    harness: str
    seconds: int
    execs: int
    crashed: bool
    detail: str = ""
    cpu: float = 0.0  # CPU seconds the harness process used (user + system)


def _run(cmd: list[str], seconds: int, startup: int = 0, **kw) -> tuple[int, str, float]:
    """Run ``cmd``; return its exit status, combined output and CPU seconds (from wait4).

    libFuzzer checks ``-max_total_time`` only between inputs, and atheris runs have overrun it
    by 20 minutes under load, so the run is also stopped from outside: SIGINT (libFuzzer then
    prints its final stats and exits 0) two minutes after the deadline, SIGKILL a minute later.
    The deadline is ``seconds`` after a ``startup`` allowance (the fuzzing clock starts after it).
    """
    import signal
    import tempfile
    import threading
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, **kw)
        stopped: list[int] = []

        def stop(sig: int) -> None:
            stopped.append(sig)
            p.send_signal(sig)
        stops = [threading.Timer(startup + seconds + 120, stop, (signal.SIGINT,)),
                 threading.Timer(startup + seconds + 180, stop, (signal.SIGKILL,))]
        for t in stops:
            t.daemon = True
            t.start()
        _, status, usage = os.wait4(p.pid, 0)
        for t in stops:
            t.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
        if stopped and "==ERROR" not in text and "Traceback" not in text:
            text += f"\n[run.py: stopped from outside {len(stopped)} signal(s) after the deadline; no crash]"
            return 0, text, usage.ru_utime + usage.ru_stime
        return p.returncode, text, usage.ru_utime + usage.ru_stime


def tooling_missing() -> str | None:
    """Why the fuzzers cannot run here, or None."""
    if shutil.which("clang") is None:
        return "clang is not installed (make fuzz installs clang and libclang-rt-*-dev)"
    if not glob.glob("/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer*-x86_64.a") and \
            not glob.glob("/usr/lib/clang/*/lib/*/libclang_rt.fuzzer*.a"):
        return "the libFuzzer runtime (libclang-rt-*-dev) is not installed"
    try:
        import atheris  # noqa: F401
    except ImportError:
        return "atheris is not installed (pip install -e '.[fuzz]')"
    return None


def native_harnesses() -> list[str]:
    return sorted(Path(p).stem.removeprefix("fuzz_") for p in glob.glob(str(NATIVE / "fuzz" / "fuzz_*.c")))


def native_sources() -> list[Path]:
    sys.path.insert(0, str(NATIVE))
    try:
        from build_ffi import SOURCES
    finally:
        sys.path.remove(str(NATIVE))
    return [NATIVE / s for s in SOURCES]


def build_native(name: str, outdir: Path | None = None) -> Path:
    outdir = outdir or WORK / "bin"
    outdir.mkdir(parents=True, exist_ok=True)
    exe = outdir / f"fuzz_{name}"
    cmd = ["clang", *CFLAGS, f"-I{NATIVE}", str(NATIVE / "fuzz" / f"fuzz_{name}.c"), *map(str, native_sources()),
           "-o", str(exe)]
    subprocess.run(cmd, check=True)
    return exe


def _execs(output: str) -> int:
    m = re.findall(r"Done (\d+) runs", output) or re.findall(r"#(\d+)\s", output)
    return int(m[-1]) if m else 0


#: libFuzzer -seed for reproducible runs (the test suite fixes it; `make fuzz` leaves it random)
SEED: int | None = int(os.environ["FUZZ_SEED"]) if os.environ.get("FUZZ_SEED") else None


def _seed_arg() -> list[str]:
    return [f"-seed={SEED}"] if SEED is not None else []


def run_native(name: str, seconds: int) -> Result:
    exe = build_native(name)
    corpus = WORK / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    crashes = WORK / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    seeds = NATIVE / "fuzz" / "corpus" / name
    cmd = [str(exe), str(corpus), *([str(seeds)] if seeds.is_dir() else []), f"-max_total_time={seconds}",
           "-max_len=8192", "-rss_limit_mb=1024", f"-artifact_prefix={crashes}/{name}-", "-print_final_stats=1", *_seed_arg()]
    rc, out, cpu = _run(cmd, seconds)
    return Result(f"native:{name}", seconds, _execs(out), rc != 0, _crash_summary(out) if rc else "", cpu)


PYTHON_STARTUP = 600  # seconds allowed for the Python harness's start-up (see run_python)


def run_python(formats: list[str], seconds: int, runs: int | None = None) -> Result:
    """The atheris harness over ``formats`` for ``seconds`` of fuzzing, or until ``runs`` inputs ran."""
    fmt = "+".join(formats)
    crashes = WORK / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    corpus = WORK / "corpus" / f"py-{fmt}"
    corpus.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(ROOT / "fuzz" / "fuzz_images.py"), *(a for f in formats for a in ("--format", f)), "--",
           str(corpus),
           f"-max_total_time={seconds}", "-rss_limit_mb=3072", "-timeout=60", f"-artifact_prefix={crashes}/py-{fmt}-",
           *_seed_arg(), *([f"-runs={runs}"] if runs else [])]
    env = dict(os.environ, IMGSCOPE_NATIVE=os.environ.get("IMGSCOPE_NATIVE", "1"))
    # atheris instruments numpy and pandas before the fuzzing clock starts: 1-2 minutes, over 2 under
    # AddressSanitizer on a busy machine (a 15 s CI run was stopped while still importing)
    rc, out, cpu = _run(cmd, seconds, startup=PYTHON_STARTUP, cwd=crashes, env=env)
    return Result(f"python:{fmt}", seconds, _execs(out), rc != 0, _crash_summary(out) if rc else "", cpu)


def _crash_summary(out: str) -> str:
    keep = [ln for ln in out.splitlines() if re.search(r"Error|error:|SUMMARY|Traceback|==ERROR|File \"", ln)]
    return "\n".join(keep[-12:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 60)), help="per harness")
    ap.add_argument("--only", choices=("native", "python"))
    ap.add_argument("--format", action="append", help="formats for the Python harness (default: all registered)")
    ap.add_argument("--native", action="append", metavar="NAME",
                    help="native harnesses to run, e.g. l2_scan (default: all of native/fuzz/fuzz_*.c)")
    ap.add_argument("--together", action="store_true", help="one Python run over all formats (one start-up)")
    ap.add_argument("--jobs", type=int, default=1, help="harnesses run at the same time")
    args = ap.parse_args(argv)
    why = tooling_missing()
    if why:
        print(f"fuzz: {why}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from fuzz.seeds import RECIPES, registered_formats
    jobs: list = []
    natives = args.native or native_harnesses()
    unknown = sorted(set(natives) - set(native_harnesses()))
    if unknown:
        ap.error(f"no native harness {', '.join(unknown)} (have {', '.join(native_harnesses())})")
    if args.only != "python":
        jobs += [(run_native, h) for h in natives]
    if args.only != "native":
        formats = args.format or [f for f in registered_formats() if f in RECIPES]  # qemu-img can make seeds
        groups = [formats] if args.together else [[f] for f in formats]
        jobs += [(run_python, g) for g in groups]
    if args.only != "python":  # compile before the clock starts, one at a time
        for h in natives:
            build_native(h)
    print(f"{'harness':<24}{'seconds':>8}{'cpu s':>8}{'execs':>12}  result", flush=True)
    from concurrent.futures import ThreadPoolExecutor, as_completed
    results = []
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for fut in as_completed([pool.submit(fn, arg, args.seconds) for fn, arg in jobs]):  # one line as each finishes
            r = fut.result()
            results.append(r)
            print(f"{r.harness:<24}{r.seconds:>8}{r.cpu:>8.0f}{r.execs:>12}  {'CRASH' if r.crashed else 'ok'}",
                  flush=True)
            if r.detail:
                print("    " + r.detail.replace("\n", "\n    "), flush=True)
    return 1 if any(r.crashed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
