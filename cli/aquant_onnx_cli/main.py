"""The ``aquant-onnx`` command. The only place that prints, exits or configures logging.

Exit codes: 0 success; 1 a problem with the input or options (one ``error:`` line on stderr);
2 command-line usage error; 130 interrupted (Ctrl-C). ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="aquant-onnx")
def main(debug: bool, verbose: int) -> None:
    """Post-training quantization of ONNX models (RTN, AdaRound, BRECQ, QDrop, FlexRound, AQuant).

    \b
    aquant-onnx quantize model.onnx --calib images/ -o model.aquant.onnx
    aquant-onnx eval model.aquant.onnx --data val/
    aquant-onnx inspect model.aquant.onnx

    Exit codes: 0 success, 1 a problem with the input or options (one "error:" line on
    stderr), 2 command-line usage error, 130 interrupted.
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
    from aquant_onnx.errors import ExportError

    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise ExportError(f"Output folder {folder} does not exist; create it or choose another -o path.")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--calib", required=True, type=click.Path(path_type=Path),
              help="Calibration data: a folder of images (searched recursively) or a .npz keyed by input name.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Where to write the quantized ONNX model.")
@click.option("--method", default="rtn", show_default=True,
              type=click.Choice(["rtn", "adaround", "brecq", "qdrop", "flexround", "aquant"]),
              help="Calibration method.")
@click.option("--w-bits", type=int, default=4, show_default=True, help="Weight bits (2-8).")
@click.option("--a-bits", type=int, default=4, show_default=True, help="Activation bits (2-8).")
@click.option("--weight-symmetric", is_flag=True, help="Symmetric weight grids (zero point 0) instead of asymmetric.")
@click.option("--first-layer-w-bits", default="8", show_default=True, help="Weight bits of the first layer, or 'same'.")
@click.option("--last-layer-w-bits", default="8", show_default=True, help="Weight bits of the last layer, or 'same'.")
@click.option("--last-layer-a-bits", default="8", show_default=True, help="Input bits of the last layer, or 'same'.")
@click.option("--quantize-input", is_flag=True, help="Also quantize the model input (left in float by default).")
@click.option("--num-calib", type=int, default=1024, show_default=True, help="Calibration samples to use.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for sample selection and training.")
@click.option("--iters", type=int, default=None, help="Reconstruction iterations per block [default: 20000].")
@click.option("--batch-size", type=int, default=None, help="Reconstruction batch size [default: 32].")
@click.option("--lambda", "weight_lambda", type=float, default=None, help="Rounding regulariser weight [default: 0.01].")
@click.option("--drop-prob", type=float, default=None, help="QDrop probability of keeping a float activation [default: 0.5].")
@click.option("--device", default=None, help="Calibration device: auto, cpu, cuda, cuda:N [default: auto].")
@click.option("--engine", type=click.Choice(["eager", "compiled"]), default=None, help="Training loop engine [default: eager].")
@click.option("--checkpoint-dir", type=click.Path(path_type=Path), default=None,
              help="Save learned parameters after every block here; rerunning resumes.")
@click.option("--border", type=click.Choice(["quadratic", "linear", "constant", "none"]), default=None,
              help="AQuant border function [default: linear for models with depthwise convs, else quadratic].")
@click.option("--border-granularity", type=click.Choice(["im2col", "channel"]), default=None,
              help="AQuant borders per im2col row (paper) or per input channel [default: im2col].")
@click.option("--no-border-fusion", "border_fusion", flag_value=False, default=None,
              help="Do not average the borders of one channel inside a window.")
@click.option("--border-op", type=click.Choice(["custom", "onnx"]), default=None,
              help="Write borders as com.aquant::BorderRound (needs the op library) or standard ONNX ops [default: custom].")
@click.option("--preset", type=click.Choice(["imagenet", "inception", "efficientnet-lite", "cifar10"]), default=None,
              help="Image preprocessing preset (default: the model's stored preprocessing).")
