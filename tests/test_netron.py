"""Netron shows the exported AQuant graph (issue 8): ``aquant-onnx inspect --netron --no-browser``
serves an AQuant ResNet-20, headless Chromium renders it, and the drawn graph has one
BorderRound node per quantized-input layer, named ``<original layer name>.border_round``.

Needs Chromium (``apt-get install chromium``; ``.ci/run`` installs it) and the netron package;
skipped without either. The rendering helpers are the ones that make the docs screenshot
(``docs/scripts/netron_view.py``).
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from conftest import REPO_ROOT

pytest.importorskip("netron", reason="needs the netron package: pip install netron")


def _load_netron_view():
    spec = importlib.util.spec_from_file_location("netron_view", REPO_ROOT / "docs" / "scripts" / "netron_view.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


netron_view = _load_netron_view()
CHROMIUM = netron_view.find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium: apt-get install chromium (or set AQUANT_CHROMIUM)"
)


@pytest.fixture(scope="module")
def aquant_resnet20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return netron_view.export_demo_model(tmp_path_factory.mktemp("netron") / "resnet20_aquant.onnx")


def _expected_border_round_names() -> set[str]:
    """Every Conv/Gemm of the float model whose input is quantized (all but the one reading the
    float model input), under its own name plus the exporter's suffix."""
    graph = onnx.load(REPO_ROOT / "models" / "resnet20_cifar10.onnx").graph
    model_inputs = {i.name for i in graph.input}
    return {f"{n.name}.border_round" for n in graph.node
            if n.op_type in ("Conv", "Gemm") and n.input[0] not in model_inputs}


@needs_chromium
@pytest.mark.slow  # ~10 s of calibration on 2 CPU cores, then ~3 s in the browser
def test_netron_draws_named_border_round_nodes(aquant_resnet20: Path) -> None:
    expected = _expected_border_round_names()
    exported = {n.name for n in onnx.load(aquant_resnet20).graph.node if n.op_type == "BorderRound"}
    assert exported == expected and len(expected) == 19  # 18 block convs + the classifier

    with netron_view.netron_cli_server(aquant_resnet20) as url, netron_view.Chromium(CHROMIUM) as browser:
        browser.open(url)
        drawn = netron_view.wait_for_graph(browser)
        png, selected = netron_view.screenshot_border_round(browser)

    drawn_border_round = [node.name for node in drawn if node.type == "BorderRound"]
    assert sorted(drawn_border_round) == sorted(expected)
    assert selected == "/layer1/layer1.0/conv1/Conv.border_round"  # the sidebar shows the first one by name
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_netron_port_in_use_is_one_error_line() -> None:
    with socket.socket() as taken:
        taken.bind(("localhost", 0))
        taken.listen()
        port = taken.getsockname()[1]
        model = REPO_ROOT / "models" / "resnet20_cifar10.onnx"
        result = subprocess.run(
            [sys.executable, "-m", "aquant_onnx_cli.main", "inspect", str(model), "--netron", "--no-browser",
             "--netron-port", str(port)],
            capture_output=True, text=True, timeout=120, check=False,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: Netron cannot listen on port {port} (Address already in use); choose another --netron-port."
    )
