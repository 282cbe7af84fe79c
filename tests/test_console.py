"""The web console (spk_tools/console/) in headless Chromium against a real ``spk serve``.

Chromium (Debian's package; ``make chromium`` installs it) is driven through
the DevTools protocol over ``--remote-debugging-pipe``: JSON messages on two
pipes, so no port and no extra library. Each test opens the console in a
fresh browser context, signs in with a token the way a person does (typing
it into the form, clicking with the mouse) and watches what the page shows.
Every page must load with no console error, no uncaught exception and no
failed request (the tests that provoke a 4xx allow exactly that one).

Most tests share one ``spk serve`` subprocess; the tests that change the
schedule or end the run, and the fleet view's, serve the same app in this
process (``create_app`` around their own running systems) so that they
never disturb the others.

Every wait is bounded (WAIT, far more than a run needs) and nothing asserts
how fast anything is: a test waits for a number of major frames to have
passed, or for the page to show something, then looks.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from spgs.control import Controller
from spgs.fleet.config import load_fleet
from spgs.fleet.runner import LocalTransport
from spgs.system import load_and_plan
from spk_tools.api import Token, Tokens, create_app, create_fleet_app
from spk_tools.api.auth import digest
from spk_tools.fleet_serve import WatchedFleet
from tests.api_helpers import ADMIN, READER, write_tokens_file

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "console"
WIDTH, HEIGHT = 1280, 800
#: Upper bound of any wait for the page or the server (wall seconds): generous, never reached when all is well.
WAIT = 30.0


class CdpError(Exception):
    """A DevTools call answered with an error, or no answer came in time."""


class Browser:
    """Headless Chromium, spoken to in the DevTools protocol over a pipe pair.

    Chromium reads commands from its fd 3 and writes answers and events to
    its fd 4, each message a JSON object ended by a NUL byte. A reader
    thread files answers by id and keeps every event for the pages to look at.
    """

    def __init__(self, user_dir: Path) -> None:
        assert CHROMIUM.exists(), "headless Chromium missing: `make chromium` installs Debian's package"
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
            "--force-color-profile=srgb", "--remote-debugging-pipe", f"--user-data-dir={user_dir}",
            f"--window-size={WIDTH},{HEIGHT}", "about:blank",
        ]  # fmt: skip
        # Chromium wants the pipes on fds 3 and 4: a tiny Python puts them there, then becomes Chromium.
        trampoline = (  # (dup first: either pipe may already sit on fd 3 or 4)
            "import os, sys; r, w = os.dup(int(sys.argv[1])), os.dup(int(sys.argv[2]));"
            " os.dup2(r, 3); os.dup2(w, 4); os.set_inheritable(3, True); os.set_inheritable(4, True);"
            " os.execv(sys.argv[3], sys.argv[3:])"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", trampoline, str(to_chrome_r), str(from_chrome_w), str(CHROMIUM), *flags],
            pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id = 0
        self._lock = threading.Condition()
        self._answers: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._answers[-1] = {"error": {"message": "Chromium closed the pipe"}}
                    self._lock.notify_all()
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._lock:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._answers[message["id"]] = message
                    else:
                        self.events.append(message)
                self._lock.notify_all()

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None) -> Any:
        """Send one command and wait (bounded) for its answer; its ``result``."""
        with self._lock:
            self._next_id += 1
            ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + WAIT
        with self._lock:
            while ident not in self._answers and -1 not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CdpError(f"{method}: no answer from Chromium within {WAIT} s")
                self._lock.wait(left)
            answer = self._answers.pop(ident, None) or self._answers[-1]
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error'].get('message')}")
        return answer.get("result", {})

    def events_of(self, session: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("sessionId") == session]

    def close(self) -> None:
        with contextlib.suppress(CdpError, OSError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)


class Page:
    """One tab in its own browser context (its own session storage), at WIDTH x HEIGHT unless told."""

    def __init__(self, browser: Browser, url: str, *, width: int = WIDTH, height: int = HEIGHT) -> None:
        self.browser = browser
        self.context = browser.call("Target.createBrowserContext")["browserContextId"]
        target = browser.call("Target.createTarget", {"url": "about:blank", "browserContextId": self.context})
        self.target = target["targetId"]
        self.session = browser.call("Target.attachToTarget", {"targetId": self.target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip
        self.call("Page.navigate", {"url": url})
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'", f"{url} loaded")

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.browser.call(method, params, session=self.session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails'].get('text')}: {result['result']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy; its value. Bounded by WAIT.

        An expression that throws (an element not there yet) counts as not yet true.
        """
        deadline = time.monotonic() + WAIT
        while True:
            try:
                value, error = self.evaluate(expression), ""
            except CdpError as exc:
                value, error = None, str(exc)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {WAIT} s for {what or expression} {error}; page: {self.problems()}")
            time.sleep(0.05)

    def type_into(self, selector: str, text: str) -> None:
        """Focus a field and type ``text`` as keyboard input."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", {"text": text})

    def fill(self, selector: str, text: str) -> None:
        """Empty a field, then type ``text`` into it."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).value = ''")
        self.type_into(selector, text)

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element, once it is enabled (it must be visible)."""
        self.wait_for(f"document.querySelector({json.dumps(selector)})?.disabled === false", f"{selector} enabled")
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def sign_in(self, token: str) -> None:
        self.wait_for("!document.getElementById('login').hidden", "the sign-in form")
        self.type_into("#token", token)
        self.click("#login-form button[type=submit]")
        self.wait_for("!document.getElementById('console').hidden", "the console after signing in")

    def box(self, selector: str) -> dict[str, float]:
        """Where an element is, in page coordinates (what a screenshot's clip takes), whole pixels."""
        return dict(self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return {x: Math.round(r.x + scrollX), y: Math.round(r.y + scrollY), width: Math.round(r.width),"
            " height: Math.round(r.height)}; })()"
        ))  # fmt: skip

    def screenshot(self, clip: dict[str, float] | None = None, *, full: bool = False) -> bytes:
        """A PNG of the viewport, of ``clip`` (page coordinates), or of the ``full`` page."""
        params: dict[str, Any] = {"format": "png"}
        if full:
            width, height = self.evaluate("[document.body.scrollWidth, document.body.scrollHeight]")
            clip = {"x": 0, "y": 0, "width": width, "height": height}
            params["captureBeyondViewport"] = True
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", params)["data"])

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and failed requests of this page so far."""
        found = []
        for event in self.browser.events_of(self.session):
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert"):
                args = [a.get("value", a.get("description")) for a in params["args"]]
                found.append(f"console.{params['type']}: {args}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails'].get('text')} {params['exceptionDetails']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                entry = params["entry"]
                found.append(f"log {entry['level']}: {entry['text']} {entry.get('url', '')}")
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                found.append(f"request failed: {params.get('errorText')} ({params.get('type')})")
            elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
                found.append(f"HTTP {params['response']['status']}: {params['response']['url']}")
        return found

    def response_headers(self, url: str) -> dict[str, str]:
        """The headers of the answer to ``url`` (names in lower case)."""
        for e in self.browser.events_of(self.session):
            if e["method"] == "Network.responseReceived" and e["params"]["response"]["url"] == url:
                return {k.lower(): v for k, v in e["params"]["response"]["headers"].items()}
        raise AssertionError(f"no answer to {url}")

    def requests(self) -> list[str]:
        """The URLs this page asked for."""
        return [e["params"]["request"]["url"] for e in self.browser.events_of(self.session)
                if e["method"] == "Network.requestWillBeSent"]  # fmt: skip

    def close(self) -> None:
        self.browser.call("Target.closeTarget", {"targetId": self.target})
        self.browser.call("Target.disposeBrowserContext", {"browserContextId": self.context})


# -- PNG pixels (stdlib only) ----------------------------------------------------------------------
def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the rows of an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _c, _f, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                up = prev[i]
                up_left = prev[i - bpp] if i >= bpp else 0
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def changed_pixels(a: bytes, b: bytes, box: tuple[int, int, int, int]) -> int:
    """How many pixels inside ``box`` (left, top, right, bottom) differ between two screenshots of one size."""
    wa, ha, rows_a = png_pixels(a)
    wb, hb, rows_b = png_pixels(b)
    assert (wa, ha) == (wb, hb)
    bpp = len(rows_a[0]) // wa
    left, top, right, bottom = box
    changed = 0
    for ra, rb in zip(rows_a[top:bottom], rows_b[top:bottom], strict=True):
        if ra != rb:
            changed += sum(1 for x in range(left, right) if ra[x * bpp : x * bpp + 3] != rb[x * bpp : x * bpp + 3])
    return changed


# -- the server --------------------------------------------------------------------------------------
#: A system that never ends: "busy" computes through every window, "faulty" crashes every few windows
#: and is restarted cold each time, "idle" gives its windows up, "guest" runs two apps and exits,
#: "jitter" uses a different part of each window (JITTER), so the chart never repeats itself.
CONFIG = """\
[system]
name = "console-test"
memory = "16MiB"
seed = 1
max_ticks = 1_000_000_000_000

[[partition]]
name = "busy"
image = "bench_compute"
memory = "256KiB"
window = 30_000

[[partition]]
name = "faulty"
image = "faulty"
memory = "256KiB"
window = 10_000
health = { memory_violation = "cold_restart", restart_limit = 1000 }

[[partition]]
name = "idle"
image = "bench_yield"
memory = "256KiB"
window = 10_000

[[partition]]
name = "guest"
image = "refkernel"
apps = ["hello", "counter"]
memory = "1MiB"
window = 10_000

[[partition]]
name = "jitter"
image = "jitter.asm"
memory = "256KiB"
window = 20_000
"""
#: A guest that computes a pseudo-random number of iterations (a linear congruential generator:
#: no period a test could meet) in each window, then gives the rest of the window up.
JITTER = """\
    mov r12, 1
next_window:
    imul r12, r12, 1103515245
    add r12, 12345
    mov rcx, r12
    shr rcx, 16
    and rcx, 0x1fff
    inc rcx
spin:
    dec rcx
    jnz spin
    mov rax, HC_YIELD
    int 0x82
    jmp next_window
"""
#: Major frames per second of wall time: fast enough for short tests, slow enough to watch a chart fill.
PACE = 25
_SERVING = re.compile(r"^serving \S+ at (http://\S+/) ")


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]

    def api(self, method: str, path: str, token: str = ADMIN) -> Any:
        return call(self.url, method, path, token)


def call(url: str, method: str, path: str, token: str = ADMIN) -> Any:
    """One API call with ``token``: the parsed JSON answer (raises HTTPError for a 4xx/5xx)."""
    request = urllib.request.Request(f"{url}api/v1/{path}", method=method,
                                     headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=WAIT) as answer:
        return json.load(answer)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``spk serve`` on 127.0.0.1, any free port, with one admin and one read token."""
    folder = tmp_path_factory.mktemp("console-serve")
    (folder / "console.toml").write_text(CONFIG, encoding="utf-8")
    (folder / "jitter.asm").write_text(JITTER, encoding="utf-8")
    write_tokens_file(folder)
    command = [sys.executable, "-m", "spk_tools", "serve", str(folder / "console.toml"), "--port", "0",
               "--tokens", str(folder / "tokens.toml"), "--pace", str(PACE)]  # fmt: skip
    errors = folder / "stderr.txt"
    with errors.open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        try:
            first = lines.get(timeout=WAIT * 2)  # the first run builds the guests' images
        except queue.Empty:
            first = ""
        found = _SERVING.match(first)
        if found is None:
            process.kill()
            process.wait(WAIT)
            pytest.fail(f"spk serve did not start: {first!r}\n{errors.read_text(encoding='utf-8')}")
        yield Server(found.group(1), process)
    finally:
        process.terminate()
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    chrome = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield chrome
    finally:
        chrome.close()


@pytest.fixture
def page_at(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Open pages (each in its own browser context); each is closed after the test."""
    pages: list[Page] = []

    def open_page(url: str, **size: int) -> Page:
        pages.append(Page(browser, url, **size))
        return pages[-1]

    yield open_page
    for page in pages:
        page.close()


def eventually(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` until it holds, for at most WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"waited {WAIT} s for {what}"
        time.sleep(0.05)


def frames_shown(page: Page) -> int:
    """The last major frame the chart has drawn."""
    return int(page.evaluate("Number(document.getElementById('share-chart').dataset.lastFrame || 0)"))


def save(name: str, png: bytes) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.write_bytes(png)
    return path


# -- the tests ---------------------------------------------------------------------------------------
def test_console_shows_the_system_and_its_chart_moves(server: Server, page_at: Callable[..., Page]) -> None:
    page = page_at(server.url)
    page.sign_in(ADMIN)
    page.wait_for("document.querySelectorAll('#parts-body tr').length === 5", "the partitions table")
    page.wait_for("Number(document.getElementById('share-chart').dataset.points) >= 3", "the chart's first frames")
    assert page.evaluate("document.getElementById('sys-name').textContent") == "console-test"
    assert page.evaluate("document.getElementById('role').textContent") == "admin · ops"
    assert page.evaluate("document.getElementById('sys-pace').textContent") == f"{PACE} frames/s"
    rows = page.evaluate(
        "[...document.querySelectorAll('#parts-body tr')].map(tr => [tr.dataset.partition,"
        " tr.querySelector('.state').textContent, tr.cells[2].textContent])"
    )
    assert [r[0] for r in rows] == ["busy", "faulty", "idle", "guest", "jitter"]
    assert rows[0][1:] == ["ready", "30,000"]
    # the busy partition uses all of its window: 30,000 of the major frame's 80,000 ticks
    page.wait_for("document.querySelector('tr[data-partition=busy] .meter span').textContent === '37.5% of 37.5%'")
    # faulty crashes and is restarted: health events and restarts in its row, events in the feed
    page.wait_for("Number(document.querySelector('tr[data-partition=faulty] td:nth-child(7)').textContent) >= 1",
                  "a restart of faulty")  # fmt: skip
    page.wait_for("[...document.querySelectorAll('#events li')].some(li => li.textContent.includes("
                  "'faulty memory_violation → cold_restart'))", "faulty's health event in the feed")  # fmt: skip
    # a single system: no fleet view
    assert page.evaluate("document.getElementById('fleet').hidden") is True

    chart = page.box("#share-chart")
    before_frame = frames_shown(page)
    before = page.screenshot(chart)
    page.wait_for(f"Number(document.getElementById('share-chart').dataset.lastFrame) >= {before_frame + 10}",
                  "ten more major frames")  # fmt: skip
    after = page.screenshot(chart)
    save("chart-before.png", before)
    save("chart-after.png", after)
    save("console.png", page.screenshot())
    # the plot area itself changed (not only the axis labels under it): the chart moves
    width, height, _rows = png_pixels(before)
    plot = (44, 10, width - 12, height - 34)
    assert changed_pixels(before, after, plot) > 200
    assert page.problems() == []
    assert all(url.startswith(server.url) for url in page.requests()), "the console asked outside its server"
    # it ran under a policy that allows nothing but its own server (and blocks inline script and style)
    assert page.response_headers(server.url)["content-security-policy"].startswith("default-src 'self';")


def test_read_only_token_cannot_reach_a_mutation(server: Server, page_at: Callable[..., Page]) -> None:
    page = page_at(server.url)
    page.sign_in(READER)
    page.wait_for("document.querySelectorAll('#parts-body tr').length === 5", "the partitions table")
    assert page.evaluate("document.getElementById('role').textContent") == "read-only · viewer"
    assert page.evaluate("!document.getElementById('readonly-hint').hidden")
    buttons = page.evaluate(
        "[...document.querySelectorAll('#parts-body button')].map(b => [b.textContent, b.disabled,"
        " b.checkVisibility()])"
    )
    assert len(buttons) == 15 and all(disabled and not visible for _t, disabled, visible in buttons), buttons
    assert page.evaluate("document.querySelector('#parts th.actions-col').checkVisibility()") is False
    save("console-read-only.png", page.screenshot())
    assert page.problems() == []


def test_pause_and_restart_from_the_console_show_in_the_api(server: Server, page_at: Callable[..., Page]) -> None:
    page = page_at(server.url)
    page.sign_in(ADMIN)
    page.wait_for("document.querySelector('tr[data-partition=idle] .state')?.textContent === 'ready'")
    page.click("tr[data-partition=idle] button[data-action=toggle]")
    page.wait_for("document.querySelector('tr[data-partition=idle] .state').textContent === 'paused'", "idle paused")
    eventually(lambda: server.api("GET", "partitions/idle")["state"] == "paused", "idle paused in the API")
    page.wait_for("[...document.querySelectorAll('#events li')].some(li => li.textContent.includes("
                  "'idle pause by api:ops: done'))", "the management event in the feed")  # fmt: skip
    assert page.evaluate("document.querySelector('tr[data-partition=idle] button[data-action=toggle]').textContent") \
        == "Resume"  # fmt: skip
    page.click("tr[data-partition=idle] button[data-action=toggle]")
    page.wait_for("document.querySelector('tr[data-partition=idle] .state').textContent === 'ready'", "idle resumed")
    eventually(lambda: server.api("GET", "partitions/idle")["state"] == "ready", "idle resumed in the API")

    restarts = server.api("GET", "partitions/idle")["restarts"]
    page.click("tr[data-partition=idle] button[data-action=restart]")
    page.wait_for("document.getElementById('restart-dialog').open", "the restart dialog")
    page.click("#restart-form input[value=warm]")
    page.click("#restart-form button[value=restart]")
    page.wait_for("[...document.querySelectorAll('#events li')].some(li => li.textContent.includes("
                  "'idle restart by api:ops: done'))", "the restart in the feed")  # fmt: skip
    # the API's view is published between windows: poll it (bounded) rather than race the event stream
    eventually(lambda: server.api("GET", "partitions/idle")["restarts"] == restarts + 1, "the restart in the API")
    assert page.problems() == []


def test_every_control_has_an_accessible_name(server: Server, page_at: Callable[..., Page]) -> None:
    """What a screen reader gets (Chromium's accessibility tree): every control, meter and image is named."""
    page = page_at(server.url)
    page.sign_in(ADMIN)
    page.wait_for("Number(document.getElementById('share-chart').dataset.points) >= 3", "the chart's first frames")
    page.call("Accessibility.enable")
    nodes = page.call("Accessibility.getFullAXTree")["nodes"]
    named = ("button", "checkbox", "radio", "textbox", "spinbutton", "image", "img", "meter", "table")
    seen: dict[str, list[str]] = {}
    for node in nodes:
        role = node.get("role", {}).get("value", "")
        if node.get("ignored") or role not in named:
            continue
        name = node.get("name", {}).get("value", "")
        assert name.strip(), f"a {role} without a name: {node}"
        seen.setdefault(role, []).append(name)
    assert "Pause busy" in seen["button"] and "Restart idle" in seen["button"], seen["button"]
    assert any(n.startswith("CPU share in major frame ") for n in seen.get("image", seen.get("img", []))), seen
    assert "CPU share of busy" in seen["meter"], seen["meter"]
    headings = page.evaluate("[...document.querySelectorAll('h1, h2')].filter(h => h.checkVisibility())"
                             ".map(h => h.tagName + ' ' + h.textContent)")  # fmt: skip
    assert headings[:2] == ["H1 SPK console", "H2 Partitions"], headings
    assert page.problems() == []


def test_narrow_screen_stacks_the_partitions(server: Server, page_at: Callable[..., Page]) -> None:
    page = page_at(server.url, width=400, height=800)
    page.sign_in(ADMIN)
    page.wait_for("Number(document.getElementById('share-chart').dataset.points) >= 3", "the chart's first frames")
    assert page.evaluate("document.documentElement.scrollWidth") <= 400, "the page scrolls sideways"
    assert page.evaluate("getComputedStyle(document.querySelector('#parts-body tr')).display") == "block"
    save("console-narrow.png", page.screenshot(full=True))
    assert page.problems() == []


def test_a_wrong_token_is_refused_on_the_sign_in_form(server: Server, page_at: Callable[..., Page]) -> None:
    page = page_at(server.url)
    page.wait_for("!document.getElementById('login').hidden", "the sign-in form")
    page.type_into("#token", "not-a-token")
    page.click("#login-form button[type=submit]")
    page.wait_for("document.getElementById('login-error').textContent", "the error under the form")
    assert page.evaluate("document.getElementById('login-error').textContent") == \
        "This token is not accepted: unknown token"  # fmt: skip
    assert page.evaluate("document.getElementById('console').hidden") is True
    assert page.evaluate("sessionStorage.length") == 0
    # the one expected failure: the server's 401 to the token, which Chromium reports and logs
    problems = page.problems()
    assert problems and all("401" in p and p.rstrip().endswith("/api/v1/whoami") for p in problems), problems


# -- the fleet view ----------------------------------------------------------------------------------
#: The second host of the fleet: two partitions that compute through their windows.
SECOND_HOST = """\
[system]
name = "second-host"
memory = "16MiB"
max_ticks = 1_000_000_000_000

[[partition]]
name = "left"
image = "bench_compute"
memory = "256KiB"
window = 10_000

[[partition]]
name = "right"
image = "bench_compute"
memory = "256KiB"
window = 30_000
"""


class RunningFleet:
    """Hosts that are real running systems; ``status()`` has the shape ``spk fleet`` hands the API.

    A host's load is the CPU share its partitions used in the last major frame, its capacity one
    CPU; its partitions are those still running. Events are the hosts' recent health events.
    """

    def __init__(self, hosts: dict[str, Controller]) -> None:
        self.hosts = hosts

    def status(self) -> dict[str, Any]:
        entries, events = [], []
        for name, controller in self.hosts.items():
            view = controller.view
            running = [p for p in view.partitions if p["state"] in ("ready", "blocked", "paused")]
            load = sum(p["qos"]["cpu_share"] for p in running)
            state = "left" if view.system["over"] else "up"
            entries.append({"name": name, "state": state, "load": round(load, 3), "capacity": 1.0,
                            "utilisation": load, "partitions": [p["name"] for p in running]})  # fmt: skip
            events += [{"event": e["event"], "host": name, "time": e["t"], "partition": e["partition"]}
                       for e in view.system["events"] if e["kind"] == "health"][-3:]  # fmt: skip
        loads = [e["load"] for e in entries]
        return {"name": "console-fleet", "round": min(c.view.system["major_frames"] for c in self.hosts.values()),
                "time": min(c.view.system["now"] for c in self.hosts.values()),
                "imbalance": max(loads) - min(loads), "hosts": entries, "events": events}  # fmt: skip


@contextlib.contextmanager
def serving(controllers: dict[str, Controller], fleet: RunningFleet | None = None) -> Iterator[str]:
    """The API and console of the first of ``controllers`` (all of them running) in this process: its URL."""
    app = create_app(next(iter(controllers.values())), tokens=_TOKENS, fleet=fleet)
    for controller in controllers.values():
        controller.start()
    try:
        with serving_app(app) as url:
            yield url
    finally:
        for controller in controllers.values():
            controller.close()


_TOKENS = Tokens([Token("ops", "admin", digest(ADMIN))])


@contextlib.contextmanager
def serving_app(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 (any free port) on a thread of this process: its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the API server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(WAIT)
        sock.close()


def booted(path: Path, text: str) -> Controller:
    """A controller of the system ``text`` describes (written to ``path``), booted, not started."""
    path.write_text(text, encoding="utf-8")
    (path.parent / "jitter.asm").write_text(JITTER, encoding="utf-8")
    config, plans = load_and_plan(path)
    return Controller.boot(config, plans, max_ticks=config.description.system.max_ticks, pace=PACE)


@pytest.fixture
def fleet_server(tmp_path: Path) -> Iterator[str]:
    """Host "one"'s API and console, created with a fleet of two running hosts."""
    hosts = {"one": booted(tmp_path / "one.toml", CONFIG), "two": booted(tmp_path / "two.toml", SECOND_HOST)}
    with serving(hosts, RunningFleet(hosts)) as url:
        yield url


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[str]:
    """A system of its own, for a test that ends its run."""
    with serving({"own": booted(tmp_path / "own.toml", CONFIG)}) as url:
        yield url


def test_the_header_says_when_the_run_has_ended(own_server: str, page_at: Callable[..., Page]) -> None:
    page = page_at(own_server)
    page.sign_in(ADMIN)
    page.wait_for("document.getElementById('live').textContent === 'live'", "the live stream")
    assert page.evaluate("document.getElementById('sys-state').textContent") == "running"
    for name in ("busy", "faulty", "idle", "jitter"):  # guest has exited by itself: nothing is left to run
        call(own_server, "POST", f"partitions/{name}/stop")
    page.wait_for("document.getElementById('sys-state').textContent === 'run ended'", "the end of the run")
    states = page.evaluate("[...document.querySelectorAll('#parts-body .state')].map(s => s.textContent)")
    assert states == ["stopped", "stopped", "stopped", "exited", "stopped"]
    assert page.problems() == []


def test_a_window_changed_from_the_console_shows_in_the_api(own_server: str, page_at: Callable[..., Page]) -> None:
    page = page_at(own_server)
    page.sign_in(ADMIN)
    page.click("tr[data-partition=idle] button[data-action=edit]")
    page.wait_for("document.getElementById('edit-dialog').open", "the edit dialog")
    fields = page.evaluate("['edit-window', 'edit-memory'].map(id => document.getElementById(id).value)")
    assert fields == ["10000", "256KiB"]
    # bad input: the server's error lands under the field it names, the dialog stays open
    page.fill("#edit-window", "0")
    page.click("#edit-apply")
    error = page.wait_for("document.getElementById('edit-window-error').textContent", "the error under the window")
    assert "window" in error and page.evaluate("document.getElementById('edit-window').ariaInvalid") == "true"
    assert page.evaluate("document.getElementById('edit-dialog').open") is True
    save("console-edit-error.png", page.screenshot())
    assert call(own_server, "GET", "partitions/idle")["window"] == 10_000
    def refused(problem: str) -> bool:  # Chromium reports and logs the server's 4xx answer to the PATCH
        return bool(re.search(r"\b4\d\d\b", problem)) and problem.rstrip().endswith("/api/v1/partitions/idle")

    assert any(refused(p) for p in page.problems()), page.problems()
    page.fill("#edit-window", "20000")
    page.click("#edit-apply")
    page.wait_for("!document.getElementById('edit-dialog').open", "the dialog closed")
    page.wait_for("document.querySelector('tr[data-partition=idle] td:nth-child(3)').textContent === '20,000'")
    eventually(lambda: call(own_server, "GET", "partitions/idle")["window"] == 20_000, "the new window in the API")
    # the major frame grew to 90,000 ticks: busy's 30,000 are a third of it now
    page.wait_for("document.querySelector('tr[data-partition=busy] .meter span').textContent === '33.3% of 33.3%'")
    page.wait_for("document.getElementById('sys-frame').textContent.endsWith(' · 90,000 ticks')", "the new major frame")
    page.wait_for("[...document.querySelectorAll('#events li')].some(li => li.textContent.includes("
                  "'idle set by api:ops: done'))", "the change in the feed")  # fmt: skip
    assert all(refused(p) for p in page.problems()), page.problems()  # and nothing else


def test_fleet_view_shows_hosts_with_their_load(fleet_server: str, page_at: Callable[..., Page]) -> None:
    page = page_at(fleet_server)
    page.sign_in(ADMIN)
    page.wait_for("!document.getElementById('fleet').hidden", "the fleet view")
    page.wait_for("document.querySelector('[data-host=two] .meter span')?.textContent === '1 / 1'",
                  "host two's load: both its partitions compute through their windows")  # fmt: skip
    hosts = page.evaluate(
        "[...document.querySelectorAll('#hosts > li')].map(h => [h.dataset.host, h.querySelector('.state').textContent,"
        " [...h.querySelectorAll('.chips li')].map(c => c.textContent)])"
    )
    assert hosts[0][:2] == ["one", "up"] and {"busy", "faulty", "idle"} <= set(hosts[0][2]), hosts
    assert hosts[1] == ["two", "up", ["left", "right"]], hosts
    assert page.evaluate("document.getElementById('fleet-round').textContent").startswith("console-fleet · round ")
    save("console-fleet.png", page.screenshot(full=True))
    assert page.problems() == []


# -- a served fleet (spk fleet --serve) -----------------------------------------------------------------
#: Rounds per second of the served fleet: its 30 rounds last 6 s of wall time, a few of them are watched.
FLEET_PACE = 5


@pytest.fixture
def watched_fleet() -> Iterator[tuple[str, WatchedFleet]]:
    """What ``spk fleet examples/fleet.toml --in-process --serve`` serves, in this process, its run not started."""
    watched = WatchedFleet(load_fleet(ROOT / "examples" / "fleet.toml"), LocalTransport(), FLEET_PACE)
    try:
        with serving_app(create_fleet_app(watched, tokens=_TOKENS)) as url:
            yield url, watched
    finally:
        watched.close()


def test_a_served_fleet_is_the_page_and_moves(watched_fleet: tuple[str, WatchedFleet],
                                              page_at: Callable[..., Page]) -> None:  # fmt: skip
    url, watched = watched_fleet
    page = page_at(url)
    page.sign_in(ADMIN)
    page.wait_for("document.querySelectorAll('#hosts > li').length === 4", "the four hosts, not joined yet")
    # no system: its cards are not shown, the fleet is the page
    shown = page.evaluate("['parts-title', 'chart-title', 'events-title', 'fleet-title']"
                          ".map(id => document.getElementById(id).offsetParent !== null)")  # fmt: skip
    assert shown == [False, False, False, True]
    assert page.evaluate("document.getElementById('sys-name-label').textContent") == "Fleet"
    watched.start()
    done = "Number(document.getElementById('sys-frame').textContent.split(' of ')[0])"
    first = page.wait_for(f"{done} >= 1 && {done}", "the first round in the header")
    assert page.evaluate("document.getElementById('sys-frame').textContent").endswith(" of 30")
    before = page.screenshot()
    later = page.wait_for(f"({done} >= {first + 3} || document.getElementById('sys-state').textContent === "
                          f"'run ended') && {done}", "three rounds later")  # fmt: skip
    after = page.screenshot()
    assert later >= first + 3, (first, later)
    box = page.box("#fleet")
    clip = (box["x"], box["y"], min(WIDTH, box["x"] + box["width"]), min(HEIGHT, box["y"] + box["height"]))
    assert changed_pixels(before, after, clip) > 0, "the fleet view did not change in three rounds"
    save("console-fleet-served.png", after)
    hosts = page.evaluate(
        "[...document.querySelectorAll('#hosts > li')].map(h => [h.dataset.host, h.querySelector('.state').textContent,"
        " h.querySelector('[role=meter]').getAttribute('aria-valuetext'),"
        " [...h.querySelectorAll('.chips li')].map(c => c.textContent)])"
    )
    assert [h[0] for h in hosts] == ["h0", "h1", "h2", "h3"], hosts
    for name, state, load, partitions in hosts:
        if name == "h2" and state == "failed":  # it fails at round 14: the run may be that far by now
            assert (load, partitions) == ("0", []), hosts
        else:
            assert state == "up" and load.endswith(" / 8"), hosts
    assert sum(len(h[3]) for h in hosts) >= 1, hosts  # partitions in flight between hosts are on none
    assert page.evaluate("document.getElementById('fleet-round').textContent").startswith("demo · round ")
    assert page.evaluate("document.getElementById('sys-pace').textContent") == f"{FLEET_PACE} rounds/s"
    assert page.problems() == []
    assert not any("/api/v1/system" in r or "/api/v1/events" in r for r in page.requests())
