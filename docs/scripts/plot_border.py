"""docs/border_function.png: AQuant's learned rounding border against the activation, for one
layer of a real calibration run, next to RTN.

The run is a reconstruction checkpoint written by ``benchmarks/accuracy.py`` (``--checkpoint-dir``
under ``benchmarks/results/checkpoints/<run>``; git-ignored, so make it first, e.g.
``python -m benchmarks.accuracy --methods aquant --bits 2/2 --seeds 1005 --iters 500``).
The run's name gives its options; the checkpoint is loaded with the package's own code, which
checks that its fingerprint matches the model and those options, and the border quantizers are
rebuilt exactly as ``aquant_onnx.recon.aquant`` builds them.

Left: B(v) of every im2col row (kernel tap) of a few input channels (thin) and the channel's
fused border, the mean over its taps (thick), which is what rounds a window whose taps all hold v.
Right: the code of such a window against the activation x = s·(v − z), computed by
``border_codes`` (the op's arithmetic), learned vs RTN, over the distribution of the layer's
float input on the 128 shipped calibration images. The layer and channels shown are those where the
learned border changes the code of the largest share of those activations.

    python docs/scripts/plot_border.py [--run DIR] [--layer NAME] [-o docs/border_function.png]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import torch

from aquant_onnx.config import BorderShape, QuantConfig, with_options
from aquant_onnx.data.calibration import load_calibration, model_inputs_of
from aquant_onnx.data.metadata import preprocessing_for_model
from aquant_onnx.graph.load import load_model
from aquant_onnx.quant.border import BorderQuantizer, border_codes
from aquant_onnx.recon.aquant import make_border_quantizer
from aquant_onnx.recon.attach import attach_quantizers
from aquant_onnx.recon.checkpoint import Checkpoint, fingerprint, load_quantizer_state
from aquant_onnx.torchgraph.executor import TorchGraph

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RUN = REPO_ROOT / "benchmarks" / "results" / "checkpoints" / "resnet20_aquant_w2a2_s1005_i500_b32_n1000"
MODELS = {"resnet20": (REPO_ROOT / "models" / "resnet20_cifar10.onnx", REPO_ROOT / "tests" / "data" / "cifar10_calib")}
# <model>_<method>_w<W>a<A>_s<seed>_i<iters>_b<batch>_n<num_calib>, as benchmarks/accuracy.py names runs
RUN_NAME = re.compile(r"(?P<model>\w+?)_(?P<method>aquant)_w(?P<w>\d)a(?P<a>\d)_s(?P<seed>\d+)_i(?P<iters>\d+)"
                      r"_b(?P<batch>\d+)_n(?P<num_calib>\d+)$")
CHANNELS_SHOWN = 3


def run_config(run: Path) -> tuple[tuple[Path, Path], QuantConfig]:
    """(model, images) paths and QuantConfig of a benchmarks/accuracy.py checkpoint folder, from its name."""
    match = RUN_NAME.match(run.name)
    if match is None or match["model"] not in MODELS:
        raise SystemExit(f"{run.name} is not an AQuant run of {sorted(MODELS)} named by benchmarks/accuracy.py")
    config = with_options(
        QuantConfig(), method=match["method"], w_bits=int(match["w"]), a_bits=int(match["a"]), seed=int(match["seed"]),
        iters=int(match["iters"]), batch_size=int(match["batch"]), num_calib=int(match["num_calib"]), engine="eager",
    )
    return MODELS[match["model"]], config


def learned_borders(run: Path) -> tuple[dict[str, BorderQuantizer], dict[str, np.ndarray]]:
    """The run's im2col border quantizers by layer name, loaded into the layers they were learned
    for, and each of those layers' float input on the shipped calibration images."""
    (model_path, images), config = run_config(run)
    model = load_model(model_path)
    state = Checkpoint(run, fingerprint(model, config)).load()
    if state is None:
        raise SystemExit(f"no checkpoint in {run}; run benchmarks/accuracy.py for it first")
    graph = TorchGraph(model)
    samples = load_calibration(images, model_inputs_of(model), preprocessing_for_model(model, model_path=model_path),
                               num=len(list(images.iterdir()))).materialize()
    with torch.no_grad():  # before any quantizer is attached: the float activations
        inputs = graph.run({k: torch.from_numpy(v) for k, v in samples.items()},
                           [layer.input_name for layer in graph.layers.values()])
    attach_quantizers(graph, config)
    for name, entry in state["quantizers"].items():
        coeffs = entry.get("input", {}).get("coeffs")
        if coeffs is not None:  # this input was rounded by a border: rebuild it as AQuant did
            layer = graph.layers[name]
            shape = next(s for s in BorderShape if s.num_coeffs == coeffs.shape[0])
            layer.input_quantizer = make_border_quantizer(layer, layer.input_quantizer, shape, config)
    # Input quantizers only: the weights' AdaRound state is not needed for the borders.
    inputs_only = {name: {"input": entry["input"]} for name, entry in state["quantizers"].items() if "input" in entry}
    load_quantizer_state(graph, inputs_only)
    quantizers = {name: layer.input_quantizer for name, layer in graph.layers.items()
                  if isinstance(layer.input_quantizer, BorderQuantizer) and layer.input_quantizer.geometry is not None}
    return quantizers, {name: inputs[graph.layers[name].input_name].numpy() for name in quantizers}


def tap_borders(quantizer: BorderQuantizer, v: np.ndarray) -> np.ndarray:
    """B_j(v) for every im2col row j: [C, kh·kw, len(v)]."""
    coeffs = quantizer.coeffs.detach().double().numpy()
    borders = sum(coeffs[i][:, None] * v[None, :] ** i for i in range(coeffs.shape[0]))
    return borders.reshape(-1, quantizer.geometry.kernel_size, len(v))


