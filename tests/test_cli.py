"""The ``aquant-onnx`` command: bad input gives one ``error:`` line, exit 1, no traceback, no output file;
--json, --dry-run, --config and the help pages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from aquant_onnx.config import QuantConfig
from aquant_onnx_cli.main import main as cli_main
from conftest import REPO_ROOT
from test_recon import tiny_resnet

MODEL = REPO_ROOT / "models" / "resnet20_cifar10.onnx"
CALIB = REPO_ROOT / "tests" / "data" / "cifar10_calib"
TEST = REPO_ROOT / "tests" / "data" / "cifar10_test"


def run_cli(*args: str | Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "cli")])}
    return subprocess.run(
        [sys.executable, "-m", "aquant_onnx_cli.main", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )


def assert_clean_error(result: subprocess.CompletedProcess, pattern: str, output: Path | None = None) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert pattern.lower() in lines[0].lower(), lines[0]
    if output is not None:
        assert not output.exists()
        assert not list(output.parent.glob(f".{output.name}.*"))  # no temp file left behind


def _unsupported_op_model(path: Path) -> Path:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Det", ["c"], ["y"], name="determinant"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        initializer=[numpy_helper.from_array(np.ones((1, 3, 3, 3), np.float32), "w")],
    )
    onnx.save(helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _images(folder: Path, count: int, junk: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    for i in range(junk):
        (folder / f"junk{i}.jpg").write_bytes(b"not an image")
    return folder


def test_missing_model(tmp_path):
    out = tmp_path / "q.onnx"
    assert_clean_error(run_cli("quantize", tmp_path / "none.onnx", "--calib", CALIB, "-o", out), "not found", out)


def test_corrupt_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(MODEL.read_bytes()[:5000])
    out = tmp_path / "q.onnx"
    assert_clean_error(run_cli("quantize", bad, "--calib", CALIB, "-o", out), "bad.onnx", out)


def test_unsupported_op(tmp_path):
    out = tmp_path / "q.onnx"
    result = run_cli("quantize", _unsupported_op_model(tmp_path / "det.onnx"), "--calib", CALIB, "-o", out)
    assert_clean_error(result, "'Det' at node 'determinant'", out)


def test_empty_calibration_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "q.onnx"
    assert_clean_error(run_cli("quantize", MODEL, "--calib", tmp_path / "empty", "-o", out), "empty", out)


def test_no_readable_images(tmp_path):
    folder = _images(tmp_path / "junk", 0, junk=3)
    out = tmp_path / "q.onnx"
    assert_clean_error(run_cli("quantize", MODEL, "--calib", folder, "-o", out), "readable", out)


@pytest.mark.parametrize(("flag", "value"), [("--w-bits", "9"), ("--a-bits", "1"), ("--last-layer-a-bits", "12")])
def test_bits_out_of_range(tmp_path, flag, value):
    out = tmp_path / "q.onnx"
    assert_clean_error(run_cli("quantize", MODEL, "--calib", CALIB, "-o", out, flag, value), flag, out)


def test_output_folder_missing(tmp_path):
    out = tmp_path / "missing" / "q.onnx"
    assert_clean_error(run_cli("quantize", MODEL, "--calib", CALIB, "-o", out), "does not exist", out)


def test_wrong_input_size(tmp_path):
    out = tmp_path / "q.onnx"
    result = run_cli("quantize", MODEL, "--calib", CALIB, "-o", out, "--size", "64")
    assert_clean_error(result, "3x32x32", out)


def test_eval_missing_data(tmp_path):
    assert_clean_error(run_cli("eval", MODEL, "--data", tmp_path / "nothing"), "does not exist")


def test_debug_shows_traceback(tmp_path):
    result = run_cli("--debug", "quantize", tmp_path / "none.onnx", "--calib", CALIB, "-o", tmp_path / "q.onnx")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_unreadable_files_skipped_with_count_and_quantize_eval_inspect(tmp_path):
    """Mixed folder: junk files are skipped with one warning; the run succeeds end to end."""
    folder = _images(tmp_path / "mixed", 12, junk=2)
    out = tmp_path / "q.onnx"
    result = run_cli("quantize", MODEL, "--calib", folder, "-o", out, "--w-bits", "8", "--a-bits", "8")
    assert result.returncode == 0, result.stderr
    assert "skipped 2 of 14" in result.stderr
    assert out.is_file() and onnx.load(str(out)).graph.node
    evaluated = run_cli("eval", out, "--data", TEST, "--limit", "100", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert '"count": 100' in evaluated.stdout
    inspected = run_cli("inspect", out)
    assert inspected.returncode == 0 and "20 layers" in inspected.stdout


def test_help_lists_every_quantize_flag():
    result = run_cli("quantize", "--help")
    assert result.returncode == 0
    for flag in ("--calib", "--method", "--w-bits", "--a-bits", "--num-calib", "--seed", "--iters", "--border",
                 "--checkpoint-dir", "--preset", "--border-op"):
        assert flag in result.stdout


# ---------------------------------------------------------------------------- --json, --dry-run, --config, help
# In-process through click's test runner: no interpreter start-up per call.


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli_main, [str(arg) for arg in args])


def assert_one_line_error(result: Result, pattern: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], result.stderr


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(tiny_resnet(), str(path))
    return path


def dry_run(model: Path, *args: str | Path) -> dict:
    result = invoke("quantize", model, "--dry-run", "--json", "--time-steps", "0", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def config_json(model: Path, *args: str | Path) -> str:
    return QuantConfig.from_dict(dry_run(model, *args)["config"]).to_json()


FLAGS = ["--method", "aquant", "--w-bits", "3", "--first-layer-w-bits", "same", "--last-layer-a-bits", "6",
         "--iters", "123", "--batch-size", "8", "--lambda", "0.02", "--border", "linear", "--border-granularity",
         "channel", "--no-border-fusion", "--border-op", "onnx", "--num-calib", "64", "--quantize-input",
         "--weight-symmetric", "--engine", "compiled", "--seed", "7"]  # fmt: skip
FLAT_TOML = """
method = "aquant"
w-bits = 3
first_layer_w_bits = "same"
last-layer-a-bits = 6
iters = 123
batch-size = 8
lambda = 0.02
border = "linear"
border-granularity = "channel"
no-border-fusion = true
border_op = "onnx"
num-calib = 64
quantize-input = true
weight-symmetric = true
engine = "compiled"
seed = 7
"""
NESTED_TOML = """
method = "aquant"
w_bits = 3
first_layer_w_bits = "same"
last_layer_a_bits = 6
quantize_model_input = true
weight_symmetric = true
num_calib = 64
seed = 7
[recon]
iters = 123
batch_size = 8
weight_lambda = 0.02
engine = "compiled"
[border]
shape = "linear"
granularity = "channel"
fusion = false
[export]
border_op = "onnx"
"""


@pytest.mark.parametrize("text", [FLAT_TOML, NESTED_TOML], ids=["flag-names", "nested-quantconfig"])
def test_config_file_equals_flags(tiny_path, tmp_path, text):
    config_file = tmp_path / "options.toml"
    config_file.write_text(text)
    from_flags = config_json(tiny_path, *FLAGS)
    assert json.loads(from_flags)["first_layer_w_bits"] is None  # 'same'
    assert config_json(tiny_path, "--config", config_file) == from_flags


def test_yaml_config_round_trips_quantconfig_json(tiny_path, tmp_path):
    yaml = pytest.importorskip("yaml", reason="YAML config files need PyYAML (aquant-onnx[yaml])")
    from_flags = config_json(tiny_path, *FLAGS)
    config_file = tmp_path / "options.yaml"
    config_file.write_text(yaml.safe_dump(json.loads(from_flags)))  # every field, nulls and flag-less ones included
    assert config_json(tiny_path, "--config", config_file) == from_flags


def test_command_line_overrides_config_file(tiny_path, tmp_path):
    config_file = tmp_path / "options.toml"
    config_file.write_text(FLAT_TOML + "[recon]\nwarmup = 0.3\n")
    config = dry_run(tiny_path, "--config", config_file, "--w-bits", "5", "--iters", "9")["config"]
    assert (config["w_bits"], config["recon"]["iters"]) == (5, 9)  # the flags
    assert (config["method"], config["recon"]["batch_size"], config["recon"]["warmup"]) == ("aquant", 8, 0.3)  # the file


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("syntax.toml", "w-bits = ", "is not valid TOML"),
        ("unknown.toml", "bits = 4", "unknown option 'bits'"),
        ("nested.toml", "[recon]\niterations = 5", "unknown key 'recon.iterations'"),
        ("type.toml", 'w-bits = "many"', "option 'w_bits' in config file"),
        ("range.toml", "w-bits = 12", "--w-bits must be an integer from 2 to 8"),
        ("twice.toml", "iters = 3\n[recon]\niters = 4", "'iters' is given twice"),
        ("options.json", "{}", "must end in .toml, .yaml or .yml"),
        ("missing.toml", None, "cannot read config file"),
    ],
)
def test_bad_config_file_is_one_line_error(tiny_path, tmp_path, name, text, message):
    config_file = tmp_path / name
    if text is not None:
        config_file.write_text(text)
    assert_one_line_error(invoke("quantize", tiny_path, "--dry-run", "--config", config_file), message)


def test_calib_and_output_required_without_dry_run(tiny_path):
    result = invoke("quantize", tiny_path)
    assert result.exit_code == 2 and "Missing option '--calib'" in result.stderr


def test_dry_run_plan_on_stdout(tiny_path):
    plan = dry_run(tiny_path, "--method", "aquant", "--num-calib", "64")
    assert [unit["layers"] for unit in plan["units"]] == [["c0"], ["c1", "c2"], ["fc"]]
    assert plan["border_params"] == 456 and plan["samples"] == 64
    text = invoke("quantize", tiny_path, "--method", "aquant", "--dry-run", "--time-steps", "0")
    assert text.exit_code == 0 and "3 units" in text.stdout and "activation cache: peak" in text.stdout


def test_quantize_json_then_inspect_json_shows_borders(tiny_path, tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).normal(size=(16, 3, 8, 8)).astype(np.float32))
    output = tmp_path / "tiny.aquant.onnx"
    result = invoke("quantize", tiny_path, "--calib", calib, "-o", output, "--method", "aquant", "--iters", "2",
                    "--batch-size", "8", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout holds the JSON document only
    assert summary["output"] == str(output) and summary["config"]["method"] == "aquant" and summary["layers"] == 4
    assert [row["layers"] for row in summary["blocks"]] == [["c0"], ["c1", "c2"], ["fc"]]
    assert all(row["iters"] == 2 and row["loss_end"] >= 0 and row["seconds"] > 0 for row in summary["blocks"])
    report = json.loads(invoke("inspect", output, "--json").stdout)
    borders = {row["name"]: row["border"] for row in report["layers"]}
    assert borders["c0"] is None and "im2col" in borders["c1"] and "im2col" in borders["c2"] and borders["fc"]
    assert report["border_params"] > 0
    blocks = json.loads(invoke("inspect", tiny_path, "--blocks", "--json").stdout)
    assert [block["layer_names"] for block in blocks] == [["c0"], ["c1", "c2"], ["fc"]]


def test_int4_weights_flag_packs_four_bit_weights(tiny_path, tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).normal(size=(8, 3, 8, 8)).astype(np.float32))
    outputs = {}
    for flag in ("--no-int4-weights", "--int4-weights"):
        outputs[flag] = tmp_path / f"tiny{flag}.onnx"
        result = invoke("quantize", tiny_path, "--calib", calib, "-o", outputs[flag], "--method", "rtn", flag)
        assert result.exit_code == 0, result.output
    packed = onnx.load(str(outputs["--int4-weights"]))
    four_bit = sorted(t.name for t in packed.graph.initializer if t.data_type == TensorProto.INT4)
    assert four_bit == ["c1.weight_quantized.int4", "c2.weight_quantized.int4"]  # c0 and fc keep 8 bits
    assert next(o.version for o in packed.opset_import if o.domain == "") == 21
    reports = [json.loads(invoke("inspect", outputs[flag], "--json").stdout) for flag in outputs]
    assert reports[0]["layers"] == reports[1]["layers"]
    assert_one_line_error(invoke("quantize", tiny_path, "--calib", calib, "-o", tmp_path / "w8.onnx", "--w-bits", "8",
                                 "--int4-weights"), "--int4-weights")


def test_ops_path_json():
    result = invoke("ops-path", "--json")
    if result.exit_code == 1:
        pytest.skip(f"the op library is not built: {result.stderr.strip()}")
    found = json.loads(result.stdout)
    assert Path(found["path"]).is_file() and found["providers"][0] == "CPUExecutionProvider"


def _commands(command: click.Command) -> list[click.Command]:
    return [command, *(sub for child in getattr(command, "commands", {}).values() for sub in _commands(child))]


def test_every_option_explains_itself():
    """Each option of each command has a help sentence; choices and non-empty defaults are shown."""
    for command in _commands(cli_main):
        context = click.Context(command, info_name=command.name)
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            names, text = param.get_help_record(context)
            assert param.help and len(param.help.split()) >= 3, f"{command.name} {names}: no help"
            if isinstance(param.type, click.Choice):
                assert all(choice in names for choice in param.type.choices), names
            default = param.to_info_dict()["default"]  # None when unset
            if default not in (None, False) and not (param.is_flag or param.count):
                assert "[default: " in text, f"{command.name} {names}: default {default!r} not shown"
        help_page = invoke(*([command.name] if command is not cli_main else []), "--help")
        assert help_page.exit_code == 0 and "130  interrupted" in help_page.stdout, command.name
