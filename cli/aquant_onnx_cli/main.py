"""The ``aquant-onnx`` command. The only place that prints, exits or configures logging.

Exit codes (``EXIT_CODES``, shown under every ``--help``): 0 success; 1 a problem with the
input, the options or a --config file (one ``error:`` line on stderr); 2 command-line usage
error; 130 interrupted (Ctrl-C). ``--debug`` shows tracebacks. Tables and results go to
stdout, logs and progress bars to stderr, so ``--json`` output can be piped to ``jq``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from aquant_onnx.config import QuantConfig

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

logger = logging.getLogger("aquant_onnx")


class _CountingHandler(logging.Handler):
    """Print warnings as one ``warning:`` line each."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"{record.levelname.lower()}: {record.getMessage()}", err=True)


def _setup_logging(verbose: int) -> None:
    root = logging.getLogger("aquant_onnx")
    root.handlers[:] = [_CountingHandler()]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def _progress_factory(enabled: bool) -> Callable[..., Any]:
    from tqdm import tqdm

    def factory(total: int | None = None, desc: str = "", leave: bool = True) -> Any:
        return tqdm(total=total, desc=desc, leave=leave, disable=not enabled, file=sys.stderr, dynamic_ncols=True)

    return factory


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn AquantError into ``error: <message>`` + exit 1 (traceback only with --debug)."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from aquant_onnx.errors import AquantError

        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return command(*args, **kwargs)
        except AquantError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


EXIT_CODES = """\b
Exit codes:
  0    success
  1    a problem with the input, the options or a --config file (one "error:" line on stderr)
  2    command-line usage error (unknown flag, missing argument or option)
  130  interrupted (Ctrl-C)"""


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, epilog=EXIT_CODES)
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", count=True, help="More log output on stderr: -v info, -vv debug [default: warnings only].")
@click.version_option(package_name="aquant-onnx")
def main(debug: bool, verbose: int) -> None:
    """Post-training quantization of ONNX models (RTN, AdaRound, BRECQ, QDrop, FlexRound, AQuant).

    \b
    aquant-onnx quantize model.onnx --calib images/ -o model.aquant.onnx
    aquant-onnx quantize model.onnx --method aquant --dry-run
    aquant-onnx eval model.aquant.onnx --data val/
    aquant-onnx inspect model.aquant.onnx

    Tables go to stdout, logs and progress bars to stderr; --json on a command prints
    one JSON document on stdout instead of its table. See docs/cli.md.
    """
    _setup_logging(verbose)


def _bits_or_same(value: str) -> int | None:
    """Parse an end-layer bit override: an integer, or 'same' for the model-wide setting."""
    if value.lower() == "same":
        return None
    try:
        return int(value)
    except ValueError:
        from aquant_onnx.errors import ConfigError

        raise ConfigError(f"expected an integer number of bits or 'same', got {value!r}.") from None