def uniform_window_codes(quantizer: BorderQuantizer, x: np.ndarray, coeffs: torch.Tensor) -> np.ndarray:
    """Codes [M, C] of M unpadded windows whose channel-c entries all hold x[m, c] (x: [M, C], or
    [M] for every channel), computed by border_codes."""
    (kh, kw), geometry = quantizer.geometry.kernel, quantizer.geometry
    channels = quantizer.coeffs.shape[1] // (kh * kw)
    values = torch.as_tensor(x, dtype=torch.float32)
    if values.dim() == 1:
        values = values[:, None].expand(-1, channels)
    maps = values[:, :, None, None].expand(-1, -1, kh, kw)  # one window per sample
    codes = border_codes(maps, quantizer.step_size().detach(), quantizer.zero_point, coeffs, quantizer.qmin,
                         quantizer.qmax, kernel=geometry.kernel, dilations=geometry.dilations, fuse=quantizer.fuse)
    return codes[:, :: kh * kw, 0].numpy()  # [M, C·kh·kw, 1]: the first tap of each channel


def rtn_disagreement(quantizer: BorderQuantizer, activations: np.ndarray) -> np.ndarray:
    """Per channel: the share of its activations [N, C, H, W] whose code (in a window of equal
    values) differs from RTN's."""
    x = activations.transpose(0, 2, 3, 1).reshape(-1, activations.shape[1])
    learned = uniform_window_codes(quantizer, x, quantizer.coeffs.detach())
    rtn = uniform_window_codes(quantizer, x, torch.full((1, quantizer.coeffs.shape[1]), 0.5))
    return (learned != rtn).mean(axis=0)


def code_steps(x: np.ndarray, codes: np.ndarray) -> list[str]:
    """'x→code' where the staircase changes, read off the plotted grid."""
    changes = np.flatnonzero(np.diff(codes)) + 1
    return [f"{x[i]:.2f}→{codes[i]}" for i in changes]


def plot(name: str, quantizer: BorderQuantizer, activations: np.ndarray, run: Path, output: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    disagreement = rtn_disagreement(quantizer, activations)
    channels = [int(c) for c in np.argsort(-disagreement)[:CHANNELS_SHOWN]]
    scale, zero_point = float(quantizer.step_size().detach()), float(quantizer.zero_point)
    v = np.linspace(quantizer.qmin - 0.5, quantizer.qmax + 0.5, 801)
    borders = tap_borders(quantizer, v)
    x = scale * (v - zero_point)
    learned = uniform_window_codes(quantizer, x, quantizer.coeffs.detach())
    rtn = uniform_window_codes(quantizer, x, torch.full((1, quantizer.coeffs.shape[1]), 0.5))

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    density = right.twinx()
    bins = np.linspace(x[0], x[-1], 57)
    for color, channel in zip(colors, channels):
        values = activations[:, channel].reshape(-1)
        values = np.clip(values[values != 0], x[0], x[-1])  # after a ReLU most are exactly 0
        density.hist(values, bins=bins, color=color, alpha=0.15, weights=np.full(values.size, 100 / values.size))
        for tap in borders[channel]:
            left.plot(v, tap, color=color, linewidth=0.6, alpha=0.45)
        left.plot(v, borders[channel].mean(axis=0), color=color, linewidth=2.2, label=f"channel {channel} (fused)")
        right.step(x, learned[:, channel], where="post", color=color, linewidth=1.8,
                   label=f"channel {channel}: {disagreement[channel]:.1%} of its activations ≠ RTN")
    left.axhline(0.5, color="black", linestyle="--", linewidth=1.2, label="RTN border 0.5")
    right.step(x, rtn[:, channels[0]], where="post", color="black", linestyle="--", linewidth=1.2, label="RTN")
    left.set(xlabel="v = x / s + z", ylabel="border B(v)", title="Learned borders (thin: each kernel tap)")
    right.set(xlabel="activation x", ylabel="code", title="Code of a window with all taps = x",
              yticks=range(quantizer.qmin, quantizer.qmax + 1))
    density.set_ylabel("% of the channel's nonzero float activations (shaded)")
    right.set_zorder(density.get_zorder() + 1)
    right.patch.set_visible(False)
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"AQuant borders of {name} (ResNet-20 W{quantizer.bits} activations, run {run.name})", fontsize=10)
    figure.tight_layout()
    figure.savefig(output, dpi=130)
    return [f"RTN steps {' '.join(code_steps(x, rtn[:, channels[0]]))}"] + [
        f"channel {c} ({disagreement[c]:.1%} ≠ RTN) steps {' '.join(code_steps(x, learned[:, c]))}" for c in channels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="checkpoint folder of an AQuant run")
    parser.add_argument("--layer", help="layer (node) name [default: the one rounding most activations unlike RTN]")
    parser.add_argument("-o", "--output", type=Path, default=REPO_ROOT / "docs" / "border_function.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    quantizers, activations = learned_borders(args.run)
    name = args.layer or max(quantizers, key=lambda n: rtn_disagreement(quantizers[n], activations[n]).mean())
    if name not in quantizers:
        raise SystemExit(f"{name} has no im2col border in this run; choose one of {sorted(quantizers)}")
    lines = plot(name, quantizers[name], activations[name], args.run, args.output)
    quantizer = quantizers[name]
    print(f"wrote {args.output}: layer {name}, step {float(quantizer.step_size().detach()):.4f}, "
          f"zero point {int(quantizer.zero_point)}, codes {quantizer.qmin}..{quantizer.qmax}")
    print("\n".join(f"  {line}" for line in lines))


if __name__ == "__main__":
    main()
