"""Headless Chromium (Debian's ``chromium``) driven over the Chrome DevTools protocol.

A small client: it starts the browser with a fresh profile and no network services, talks to
the page over the DevTools websocket (``websocket-client``; nothing is downloaded at run time,
unlike driver managers), records console errors, uncaught exceptions and failed loads while a
page opens, and reads the page back with JavaScript. ``python -m tests.chromium PAGE PNG``
saves a screenshot (the README's report picture is made this way).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

__all__ = ["REQUIRE_BROWSER_ENV", "Chromium", "PageReport", "chromium_binary"]

REQUIRE_BROWSER_ENV = "MEDFOUNDRY_REQUIRE_BROWSER"
"""Set (by .ci/run) where a missing browser must fail the browser tests instead of skipping them."""

FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1200,900",
    "--hide-scrollbars",
)

READ_PAGE = """(() => ({
  title: document.title,
  images: Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth, alt: i.alt})),
  tables: Array.from(document.querySelectorAll('table')).map(t => ({
    header: t.querySelectorAll('th').length,
    rows: Array.from(t.querySelectorAll('tr')).filter(r => r.querySelector('td')).length,
  })),
  headings: Array.from(document.querySelectorAll('h1, h2')).map(h => h.textContent),
}))()"""


def chromium_binary() -> str | None:
    """Path of the Chromium executable (Debian: ``chromium``), or ``None``."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageReport:
    """What a page showed: its content (``READ_PAGE``) and every error raised while it loaded."""

    content: dict[str, Any]
    errors: list[str] = field(default_factory=list)


class Chromium:
    """One headless browser with one page; use as a context manager."""

    def __init__(self, binary: str, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self.profile = tempfile.mkdtemp(prefix="medfoundry-chromium-")
        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.socket = websocket.create_connection(self._page_socket_url(), timeout=timeout_s)
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def open(self, page: Path) -> PageReport:
        """Load ``page`` and report its content and every error seen while loading it."""
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.events.clear()
        self.call("Page.navigate", url=Path(page).resolve().as_uri())
        self._wait_for("Page.loadEventFired")
        result = self.call("Runtime.evaluate", expression=READ_PAGE, returnByValue=True)
        return PageReport(result["result"]["value"], self._errors())

    def screenshot(self, path: Path, max_height: int = 2400) -> Path:
        """The page from its top, at most ``max_height`` CSS pixels, as PNG."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        width, height = int(size["width"]), min(int(size["height"]), max_height)
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.call("Emulation.setDeviceMetricsOverride", **metrics)
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip)
        Path(path).write_bytes(base64.b64decode(data["data"]))
        return Path(path)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events arriving meanwhile are kept)."""
        self._next_id += 1
        self.socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    def _wait_for(self, event: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} within {self.timeout_s} s")
            self.events.append(json.loads(self.socket.recv()))

    def _errors(self) -> list[str]:
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                values = (str(a.get("value", a.get("description"))) for a in params["args"])
                errors.append("console: " + " ".join(values))
            elif method == "Runtime.exceptionThrown":
                errors.append("exception: " + params["exceptionDetails"].get("text", ""))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(f"log: {params['entry']['text']} ({params['entry'].get('url', '')})")
            elif method == "Network.loadingFailed":
                errors.append(f"load failed: {params.get('errorText')}")
        return errors

    def _page_socket_url(self) -> str:
        """The page's DevTools websocket, from the port the browser wrote into its profile."""
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout_s
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start (no DevToolsActivePort in its profile)")
            time.sleep(0.05)
        port = port_file.read_text().splitlines()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout_s) as response:
            targets = json.loads(response.read())
        page = next(t for t in targets if t["type"] == "page")
        url: str = page["webSocketDebuggerUrl"]
        return url


def main() -> None:
    """``python -m tests.chromium PAGE.html OUT.png``: open a page, print its errors, save a screenshot."""
    page, out = Path(sys.argv[1]), Path(sys.argv[2])
    binary = chromium_binary()
    if binary is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    with Chromium(binary) as browser:
        report = browser.open(page)
        for error in report.errors:
            print(error)
        browser.screenshot(out, max_height=int(os.environ.get("SCREENSHOT_MAX_HEIGHT", "2400")))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