def _floats(value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        from aquant_onnx.errors import ConfigError

        raise ConfigError(f"expected comma-separated numbers such as 0.5,0.5,0.5, got {value!r}.") from None


def _check_output_folder(output: Path) -> None:
    from aquant_onnx.export.model import check_output_path

    check_output_path(output)  # before calibrating: an unwritable -o fails now, not after the run


def _json_safe(value: Any) -> Any:
    """NaN/inf (a loss that was never computed) become null: strict JSON for jq."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(_json_safe(data)))


_END_LAYER_BITS = ("first_layer_w_bits", "last_layer_w_bits", "last_layer_a_bits")
# quantize's parameters that are not QuantConfig options.
_RUN_PARAMS = frozenset(
    {"model", "calib", "output", "preset", "size", "resize", "mean", "std", "progress", "config_file", "dry_run",
     "time_steps", "as_json"}
)  # fmt: skip
# Config-file names (QuantConfig fields) of flags whose parameter is named otherwise.
_CONFIG_ALIASES = {"quantize_model_input": "quantize_input"}


def _file_keys(command: click.Command) -> dict[str, tuple[click.Option, bool]]:
    """--config key -> (option, whether true means the flag's opposite): parameter names and long
    flag names with underscores, e.g. ``w_bits``, ``lambda``/``weight_lambda``, ``no_border_fusion``."""
    keys: dict[str, tuple[click.Option, bool]] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "config_file":
            continue
        keys[param.name] = (param, False)
        for flag in param.opts:
            if flag.startswith("--"):
                keys[flag[2:].replace("-", "_")] = (param, param.is_flag and param.flag_value is False)
        for flag in param.secondary_opts:
            keys[flag[2:].replace("-", "_")] = (param, True)
    return keys


def _apply_config_file(click_ctx: click.Context, path: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Set the ``params`` not given on the command line from the --config file. Returns the
    file's QuantConfig options that have no flag (``warmup``, ``lr_border``, ...)."""
    import dataclasses

    from aquant_onnx.config import ReconConfig
    from aquant_onnx.config_file import read_config_file
    from aquant_onnx.errors import ConfigError

    keys = _file_keys(click_ctx.command)
    flagless = {field.name for field in dataclasses.fields(ReconConfig)} - keys.keys()
    extra = {}
    for key, value in read_config_file(path).items():
        key = _CONFIG_ALIASES.get(key, key)
        if key in flagless:
            extra[key] = value
            continue
        if key not in keys:
            raise ConfigError(
                f"unknown option '{key}' in config file {path}; keys are the flags of aquant-onnx quantize --help "
                f"or QuantConfig fields ({', '.join(sorted(flagless))} have no flag)."
            )
        param, opposite = keys[key]
        if click_ctx.get_parameter_source(param.name) is click.core.ParameterSource.COMMANDLINE:
            continue  # the command line wins
        if value is None and param.name in _END_LAYER_BITS:
            value = "same"  # QuantConfig's null end-layer bits
        elif isinstance(value, list):
            value = ",".join(map(str, value))  # --mean/--std
        try:
            value = param.type_cast_value(click_ctx, value)
        except click.BadParameter as error:
            raise ConfigError(f"option '{key}' in config file {path}: {error.message}") from None
        params[param.name] = (not value) if opposite else value
    return extra


def _quant_config(params: dict[str, Any], extra: dict[str, Any]) -> QuantConfig:
    """The QuantConfig of quantize's flags (``None``: not given, the default stays) and ``extra`` options."""
    import dataclasses

    from aquant_onnx.config import QuantConfig, with_options

    not_options = _RUN_PARAMS.union(_END_LAYER_BITS)
    options = {name: value for name, value in params.items() if name not in not_options}
    options["quantize_model_input"] = options.pop("quantize_input")
    end_layer_bits = {name: _bits_or_same(params[name]) for name in _END_LAYER_BITS}  # None ("same") is a value here
    return dataclasses.replace(with_options(QuantConfig(), **options, **extra), **end_layer_bits)


@main.command(epilog=EXIT_CODES)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--calib", type=click.Path(path_type=Path),
              help="Calibration data: a folder of images (searched recursively) or a .npz keyed by input name. "
                   "Required unless --dry-run.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Where to write the quantized ONNX model. Required unless --dry-run.")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="TOML or YAML file of options: flag names as keys (w-bits = 4) and/or the nested QuantConfig "
                   "form ([recon] iters = 2000); flags on the command line win. See docs/cli.md.")
@click.option("--method", default="rtn", show_default=True,
              type=click.Choice(["rtn", "adaround", "brecq", "qdrop", "flexround", "aquant"]),
              help="Calibration method: rtn rounds to nearest; the others learn rounding block by block "
                   "(adaround layer by layer); aquant adds border functions.")
@click.option("--w-bits", type=int, default=4, show_default=True, help="Weight bits (2-8).")
@click.option("--a-bits", type=int, default=4, show_default=True, help="Activation bits (2-8).")
@click.option("--weight-symmetric", is_flag=True, help="Symmetric weight grids (zero point 0) instead of asymmetric.")
@click.option("--first-layer-w-bits", default="8", show_default=True, metavar="INTEGER|same",
              help="Weight bits of the first layer, or 'same' (the --w-bits value).")
@click.option("--last-layer-w-bits", default="8", show_default=True, metavar="INTEGER|same",
              help="Weight bits of the last layer, or 'same' (the --w-bits value).")
@click.option("--last-layer-a-bits", default="8", show_default=True, metavar="INTEGER|same",
              help="Input bits of the last layer, or 'same' (the --a-bits value).")
@click.option("--quantize-input", is_flag=True, help="Also quantize the model input (left in float by default).")
@click.option("--num-calib", type=int, default=1024, show_default=True,
              help="Calibration samples to use (all of them when the data holds fewer).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for sample selection and training.")
@click.option("--iters", type=int, default=None, help="Reconstruction iterations per block [default: 20000].")
@click.option("--batch-size", type=int, default=None, help="Reconstruction batch size [default: 32].")
@click.option("--lambda", "weight_lambda", type=float, default=None, help="Rounding regulariser weight [default: 0.01].")
@click.option("--drop-prob", type=float, default=None, help="QDrop probability of keeping a float activation [default: 0.5].")
@click.option("--device", default=None, help="Calibration device: auto, cpu, cuda, cuda:N [default: auto].")
@click.option("--engine", type=click.Choice(["eager", "compiled"]), default=None,
              help="Training loop engine: eager PyTorch or torch.compile [default: eager].")
@click.option("--checkpoint-dir", type=click.Path(path_type=Path), default=None,
              help="Save learned parameters after every block here; rerunning resumes.")
