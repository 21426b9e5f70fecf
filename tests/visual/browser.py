"""Headless Chromium (Debian's ``chromium``) for the visual tests: screenshots, DOM dumps, DevTools.

Every run gets a fresh profile and the flags that keep it off the network; nothing is left running.
``screenshot``/``dump_dom`` use Chromium's one-shot command-line modes; :class:`DevTools` drives a
page over ``--remote-debugging-pipe`` (JSON messages on fds 3/4, no port, no extra package) for pages
that render with scripts after the load event (Voilà).
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--disable-dev-shm-usage", "--mute-audio"]


def chromium() -> str:
    """The chromium binary; skip without it, except under CI (``make test`` installs it)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium missing in CI (make test installs Debian's chromium)")
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    return exe


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="imgscope-chromium-", ignore_cleanup_errors=True) as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)


def screenshot(url: str, out: Path, width: int = 1280, height: int = 2000) -> np.ndarray:
    """Screenshot ``url`` into ``out`` and return its pixels (H×W×3 uint8)."""
    _run([f"--screenshot={out}", f"--window-size={width},{height}", url])
    assert out.exists(), f"chromium wrote no screenshot of {url}"
    return pixels(out)


def dump_dom(url: str) -> str:
    """The serialised DOM of ``url`` after load."""
    return _run(["--dump-dom", url]).stdout.decode("utf-8", "replace")


def pixels(path: Path) -> np.ndarray:
    """A PNG's pixels as H×W×3 uint8 (decoded by matplotlib)."""
    from matplotlib.image import imread
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return (imread(path)[..., :3] * 255).round().astype(np.uint8)


def colours(px: np.ndarray, min_share: float = 0.0005) -> int:
    """Distinct colours covering at least ``min_share`` of the pixels (anti-aliasing noise ignored)."""
    flat = px.reshape(-1, 3).astype(np.uint32)
    codes = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    _, counts = np.unique(codes, return_counts=True)
    return int((counts >= min_share * len(codes)).sum())


def ink_rows(px: np.ndarray) -> float:
    """Share of pixel rows that are not uniformly one colour (a blank page has ~0)."""
    return float((px.reshape(px.shape[0], -1).std(axis=1) > 0).mean())


def _high(fd: int) -> int:
    """A copy of ``fd`` numbered 10 or more (the original is closed)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class DevTools:
    """One headless Chromium page driven over the DevTools protocol (``--remote-debugging-pipe``)."""

    def __init__(self, width: int = 1280, height: int = 2000) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="imgscope-chromium-", ignore_cleanup_errors=True)
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # the child's ends move above fd 9, so "3<&A 4>&B" cannot overwrite one before it is copied (bash: dash
        # takes one-digit fds only)
        to_chrome_r, from_chrome_w = (_high(fd) for fd in (to_chrome_r, from_chrome_w))
        cmd = ["bash", "-c", f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}', chromium(), *FLAGS,
               f"--user-data-dir={self._profile.name}", "--remote-debugging-pipe",
               f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(cmd, pass_fds=(to_chrome_r, from_chrome_w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf, self._id, self.session = b"", 0, None
        try:
            targets = self.call("Target.getTargets")["targetInfos"]
            pages = [t["targetId"] for t in targets if t["type"] == "page"]
            page = pages[0] if pages else self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
            self.call("Page.enable")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> DevTools:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop this browser (the process group this object started) and drop its profile."""
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):   # the browser's own process group: it and its helpers
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(10)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc.poll()
        self._profile.cleanup()

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        """Send one command (to the attached page once there is one) and wait for its result."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer {method}")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium exited")
            self._buf += chunk

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """Run JavaScript in the page; its value (JSON-able), or RuntimeError when it throws."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression[:80]}: {res['exceptionDetails'].get('exception', {}).get('description')}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 90, poll: float = 0.5) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(poll)
        raise TimeoutError(f"page never satisfied: {expression}")

    def screenshot(self, out: Path, full_page: bool = True, max_height: int = 8000) -> np.ndarray:
        """PNG of the page written to ``out``; returns its pixels.

        ``full_page`` grows the viewport to the tallest scrolling element (Voilà and JupyterLab scroll
        inside a container, not the document), at most ``max_height`` pixels.
        """
        if full_page:
            height = self.evaluate("Math.max(...[...document.querySelectorAll('*')].map(e => e.scrollHeight))")
            width = self.evaluate("window.innerWidth")
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=min(int(height), max_height),
                      deviceScaleFactor=1, mobile=False)
            time.sleep(0.5)
        out.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return pixels(out)


def has_colour(px: np.ndarray, hex_colour: str, tolerance: int = 2, min_pixels: int = 20) -> bool:
    """True when at least ``min_pixels`` pixels are within ``tolerance`` of ``#rrggbb`` per channel."""
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], np.int16)
    near = (np.abs(px.astype(np.int16) - rgb) <= tolerance).all(axis=-1)
    return int(near.sum()) >= min_pixels