@click.option("--size", type=int, default=None, help="Input size (crop) in pixels.")
@click.option("--resize", type=int, default=None, help="Resize the shorter image side to this before cropping.")
@click.option("--mean", default=None, help="Per-channel mean in 0..1 units, e.g. 0.485,0.456,0.406.")
@click.option("--std", default=None, help="Per-channel std in 0..1 units, e.g. 0.229,0.224,0.225.")
@click.option("--progress/--no-progress", default=None, help="Progress bars [default: on when stderr is a terminal].")
@handle_errors
def quantize(model: Path, calib: Path, output: Path, first_layer_w_bits: str, last_layer_w_bits: str,
             last_layer_a_bits: str, quantize_input: bool, preset: str | None, size: int | None, resize: int | None,
             mean: str | None, std: str | None, progress: bool | None, **options: Any) -> None:
    """Quantize MODEL with calibration data and write the quantized ONNX model."""
    from aquant_onnx.export.model import save_model_atomic
    from aquant_onnx.pipeline import calibrate, export

    _check_output_folder(output)
    show = sys.stderr.isatty() if progress is None else progress
    calibrated = calibrate(
        model,
        calib,
        first_layer_w_bits=_bits_or_same(first_layer_w_bits),
        last_layer_w_bits=_bits_or_same(last_layer_w_bits),
        last_layer_a_bits=_bits_or_same(last_layer_a_bits),
        quantize_model_input=quantize_input,
        preset=preset,
        preprocessing={"size": size, "resize": resize, "mean": _floats(mean), "std": _floats(std)},
        progress=_progress_factory(show),
        **{key: value for key, value in options.items() if value is not None},
    )
    save_model_atomic(export(calibrated), output)
    for row in calibrated.summary:
        click.echo(f"  {row['block']:<10} {row['iters']:>6} iters  loss {row['loss_start']:.4g} -> {row['loss_end']:.4g}"
                   f"  {row['seconds']:.1f} s", err=True)
    click.echo(f"wrote {output} ({calibrated.config.method.value}, W{calibrated.config.w_bits}A{calibrated.config.a_bits}, "
               f"{len(calibrated.params.layers)} layers)")


@main.command("eval")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="ImageFolder: one sub-folder of images per class.")
@click.option("--classes", type=click.Path(path_type=Path), default=None,
              help="Class list TSV (index<TAB>name...) mapping folder names to class indices.")
@click.option("--limit", type=int, default=None, help="Evaluate only N images (an even stride over the sorted list).")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="ONNX Runtime provider.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Images per ONNX Runtime run.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def eval_command(model: Path, data: Path, classes: Path | None, limit: int | None, provider: str, batch_size: int,
                 as_json: bool) -> None:
    """Top-1/top-5 accuracy of MODEL through ONNX Runtime on an image folder."""
    from dataclasses import asdict

    from aquant_onnx.eval import evaluate

    result = evaluate(model, data, classes=classes, limit=limit, provider=provider, batch_size=batch_size)
    if as_json:
        click.echo(json.dumps(asdict(result)))
    else:
        click.echo(f"{model.name}: top-1 {result.top1:.2f} %  top-5 {result.top5:.2f} %  "
                   f"({result.count} images, {result.provider}, {result.seconds:.1f} s)")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--blocks", is_flag=True, help="Show the reconstruction blocks found on the float graph.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--netron", is_flag=True, help="Open the model in Netron (pip install netron).")
@handle_errors
def inspect(model: Path, blocks: bool, as_json: bool, netron: bool) -> None:
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
        _serve_netron(model)


@main.command("ops-path")
@handle_errors
def ops_path() -> None:
    """Print the path of the BorderRound custom-op library, for
    onnxruntime.SessionOptions.register_custom_ops_library()."""
    from aquant_onnx.runtime.library import library_path

    click.echo(str(library_path()))


def _serve_netron(model: Path) -> None:
    from aquant_onnx.errors import ConfigError

    try:
        import netron
    except ImportError:
        raise ConfigError("--netron needs the netron package: pip install netron.") from None
    netron.start(str(model))
    click.echo("Netron is serving the model; press Ctrl-C to stop.")
    netron.wait()


if __name__ == "__main__":
    main()