@click.option("--border", type=click.Choice(["quadratic", "linear", "constant", "none"]), default=None,
              help="AQuant border function [default: linear for models with depthwise convs, else quadratic].")
@click.option("--border-granularity", type=click.Choice(["im2col", "channel"]), default=None,
              help="AQuant borders per im2col row (paper) or per input channel [default: im2col].")
@click.option("--no-border-fusion", "border_fusion", flag_value=False, default=None,
              help="Do not average the borders of one channel inside a window [default: averaged].")
@click.option("--grad-through-border", "grad_through_border", flag_value=True, default=None,
              help="AQuant training: pass 1 - dB/dv (the border's slope) as the straight-through gradient to the "
                   "activation and its step, instead of 1 [default: off].")
@click.option("--border-clamp-b0", "border_clamp_b0", flag_value=True, default=None,
              help="AQuant training: project each border's b0 into [0, 1] after every optimizer step [default: off].")
@click.option("--border-op", type=click.Choice(["custom", "onnx"]), default=None,
              help="Write borders as com.aquant::BorderRound (needs the op library) or standard ONNX ops [default: custom].")
@click.option("--conv-integer/--no-conv-integer", "conv_integer", default=None,
              help="AQuant: run 1x1 integer-form convs as ConvInteger and the im2col form's column products as "
                   "MatMulInteger on the codes, 1.5-2.7x faster on ONNX Runtime's CPU EP; use --no-conv-integer for "
                   "the CUDA EP, which has no uint8 kernels for them [default: on].")
@click.option("--int4-weights/--no-int4-weights", "int4_weights", default=None,
              help="Store weights of 4 bits or fewer as INT4/UINT4, two a byte (ONNX Runtime unpacks them when it "
                   "loads the model; same outputs); the model is converted to opset 21 for it [default: off, int8].")
@click.option("--preset", type=click.Choice(["imagenet", "inception", "efficientnet-lite", "cifar10"]), default=None,
              help="Image preprocessing preset [default: the model's stored preprocessing].")
@click.option("--size", type=int, default=None, help="Input size (crop) in pixels [default: from the preset].")
@click.option("--resize", type=int, default=None,
              help="Resize the shorter image side to this before cropping [default: from the preset].")
@click.option("--mean", default=None, help="Per-channel mean in 0..1 units, e.g. 0.485,0.456,0.406 [default: from the preset].")
@click.option("--std", default=None, help="Per-channel std in 0..1 units, e.g. 0.229,0.224,0.225 [default: from the preset].")
@click.option("--progress/--no-progress", default=None, help="Progress bars on stderr [default: on when stderr is a terminal].")
@click.option("--dry-run", is_flag=True,
              help="Print the plan and exit without calibrating: layers, bits, borders, blocks, activation-cache "
                   "memory and a time estimate. Calibration images are counted, not read.")
@click.option("--time-steps", type=click.IntRange(min=0), default=None,
              help="With --dry-run: reconstruction steps of the heaviest block to time for the time estimate "
                   "[default: 2 on CUDA; 0 (no estimate) on the CPU, where one step can take minutes].")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON on stdout instead of text: the plan with --dry-run, else the output path, config and "
                   "each block's start/end loss and seconds.")
@handle_errors
def quantize(**params: Any) -> None:
    """Quantize MODEL with calibration data and write the quantized ONNX model.

    Options can also come from a --config file; --dry-run shows what would happen.
    """
    click_ctx = click.get_current_context()
    extra = _apply_config_file(click_ctx, params["config_file"], params) if params["config_file"] else {}
    config = _quant_config(params, extra)
    model, calib, output = params["model"], params["calib"], params["output"]
    preprocessing = {"size": params["size"], "resize": params["resize"], "mean": _floats(params["mean"]),
                     "std": _floats(params["std"])}  # fmt: skip
    if output is not None:
        _check_output_folder(output)
    if params["dry_run"]:
        from aquant_onnx.planning import format_plan, plan

        planned = plan(model, calib, config, preset=params["preset"], preprocessing=preprocessing,
                       time_steps=params["time_steps"])  # fmt: skip
        _echo_json(planned.to_dict()) if params["as_json"] else click.echo(format_plan(planned))
        return
    for flag, value in (("--calib", calib), ("-o/--output", output)):
        if value is None:
            raise click.UsageError(f"Missing option '{flag}' (needed unless --dry-run; --config may give it).")

    from aquant_onnx.export.model import save_model_atomic
    from aquant_onnx.pipeline import calibrate, export

    start = time.perf_counter()
    show = sys.stderr.isatty() if params["progress"] is None else params["progress"]
    calibrated = calibrate(model, calib, config, preset=params["preset"], preprocessing=preprocessing,
                           progress=_progress_factory(show))  # fmt: skip
    save_model_atomic(export(calibrated), output)
    if params["as_json"]:
        _echo_json({"output": str(output), "model": str(model), "layers": len(calibrated.params.layers),
                    "seconds": time.perf_counter() - start, "blocks": calibrated.summary, "config": config.to_dict()})  # fmt: skip
        return
    for row in calibrated.summary:
        click.echo(f"  {row['block']:<10} {row['iters']:>6} iters  loss {row['loss_start']:.4g} -> {row['loss_end']:.4g}"
                   f"  {row['seconds']:.1f} s", err=True)
    click.echo(f"wrote {output} ({config.method.value}, W{config.w_bits}A{config.a_bits}, "
               f"{len(calibrated.params.layers)} layers)")


