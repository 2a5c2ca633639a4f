"""Headless Chromium for the report pages' tests and benchmark: no extra Python package.

``HeadlessChromium`` starts the system Chromium with ``--remote-debugging-pipe`` and speaks
the Chrome DevTools Protocol over that pipe (JSON messages ending in a NUL byte on file
descriptors 3 and 4), so neither Playwright nor a websocket client is needed. It loads a page,
waits for a JavaScript promise, evaluates expressions, reads the DOM and takes screenshots.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

#: Executable names tried in order (``$EXPLLM_CHROMIUM`` first when set).
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class BrowserError(RuntimeError):
    """Chromium could not be started, or a DevTools call failed."""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or None."""
    given = os.environ.get("EXPLLM_CHROMIUM")
    if given:
        return shutil.which(given) or (given if Path(given).is_file() else None)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class HeadlessChromium:
    """One headless browser with one page; use as a context manager."""

    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 900):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError("no Chromium found (apt-get install chromium, or $EXPLLM_CHROMIUM)")
        self.width, self.height = width, height
        self._next_id = 0
        self._buffer = b""

    def __enter__(self) -> HeadlessChromium:
        self._profile = tempfile.TemporaryDirectory(prefix="expllm-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes():  # in the child: DevTools reads fd 3 and writes fd 4
            import fcntl

            high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)  # dup2 targets are inherited across exec
            os.dup2(high_w, 4)

        args = [
            self.executable,
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--mute-audio",
            f"--user-data-dir={self._profile.name}",
            f"--window-size={self.width},{self.height}",
        ]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to run as root with the sandbox
        self._proc = subprocess.Popen(
            args,
            close_fds=False,  # our descriptors are non-inheritable (PEP 446) but for 3 and 4
            preexec_fn=wire_pipes,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self.call("Browser.close", timeout=5)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._profile.cleanup()

    # -- DevTools protocol ----------------------------------------------------------------
    def call(self, method: str, session: bool = False, timeout: float = 60.0, **params) -> dict:
        """Send one command and wait for its answer (events in between are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError("Chromium closed the DevTools pipe")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    # -- page helpers -----------------------------------------------------------------------
    def open(self, url: str, ready: str | None = None, timeout: float = 60.0) -> float:
        """Load ``url`` (always a full load); with ``ready``, await that JS promise too.

        Returns the seconds from the navigation until the page (and ``ready``) finished.
        """
        if self.evaluate("document.URL") != "about:blank":  # same URL but the hash: reload
            self.call("Page.navigate", session=True, url="about:blank")
            self._wait_loaded("about:blank", timeout)
        started = time.perf_counter()
        self.call("Page.navigate", session=True, url=url)
        self._wait_loaded(url, timeout)
        if ready:
            self.evaluate(ready, timeout=timeout)
        return time.perf_counter() - started

    def _wait_loaded(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        want = url.split("#")[0]
        while True:
            here, state = self.evaluate("[document.URL, document.readyState]", timeout=timeout)
            if here.split("#")[0] == want and state == "complete":
                return
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} did not load in {timeout} s (at {here}, {state})")
            time.sleep(0.01)

    def evaluate(self, expression: str, timeout: float = 60.0):
        """The value of a JavaScript expression (promises awaited)."""
        result = self.call(
            "Runtime.evaluate",
            session=True,
            timeout=timeout,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript error: {text}")
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        """A PNG of the viewport (or of the whole page, up to 16,000 px high)."""
        params: dict = {"format": "png"}
        if full_page:
            size = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size[0],
                "height": min(size[1], 16000),
                "scale": 1,
            }
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", session=True, **params)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
