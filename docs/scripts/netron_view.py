"""Render a model served by Netron in headless Chromium and read back what the page shows.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages ending in NUL on file descriptors 3 and 4), so nothing beyond the Python standard
library and a Chromium binary is needed. Netron draws the graph client-side after asking for
cookie consent; the consent cookie is set before the page loads and the page is polled until
the SVG graph is there.

As a script it writes the docs screenshot of an AQuant ResNet-20 (two calibration iterations
per block: the graph, not the accuracy, is what the picture is about)::

    python docs/scripts/netron_view.py            # -> docs/netron_resnet20_aquant.png
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import queue
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
REPO_ROOT = Path(__file__).resolve().parents[2]

# Every drawn node: its displayed type and its name (Netron puts the name in the SVG <title>);
# none until the page shows the laid-out graph (body class 'default').
_NODES_SCRIPT = """
!document.body?.classList.contains('default') ? [] :
Array.from(document.querySelectorAll('#canvas g.node-item-type')).map(item => ({
    type: item.querySelector('text').textContent,
    name: item.querySelector('title') ? item.querySelector('title').textContent : ''
}))
"""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: ``$AQUANT_CHROMIUM`` or the first one on PATH."""
    override = os.environ.get("AQUANT_CHROMIUM")
    if override:
        return shutil.which(override)
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


@dataclass(frozen=True)
class DrawnNode:
    type: str
    name: str


class Chromium:
    """Headless Chromium with one page, driven over the DevTools pipe. Use as a context manager."""

    def __init__(self, binary: str, width: int = 1600, height: int = 1000, pixel_ratio: float = 1.0) -> None:
        # Helpers that outlive the kill (crashpad) may still touch the profile: never fail on cleanup.
        self._profile = tempfile.TemporaryDirectory(prefix="aquant-chromium-", ignore_cleanup_errors=True)
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # The protocol wants exactly fds 3 (commands in) and 4 (replies out). Copies above 9 cannot
        # be clobbered by those dup2s, and posix_spawn runs no Python code in the child.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser_read, from_browser_write)]
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}",
                "about:blank"]
        quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
        pipes = [(os.POSIX_SPAWN_DUP2, ends[0], 3), (os.POSIX_SPAWN_DUP2, ends[1], 4)]
        # Its own process group, so close() stops the renderer and GPU helpers along with the browser.
        self._pid = os.posix_spawn(binary, args, os.environ, file_actions=[*quiet, *pipes], setpgroup=0)
        for fd in (to_browser_read, from_browser_write, *ends):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        try:
            targets = self.call("Target.getTargets")["targetInfos"]
            page = next(t["targetId"] for t in targets if t["type"] == "page")
            self._session = self.call("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=pixel_ratio,
                      mobile=False, session=True)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the browser and its helper processes and remove its profile."""
        os.killpg(self._pid, signal.SIGKILL)
        os.waitpid(self._pid, 0)
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._profile.cleanup()

    def call(self, method: str, session: bool = False, timeout: float = 30.0, **params: Any) -> dict:
        """Send one protocol command (to the page when ``session``) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._from_browser], [], [], remaining)[0]:
                raise TimeoutError("Chromium did not answer on the DevTools pipe")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression: str) -> Any:
        """Value of a JavaScript expression in the page (awaited, returned by value)."""
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """Navigate to ``url`` with Netron's consent cookie already set (no consent dialog)."""
        self.call("Network.setCookie", session=True, name="consent", value="1", url=url)
        self.call("Page.navigate", session=True, url=url)

    def screenshot(self, clip: dict[str, float] | None = None) -> bytes:
        """PNG of the viewport, or of ``clip`` = {x, y, width, height} in CSS pixels."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": False}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", session=True, **params)["data"])


def wait_for_graph(browser: Chromium, timeout: float = 60.0) -> list[DrawnNode]:
    """Poll until Netron has drawn the graph; the drawn nodes' types and names."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = browser.evaluate(_NODES_SCRIPT) or []
        if nodes:
            return [DrawnNode(n["type"], n["name"]) for n in nodes]
        time.sleep(0.25)
    page = "document.body ? `${document.body.className}: ${document.body.innerText.slice(0, 200)}` : ''"
    body = browser.evaluate(page)
    raise TimeoutError(f"Netron drew no graph within {timeout:.0f} s (page: {body!r})")