@main.command("eval", epilog=EXIT_CODES)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="ImageFolder: one sub-folder of images per class.")
@click.option("--classes", type=click.Path(path_type=Path), default=None,
              help="Class list TSV (index<TAB>name...) mapping folder names to class indices.")
@click.option("--limit", type=int, default=None, help="Evaluate only N images (an even stride over the sorted list).")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="ONNX Runtime provider.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Images per ONNX Runtime run.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON on stdout: model, top1, top5 (percent), count (images), skipped, provider, seconds.")
@handle_errors
def eval_command(model: Path, data: Path, classes: Path | None, limit: int | None, provider: str, batch_size: int,
                 as_json: bool) -> None:
    """Top-1/top-5 accuracy of MODEL through ONNX Runtime on an image folder."""
    from dataclasses import asdict

    from aquant_onnx.eval import evaluate

    result = evaluate(model, data, classes=classes, limit=limit, provider=provider, batch_size=batch_size)
    if as_json:
        _echo_json({"model": str(model), **asdict(result)})
    else:
        click.echo(f"{model.name}: top-1 {result.top1:.2f} %  top-5 {result.top5:.2f} %  "
                   f"({result.count} images, {result.provider}, {result.seconds:.1f} s)")


@main.command(epilog=EXIT_CODES)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--blocks", is_flag=True, help="Show the reconstruction blocks found on the float graph.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON on stdout: the report (each layer's bits, weight count, sizes and BorderRound "
                   "border; totals), or with --blocks the block list.")
@click.option("--netron", is_flag=True, help="Then serve the model in Netron and open it in a browser (pip install netron).")
@click.option("--netron-port", type=int, default=None, help="Port for --netron [default: 8080 or another free one].")
@click.option("--no-browser", "browse", flag_value=False, default=True,
              help="With --netron, only serve (print the URL) instead of opening a browser.")
@handle_errors
def inspect(model: Path, blocks: bool, as_json: bool, netron: bool, netron_port: int | None, browse: bool) -> None:
    """What is quantized in MODEL: layers, bits, weight sizes, total size."""
    from aquant_onnx.export.inspect import format_report, inspect_model

    if blocks:
        from aquant_onnx.graph.load import load_model
        from aquant_onnx.graph.partition import format_blocks, partition_blocks

        found = partition_blocks(load_model(model))
        if as_json:
            from dataclasses import asdict

            click.echo(json.dumps([asdict(b) for b in found]))
        else:
            click.echo(format_blocks(found))
        return
    report = inspect_model(model)
    click.echo(json.dumps(report.to_dict()) if as_json else format_report(report))
    if netron:
        _serve_netron(model, netron_port, browse)


@main.command("ops-path", epilog=EXIT_CODES)
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON on stdout: path, and providers (the ONNX Runtime execution providers the "
                   "library has BorderRound kernels for).")
@handle_errors
def ops_path(as_json: bool) -> None:
    """Print the path of the BorderRound custom-op library.

    For onnxruntime.SessionOptions.register_custom_ops_library(); ONNX Runtime sessions made by
    aquant_onnx.runtime.session register it themselves.
    """
    from aquant_onnx.runtime.library import has_cuda_kernel, library_path

    path = library_path()
    if as_json:
        providers = ["CPUExecutionProvider", *(["CUDAExecutionProvider"] if has_cuda_kernel(path) else [])]
        _echo_json({"path": str(path), "providers": providers})
    else:
        click.echo(str(path))


def _serve_netron(model: Path, port: int | None, browse: bool) -> None:
    from aquant_onnx.errors import ConfigError

    try:
        import netron
    except ImportError:
        raise ConfigError("--netron needs the netron package: pip install netron.") from None
    try:
        host, port = netron.start(str(model), address=port, browse=browse)
    except OSError as error:
        raise ConfigError(f"Netron cannot listen on port {port} ({error.strerror}); choose another --netron-port.") from None
    # The URL line is what scripts (and tests/test_netron.py) wait for; on stderr so `--json` stdout stays JSON.
    click.echo(f"Netron is serving {model} at http://{host}:{port}; press Ctrl-C to stop.", err=True)
    netron.wait()


if __name__ == "__main__":
    main()
