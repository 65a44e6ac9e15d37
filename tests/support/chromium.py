"""Headless Chromium driven through its DevTools protocol, so a browser test waits on what the page
shows (its text, its elements), never on a fixed sleep or a virtual-time budget.

The websocket client is aiohttp's (installed with MLflow, which requires it); calls are synchronous
for the tests, each run to completion on this object's own event loop.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root, which Chromium's sandbox refuses
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",  # Chromium picks a free port and prints it on stderr
]
LISTENING = re.compile(r"DevTools listening on (ws://\S+)")
POLL_S = 0.25


class Chromium:
    """One headless Chromium with one page; `open(url)`, `wait_for_text(...)`, `screenshot(path)`."""

    def __init__(self, profile_dir: Path, width: int = 1600, height: int = 1000, start_timeout_s: float = 60) -> None:
        if not Path(CHROMIUM).exists():
            pytest.fail(f"chromium not found at {CHROMIUM}: apt-get install chromium (scripts/setup.sh does)")
        self._loop = self._session = self._ws = None
        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # its own process group: close() ends the renderers with it
        )  # fmt: skip
        self._stderr: list[str] = []
        endpoint = self._devtools_endpoint(start_timeout_s)
        self._loop = asyncio.new_event_loop()
        self._ids = itertools.count(1)
        self._run(self._connect(self._page_socket(endpoint)))
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    # -- start-up ---------------------------------------------------------------------------
    def _devtools_endpoint(self, timeout_s: float) -> str:
        """The browser's websocket address, from the line Chromium prints once it listens."""
        found: list[str] = []
        ready = threading.Event()

        def read() -> None:  # keeps draining stderr for the browser's life (a full pipe would block it)
            for line in self.process.stderr:
                self._stderr.append(line)
                if not found and (match := LISTENING.search(line)):
                    found.append(match.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read, name="chromium-stderr", daemon=True).start()
        if not ready.wait(timeout_s) or not found:
            self.close()
            pytest.fail(f"chromium did not open its DevTools port within {timeout_s:.0f} s: {self.log_tail()}")
        return found[0]

    def _page_socket(self, endpoint: str) -> str:
        """The websocket of the page Chromium opened (about:blank)."""
        http = "http://" + endpoint.removeprefix("ws://").split("/", 1)[0]
        with urllib.request.urlopen(f"{http}/json/list", timeout=30) as response:
            targets = json.load(response)
        pages = [t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"]
        if not pages:
            self.close()
            pytest.fail(f"chromium has no page to drive: {targets}")
        return pages[0]

    async def _connect(self, url: str) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(url, max_msg_size=0)  # screenshots are large

    # -- the protocol -------------------------------------------------------------------------
    def _run(self, coroutine):
        return self._loop.run_until_complete(coroutine)

    def call(self, method: str, timeout_s: float = 60, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events that arrive meanwhile are skipped)."""
        return self._run(asyncio.wait_for(self._call(method, params), timeout_s))

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        ident = next(self._ids)
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = await self._ws.receive()
            if message.type.name != "TEXT":
                raise RuntimeError(f"DevTools socket closed during {method}: {message.type.name} {self.log_tail()}")
            reply = json.loads(message.data)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised in the page: {result['exceptionDetails']}")
        return result["result"].get("value")

    # -- what a test does ----------------------------------------------------------------------
    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for(self, expression: str, what: str, timeout_s: float = 120) -> Any:
        """Poll a JavaScript expression until it is truthy; fail after `timeout_s`, naming `what` and
        what the page showed."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"not on the page within {timeout_s:.0f} s: {what}\npage text:\n{self.text()[:3000]}")
            time.sleep(POLL_S)

    def wait_for_text(self, *needles: str, timeout_s: float = 120) -> str:
        """Poll the page's visible text until every needle is in it; that text."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.text()
            missing = [n for n in needles if n not in text]
            if not missing:
                return text
            if time.monotonic() > deadline:
                pytest.fail(f"not on the page within {timeout_s:.0f} s: {missing}\npage text:\n{text[:3000]}")
            time.sleep(POLL_S)

    def click(self, selector: str, what: str, timeout_s: float = 120) -> None:
        """Click the middle of the first element matching a CSS selector (or a JavaScript expression
        that yields an element, when `selector` starts with `js:`), as a mouse would, once it is there."""
        element = selector[3:] if selector.startswith("js:") else f"document.querySelector({json.dumps(selector)})"
        x, y = self.wait_for(
            f"""(() => {{ const e = {element}; if (!e) return null;
                e.scrollIntoView({{block: 'center', inline: 'center'}});
                const r = e.getBoundingClientRect();
                return r.width > 0 && r.height > 0 ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()""",
            what, timeout_s,
        )  # fmt: skip
        for event in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=event, x=x, y=y, button="left", clickCount=1)

    def type_text(self, text: str) -> None:
        """Type into whatever has the focus (as an input method would: React sees the change)."""
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def log_tail(self, lines: int = 10) -> str:
        return "".join(self._stderr[-lines:])

    def close(self) -> None:
        if self._ws is not None:
            self._run(self._ws.close())
        if self._session is not None:
            self._run(self._session.close())
        if self._loop is not None:
            self._loop.close()
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