@contextlib.contextmanager
def netron_cli_server(model: Path, timeout: float = 60.0) -> Iterator[str]:
    """Run ``aquant-onnx inspect MODEL --netron --no-browser`` and yield the URL it prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aquant_onnx_cli.main", "inspect", str(model), "--netron", "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # readline blocks: read on a thread so the wait below can time out
        for line in process.stdout:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise TimeoutError(f"aquant-onnx inspect --netron printed no URL within {timeout:.0f} s") from None
            if line is None:
                raise RuntimeError(f"aquant-onnx inspect --netron exited {process.wait()}:\n{''.join(output)}")
            output.append(line)
            url = re.search(r"Netron is serving .* at (http://\S+?);", line)
            if url:
                break
        yield url.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)


def export_demo_model(path: Path, iters: int = 2) -> Path:
    """The shipped ResNet-20 quantized with AQuant (W4A4, ``iters`` per block, 8 calibration
    images): every 3x3 conv gets an im2col ``BorderRound`` named ``<conv name>.border_round``."""
    import onnx
    import torch

    import aquant_onnx

    torch.set_num_threads(1)
    model = aquant_onnx.quantize(
        str(REPO_ROOT / "models" / "resnet20_cifar10.onnx"), str(REPO_ROOT / "tests" / "data" / "cifar10_calib"),
        method="aquant", w_bits=4, a_bits=4, iters=iters, num_calib=8, batch_size=4, device="cpu",
    )
    onnx.save(model, path)
    return path


_SELECT_FIRST_BORDER_ROUND = """(() => {
    const item = Array.from(document.querySelectorAll('#canvas g.node-item-type'))
        .find(i => i.querySelector('text').textContent === 'BorderRound');
    item.dispatchEvent(new MouseEvent('click', {bubbles: true}));
    return item.querySelector('title').textContent;
})()"""

# The sidebar shows node NAME and has finished sliding in (its right edge is the window's).
_SIDEBAR_SETTLED = """(() => {
    const sidebar = document.getElementById('sidebar');
    return sidebar.innerText.includes(NAME)
        && Math.abs(sidebar.getBoundingClientRect().right - window.innerWidth) < 0.5;
})()"""

# Left edge of the nodes inside the viewport, to crop the empty margin away.
_VISIBLE_GRAPH_LEFT = """Math.min(...Array.from(document.querySelectorAll('#canvas g.node'))
    .map(n => n.getBoundingClientRect())
    .filter(b => b.bottom > 0 && b.top < window.innerHeight && b.right > 0 && b.left < window.innerWidth)
    .map(b => b.left))"""


def screenshot_border_round(browser: Chromium) -> tuple[bytes, str]:
    """PNG of the top of the graph with the first BorderRound node selected, so the sidebar
    shows its name, domain and attributes; and that node's name."""
    name = browser.evaluate(_SELECT_FIRST_BORDER_ROUND)
    deadline = time.monotonic() + 10
    while not browser.evaluate(_SIDEBAR_SETTLED.replace("NAME", json.dumps(name))):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Netron's sidebar did not show node {name!r}")
        time.sleep(0.1)
    left = max(browser.evaluate(_VISIBLE_GRAPH_LEFT) - 16, 0)
    width, height = browser.evaluate("[window.innerWidth, window.innerHeight]")
    return browser.screenshot({"x": left, "y": 0, "width": width - left, "height": height}), name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=REPO_ROOT / "docs" / "netron_resnet20_aquant.png")
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("needs Chromium: apt-get install chromium (or set AQUANT_CHROMIUM)")
    with tempfile.TemporaryDirectory() as folder:
        model = export_demo_model(Path(folder) / "resnet20_aquant.onnx")
        with netron_cli_server(model) as url, Chromium(chromium, 1500, 1000, pixel_ratio=1.5) as browser:
            browser.open(url)
            nodes = wait_for_graph(browser)
            png, name = screenshot_border_round(browser)
    args.output.write_bytes(png)
    count = sum(node.type == "BorderRound" for node in nodes)
    print(f"wrote {args.output}: {count} BorderRound nodes drawn, selected {name}")


if __name__ == "__main__":
    main()
