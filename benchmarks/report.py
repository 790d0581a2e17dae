"""The README results section and the docs/ plots, generated from the result CSVs only.

    python -m benchmarks report [--results benchmarks/results] [--readme README.md] [--docs docs] [--no-plots]

Everything between ``<!-- results:start -->`` and ``<!-- results:end -->`` in the README is
replaced; every number comes from a CSV in the results folder: ``accuracy.csv`` (methods x bit
settings, mean and spread over seeds, calibration time), ``paper_reference.csv`` (the AQuant
paper's ImageNet table, for its AQuant - QDrop margins), ``ablation.csv`` with ``paper_ablation.csv``
(AQuant variants against the default AQuant run of the same seed and schedule, the paper's Table 3
beside), ``ort_quantize.csv`` (ONNX Runtime's quantize_static), ``ort_latency.csv`` (latest row per
variant) and ``model_size.csv``.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable
from pathlib import Path

from .models import MODELS
from .results_io import markdown_table, read_csv

START, END = "<!-- results:start -->", "<!-- results:end -->"
METHOD_ORDER = ("fp32", "rtn", "adaround", "brecq", "qdrop", "flexround", "aquant")
BITS_ORDER = ((8, 8), (4, 8), (4, 4), (2, 4), (3, 3), (2, 2))  # the paper's order below 8 bits
PLOT_MODEL, PLOT_EVAL_SET = "resnet20", "cifar10_test_9k"  # the largest eval set: least sampling noise
ACCURACY_PLOT = "accuracy_vs_bits_{model}.png"
LATENCY_PLOT = "latency_{provider}.png"
LATENCY_REFERENCES = {"fp32": "× FP32", "qdq_w4a4": "× W4A4"}  # ort_latency variant -> ratio column
LATENCY_KEY = ("model", "variant", "batch", "provider", "threads")  # one table per (provider, threads)


# ---------------------------------------------------------------- helpers


def _bits(row: dict) -> tuple[int, int]:
    return int(row["w_bits"]), int(row["a_bits"])


def _bits_label(bits: tuple[int, int]) -> str:
    return f"W{bits[0]}A{bits[1]}"


def _bits_sorted(settings: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    rank = {bits: i for i, bits in enumerate(BITS_ORDER)}
    return sorted(set(settings), key=lambda b: (rank.get(b, len(rank)), -b[0], -b[1]))


def _method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _latest(rows: list[dict], key: tuple[str, ...]) -> list[dict]:
    """The last row of each ``key`` (a rerun supersedes older rows), in first-seen order."""
    by_key: dict[tuple, dict] = {}
    for row in rows:
        by_key[tuple(row[k] for k in key)] = row
    return list(by_key.values())


def _values(rows: Iterable[dict], field: str) -> str:
    return ", ".join(sorted({row[field] for row in rows if row.get(field)}))


def calibration_set(model: str) -> str:
    """The calibration folder of ``model`` (fixed per model in benchmarks/models.py; accuracy.csv has no column)."""
    return Path(MODELS[model]["calib"]).name if model in MODELS else "unknown"


def mean_spread(values: list[float]) -> str:
    """``"54.87 ± 0.04 (2)"``: mean ± half the range over seeds (number of seeds); one value as is."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {(max(values) - min(values)) / 2:.2f} ({len(values)})"


# ---------------------------------------------------------------- accuracy


class AccuracyCells:
    """Top-1 per (model, eval set, method, iters, bits) over seeds, from accuracy.csv rows."""

    def __init__(self, rows: list[dict]) -> None:
        key = ("model", "method", "w_bits", "a_bits", "seed", "iters", "batch", "num_calib", "eval_set")
        self.rows = _latest(rows, key)
        self.cells: dict[tuple, list[float]] = {}
        self.seconds: dict[tuple, list[float]] = {}
        for row in self.rows:
            cell = (row["model"], row["eval_set"], row["method"], int(row["iters"]), _bits(row))
            self.cells.setdefault(cell, []).append(float(row["top1"]))
            self.seconds.setdefault(cell, []).append(float(row["calib_seconds"] or 0))

    def tables(self) -> list[tuple[str, str]]:
        """(model, eval set) pairs, ResNet-20 first, in a stable order."""
        return sorted({(r["model"], r["eval_set"]) for r in self.rows}, key=lambda t: (t[0] != "resnet20", t))

    def methods(self, model: str, eval_set: str) -> list[tuple[str, int]]:
        found = {(m, it) for (mo, ev, m, it, _) in self.cells if (mo, ev) == (model, eval_set) and m != "fp32"}
        return sorted(found, key=lambda m: (_method_rank(m[0]), m[1]))

    def bits(self, model: str, eval_set: str) -> list[tuple[int, int]]:
        return _bits_sorted(b for (mo, ev, m, _, b) in self.cells if (mo, ev) == (model, eval_set) and m != "fp32")

    def fp32(self, model: str, eval_set: str) -> float | None:
        values = [v for (mo, ev, m, _, _), vs in self.cells.items() if (mo, ev, m) == (model, eval_set, "fp32")
                  for v in vs]
        return statistics.fmean(values) if values else None

    def mean(self, model: str, eval_set: str, method: str, iters: int, bits: tuple[int, int]) -> float | None:
        values = self.cells.get((model, eval_set, method, iters, bits))
        return statistics.fmean(values) if values else None

    def rows_of(self, model: str, eval_set: str) -> list[dict]:
        return [r for r in self.rows if (r["model"], r["eval_set"]) == (model, eval_set)]


def _method_label(method: str, iters: int) -> str:
    return method if iters == 0 else f"{method} · {iters} it"


def accuracy_section(cells: AccuracyCells) -> list[str]:
    lines = ["### Accuracy (top-1 %, through ONNX Runtime)", "",
             "Cells: mean ± half the range over seeds (number of seeds); one seed: its value. `it`:",
             "reconstruction iterations per block. Sampling noise of one value: the binomial √(p(1−p)/n) for n",
             "eval images.", ""]
    for model, eval_set in cells.tables():
        rows = cells.rows_of(model, eval_set)
        bits = cells.bits(model, eval_set)
        fp32 = cells.fp32(model, eval_set)
        fp32_text = f"{fp32:.2f}" if fp32 is not None else "not measured"
        lines += [(f"**{model} on {eval_set}** (FP32 {fp32_text}; calibration {_values(rows, 'num_calib')} images "
                   f"of {calibration_set(model)}; device {_values(rows, 'device')}; torch {_values(rows, 'torch')}; "
                   f"onnxruntime {_values(rows, 'onnxruntime')})"), ""]
        table = []
        for method, iters in cells.methods(model, eval_set):
            table.append({"method": _method_label(method, iters), **{
                _bits_label(b): mean_spread(cells.cells[(model, eval_set, method, iters, b)])
                if (model, eval_set, method, iters, b) in cells.cells else "–" for b in bits}})
        lines += markdown_table(table, ["method", *map(_bits_label, bits)]) + [""]
    return lines


def _margin(aquant: float | None, qdrop: float | None, fp32: float | None) -> str:
    """``AQuant − QDrop`` and, when QDrop is below FP32, the share of that gap AQuant closes."""
    if aquant is None or qdrop is None:
        return "–"
    if fp32 is None or fp32 - qdrop <= 0:
        return f"{aquant - qdrop:+.2f}"
    return f"{aquant - qdrop:+.2f} ({(aquant - qdrop) / (fp32 - qdrop):.0%})"


def margin_section(cells: AccuracyCells, paper_rows: list[dict]) -> list[str]:
    """AQuant − QDrop per bit setting: ours (same iterations) beside the paper's ImageNet margins."""
    paper = {(r["model"], r["method"], _bits(r)): float(r["top1"]) for r in paper_rows}
    bits = _bits_sorted(b for (_, _, b) in paper if b[0] < 8)
    table = []
    for model, eval_set in cells.tables():
        iters_both = sorted({it for m, it in cells.methods(model, eval_set) if m == "aquant"}
                            & {it for m, it in cells.methods(model, eval_set) if m == "qdrop"})
        for iters in iters_both:
            row = {"source": f"ours: {model}, {eval_set}, {iters} it"}
            for b in bits:
                aquant = cells.mean(model, eval_set, "aquant", iters, b)
                qdrop = cells.mean(model, eval_set, "qdrop", iters, b)
                row[_bits_label(b)] = _margin(aquant, qdrop, cells.fp32(model, eval_set))
            table.append(row)
    for model in sorted({m for (m, _, _) in paper}):
        row = {"source": f"paper: {model}, ImageNet"}
        for b in bits:
            aquant, qdrop = paper.get((model, "aquant", b)), paper.get((model, "qdrop", b))
            row[_bits_label(b)] = _margin(aquant, qdrop, paper.get((model, "fp32", (32, 32))))
        table.append(row)
    if not table or not bits:
        return []
    sources = _values(paper_rows, "source")
    return ["### AQuant − QDrop (top-1 points), ours beside the paper", "",
            f"Paper numbers from `paper_reference.csv` ({sources}). Our sets are easier than full ImageNet:",
            "compare the sign and the trend with fewer bits, not the size. After the margin: the share of the",
            "FP32 − QDrop gap that AQuant closes (less headroom makes the same share a smaller margin).", "",
            *markdown_table(table, ["source", *map(_bits_label, bits)]), ""]


def calibration_time_section(cells: AccuracyCells) -> list[str]:
    """Median calibration seconds per (model, method, iters) and bit setting (one eval set's rows per run)."""
    lines = ["### Calibration time (seconds, median over seeds)", "",
             "Whole `calibrate` call (range init, reconstruction, parameter collection); the device column says",
             "where it ran. On the shared 2-core CPU the times vary with load.", ""]
    found = False
    for model in sorted({m for m, _ in cells.tables()}, key=lambda m: (m != "resnet20", m)):
        eval_set = min(e for m, e in cells.tables() if m == model)  # each run is timed once, repeated per eval set
        methods = cells.methods(model, eval_set)
        if not methods:
            continue
        found = True
        bits = cells.bits(model, eval_set)
        table = [{"method": _method_label(method, iters), **{
            _bits_label(b): f"{statistics.median(cells.seconds[(model, eval_set, method, iters, b)]):.0f}"
            if (model, eval_set, method, iters, b) in cells.seconds else "–" for b in bits}}
            for method, iters in methods]
        lines += [f"**{model}** (device {_values(cells.rows_of(model, eval_set), 'device')})", "",
                  *markdown_table(table, ["method", *map(_bits_label, bits)]), ""]
    return lines if found else []


def _with_delta(value: float | None, default: float | None) -> str:
    """``"61.20 (-1.74)"``: the value and its difference to ``default``; ``–`` when not measured."""
    if value is None:
        return "–"
    return f"{value:.2f}" if default is None else f"{value:.2f} ({value - default:+.2f})"


def ablation_section(ablation_rows: list[dict], accuracy_rows: list[dict], paper_rows: list[dict]) -> list[str]:
    """AQuant variants (``options`` of ablation.csv) beside the default AQuant and QDrop runs of the
    same model, eval set, seed and schedule; Δ is variant − default. The paper's Table 3 below."""
    key = ("model", "method", "options", "w_bits", "a_bits", "seed", "iters", "batch", "num_calib", "eval_set")
    ablations = _latest(ablation_rows, key)
    if not ablations:
        return []
    reference = {(r["model"], r["eval_set"], r["method"], r["seed"], r["iters"], _bits(r)): float(r["top1"])
                 for r in _latest(accuracy_rows, tuple(k for k in key if k != "options"))}
    lines = ["### AQuant ablations (top-1 %; Δ: variant − default AQuant of the same seed and schedule)", "",
             "Default AQuant: quadratic border (linear for depthwise models), border fusion, `im2col`",
             "granularity, border learning rate 1e-3; `qdrop` is the same loop without borders. Rows",
             "naming another method compare it with that method's default run.", ""]
    runs = sorted({(r["model"], r["eval_set"], r["seed"], r["iters"]) for r in ablations})
    for run in runs:
        model, eval_set, seed, iters = run
        group = [r for r in ablations if (r["model"], r["eval_set"], r["seed"], r["iters"]) == run]
        bits = _bits_sorted(_bits(r) for r in group)
        default = {b: reference.get((model, eval_set, "aquant", seed, iters, b)) for b in bits}
        qdrop = {b: reference.get((model, eval_set, "qdrop", seed, iters, b)) for b in bits}
        variants = {(method, options): {_bits(r): float(r["top1"]) for r in group
                                        if (r["method"], r["options"]) == (method, options)}
                    for method, options in sorted({(r["method"], r["options"]) for r in group},
                                                  key=lambda mo: (mo[0] != "aquant", mo))}
        table = [{"variant": "aquant (default)", **{_bits_label(b): _with_delta(default[b], None) for b in bits}}]
        table += [{"variant": options, **{_bits_label(b): _with_delta(found.get(b), default[b]) for b in bits}}
                  for (method, options), found in variants.items() if method == "aquant"]
        table.append({"variant": "qdrop (no border)", **{_bits_label(b): _with_delta(qdrop[b], default[b])
                                                          for b in bits}})
        # Variants of another method: Δ against that method's default run of the same seed and schedule.
        for (method, options), found in variants.items():
            if method != "aquant":
                base = {b: reference.get((model, eval_set, method, seed, iters, b)) for b in bits}
                table.append({"variant": f"{method}, {options} (Δ vs {method})",
                              **{_bits_label(b): _with_delta(found.get(b), base[b]) for b in bits}})
        lines += [f"**{model} on {eval_set}**, seed {seed}, {iters} it", "",
                  *markdown_table(table, ["variant", *map(_bits_label, bits)]), ""]
    if paper_rows:
        paper_bits = _bits_sorted(_bits(r) for r in paper_rows)
        paper = {(r["model"], r["variant"], _bits(r)): float(r["top1"]) for r in paper_rows}
        table = []
        for model, variant in sorted({(r["model"], r["variant"]) for r in paper_rows},
                                     key=lambda mv: (mv[0], mv[1] != "default", mv[1])):
            base = {b: None if variant == "default" else paper.get((model, "default", b)) for b in paper_bits}
            table.append({"source": f"paper: {model}, {variant}",
                          **{_bits_label(b): _with_delta(paper.get((model, variant, b)), base[b]) for b in paper_bits}})
        lines += [f"Paper ({_values(paper_rows, 'source')}; ImageNet; default = quadratic with fusion):", "",
                  *markdown_table(table, ["source", *map(_bits_label, paper_bits)]), ""]
    return lines


# ---------------------------------------------------------------- ONNX Runtime quantize_static


def ort_quantize_section(rows: list[dict], cells: AccuracyCells) -> list[str]:
    if not rows:
        return []
    rows = _latest(rows, ("model", "calibrate", "w_bits", "a_bits", "num_calib", "seed", "eval_set"))
    lines = ["### ONNX Runtime `quantize_static` on the same images", "",
             "QDQ, per-channel weights (QInt8/QInt4), activations QUInt8/QUInt4, ORT defaults otherwise: unlike",
             "aquant-onnx it also quantizes the model input and the first and last layers at the given bits.",
             "Calibrated on the images aquant-onnx uses, with the same preprocessing. Last row: our best method at",
             "that setting (from `accuracy.csv`).", ""]
    for model, eval_set in sorted({(r["model"], r["eval_set"]) for r in rows}, key=lambda t: (t[0] != "resnet20", t)):
        group = [r for r in rows if (r["model"], r["eval_set"]) == (model, eval_set)]
        fp32 = [r for r in group if r["calibrate"] == "fp32"]
        quantized = [r for r in group if r["calibrate"] != "fp32"]
        bits = _bits_sorted(_bits(r) for r in quantized)
        table = []
        for calibrate in sorted({r["calibrate"] for r in quantized}):
            cells_of = {_bits(r): r for r in quantized if r["calibrate"] == calibrate}
            table.append({"method": f"ORT {calibrate}", **{
                _bits_label(b): _ort_cell(cells_of[b]) if b in cells_of else "–" for b in bits}})
        ours = {"method": "aquant-onnx (best)"}
        for b in bits:
            best = max(((cells.mean(model, eval_set, m, it, b), m) for m, it in cells.methods(model, eval_set)
                        if cells.mean(model, eval_set, m, it, b) is not None), default=None)
            ours[_bits_label(b)] = f"{best[0]:.2f} ({best[1]})" if best else "–"
        table.append(ours)
        header = (f"**{model} on {eval_set}** (FP32 {fp32[-1]['top1'] if fp32 else 'not measured'}; "
                  f"{_values(quantized, 'num_calib')} calibration images from {_values(quantized, 'calib_set')}; "
                  f"onnxruntime {_values(quantized, 'onnxruntime')}; device {_values(quantized, 'device')})")
        lines += [header, "", *markdown_table(table, ["method", *map(_bits_label, bits)]), ""]
    return lines


def _ort_cell(row: dict) -> str:
    return row["top1"] if row["status"] == "ok" else f"not supported ({row['status'].replace('|', '/')})"


# ---------------------------------------------------------------- latency and size


def latency_section(latency_rows: list[dict], size_rows: list[dict], plot_paths: dict[str, str]) -> list[str]:
    if not latency_rows:
        return []
    latest = _latest(latency_rows, LATENCY_KEY)
    # References of the same run (same commit and thread count): rows of one run share the machine's
    # load, others do not.
    reference_ms = {(r["model"], r["variant"], r["batch"], r["provider"], r["threads"], r["commit"]):
                    float(r["median_ms"]) for r in latency_rows if r["variant"] in LATENCY_REFERENCES}
    sizes = {(r["model"], r["variant"]): int(r["bytes"]) for r in _latest(size_rows, ("model", "variant"))}
    lines = ["### ONNX Runtime latency and model size", "",
             "Median ms per run (random input, latest measurement of each variant); `× FP32` and `× W4A4` divide",
             "by the FP32 and the plain QDQ W4A4 model measured in the same run (same commit; `–` when that run had",
             "none). Size: the exported `.onnx` file (`model_size.csv`).",
             ""]
    for provider, threads in _latency_settings(latest):
        in_setting = [r for r in latest if (r["provider"], r["threads"]) == (provider, threads)]
        models = [r for r in in_setting if not r["model"].startswith("kernel")]
        batches = sorted({int(r["batch"]) for r in models})
        table = []
        for model, variant in dict.fromkeys((r["model"], r["variant"]) for r in models):
            cells = {int(r["batch"]): r for r in models if (r["model"], r["variant"]) == (model, variant)}
            row = {"model": model, "variant": variant}
            for batch in batches:
                cell = cells.get(batch)
                row[f"batch {batch} ms"] = cell["median_ms"] if cell else "–"
                for variant_ref, label in LATENCY_REFERENCES.items():
                    ref = (reference_ms.get((model, variant_ref, str(batch), provider, threads, cell["commit"]))
                           if cell else None)
                    row[f"{label} (b{batch})"] = f"{float(cell['median_ms']) / ref:.2f}" if ref else "–"
            row["size MB"] = f"{sizes[(model, variant)] / 1e6:.2f}" if (model, variant) in sizes else "–"
            row["commit"] = _values(cells.values(), "commit")
            table.append(row)
        ratio_labels = LATENCY_REFERENCES.values()
        per_batch = [f for b in batches for f in (f"batch {b} ms", *(f"{x} (b{b})" for x in ratio_labels))]
        fields = ["model", "variant", *per_batch, "size MB", "commit"]
        lines += [f"**{provider}, {_threads_label(threads)}** (device {_values(models, 'device')}; "
                  f"onnxruntime {_values(models, 'ort')})", "", *markdown_table(table, fields), ""]
        kernels = [r for r in in_setting if r["model"].startswith("kernel")]
        if kernels:
            lines += [f"BorderRound kernel on {kernels[0]['model']} (GB/s of float32 input read):", "",
                      *markdown_table(kernels, ["variant", "batch", "median_ms", "gb_per_s", "commit"]), ""]
        if provider in plot_paths and threads == _plotted_threads(latest, provider):
            lines += [f"![ORT latency, {provider}]({plot_paths[provider]})", ""]
    return lines


def _latency_settings(rows: list[dict]) -> list[tuple[str, str]]:
    """(provider, threads) pairs, most threads first: each gets its own table."""
    settings = {(r["provider"], r["threads"]) for r in rows if r["provider"]}
    return sorted(settings, key=lambda s: (s[0], -int(s[1] or 0)))


def _threads_label(threads: str) -> str:
    return f"{threads} thread{'' if threads == '1' else 's'}"


def _plotted_threads(rows: list[dict], provider: str) -> str:
    """The thread count whose rows the provider's plot shows: the largest measured."""
    return next(t for p, t in _latency_settings(rows) if p == provider)


# ---------------------------------------------------------------- plots


def plot_accuracy(cells: AccuracyCells, model: str, eval_set: str, path: Path) -> None:
    """Top-1 vs bit setting, one line per (method, iters), seed spread as error bars, FP32 dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bits = [b for b in cells.bits(model, eval_set) if b[0] < 8] or cells.bits(model, eval_set)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for method, iters in cells.methods(model, eval_set):
        values = [cells.cells.get((model, eval_set, method, iters, b)) for b in bits]
        if not any(values):
            continue
        # NaN for a missing setting breaks the line there instead of drawing through it
        ys = [statistics.fmean(v) if v else float("nan") for v in values]
        spread = [(max(v) - min(v)) / 2 if v else 0.0 for v in values]
        ax.errorbar(range(len(bits)), ys, yerr=spread, marker="o", capsize=3, label=_method_label(method, iters))
    fp32 = cells.fp32(model, eval_set)
    if fp32 is not None:
        ax.axhline(fp32, color="gray", linestyle="--", label="FP32")
    ax.set_xticks(range(len(bits)), [_bits_label(b) for b in bits])
    ax.set_ylabel("top-1 %")
    ax.set_title(f"{model} on {eval_set}: accuracy vs bits (ONNX Runtime)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def plot_latency(latency_rows: list[dict], provider: str, path: Path) -> None:
    """Bars of median ms per variant, one panel per (model, batch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _latest(latency_rows, LATENCY_KEY)
    threads = _plotted_threads(rows, provider)
    latest = [r for r in rows if (r["provider"], r["threads"]) == (provider, threads)
              and not r["model"].startswith("kernel")]
    panels = sorted({(r["model"], int(r["batch"])) for r in latest}, key=lambda p: (p[0] != "resnet20", p))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 4), squeeze=False)
    for ax, (model, batch) in zip(axes[0], panels):
        bars = [r for r in latest if (r["model"], int(r["batch"])) == (model, batch)]
        ax.barh([r["variant"] for r in bars], [float(r["median_ms"]) for r in bars], color="tab:blue")
        ax.invert_yaxis()
        ax.set_title(f"{model}, batch {batch}", fontsize=9)
        ax.set_xlabel("median ms")
        ax.tick_params(labelsize=7)
    fig.suptitle(f"ONNX Runtime latency ({provider}, {_threads_label(threads)})")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


# ---------------------------------------------------------------- README


def build_section(results_dir: Path, plot_links: dict[str, dict[str, str]]) -> str:
    """The markdown between the README markers (without them)."""
    cells = AccuracyCells(read_csv(results_dir / "accuracy.csv"))
    lines = ["_Generated by `python -m benchmarks report` from `benchmarks/results/*.csv`; do not edit by hand._",
             "Reproduce a table with `python -m benchmarks run --suite <accuracy|ablation|ort-quantize|latency|speed|parity>",
             "--resume` (repeat until it reports nothing left; `--dry-run` lists the jobs), then regenerate this",
             "section with `python -m benchmarks report`.", ""]
    lines += accuracy_section(cells)
    for name in plot_links.get("accuracy", {}).values():
        lines += [f"![accuracy vs bits]({name})", ""]
    lines += margin_section(cells, read_csv(results_dir / "paper_reference.csv"))
    lines += ablation_section(read_csv(results_dir / "ablation.csv"), read_csv(results_dir / "accuracy.csv"),
                              read_csv(results_dir / "paper_ablation.csv"))
    lines += ort_quantize_section(read_csv(results_dir / "ort_quantize.csv"), cells)
    lines += calibration_time_section(cells)
    lines += latency_section(read_csv(results_dir / "ort_latency.csv"), read_csv(results_dir / "model_size.csv"),
                             plot_links.get("latency", {}))
    return "\n".join(lines).rstrip() + "\n"


def write_plots(results_dir: Path, docs_dir: Path) -> dict[str, dict[str, Path]]:
    """PNG plots into ``docs_dir``: {"accuracy": {model: path}, "latency": {provider: path}}."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    cells = AccuracyCells(read_csv(results_dir / "accuracy.csv"))
    written: dict[str, dict[str, Path]] = {"accuracy": {}, "latency": {}}
    eval_sets = [e for m, e in cells.tables() if m == PLOT_MODEL]
    if eval_sets:
        eval_set = PLOT_EVAL_SET if PLOT_EVAL_SET in eval_sets else eval_sets[0]
        path = docs_dir / ACCURACY_PLOT.format(model=PLOT_MODEL)
        plot_accuracy(cells, PLOT_MODEL, eval_set, path)
        written["accuracy"][PLOT_MODEL] = path
    latency_rows = read_csv(results_dir / "ort_latency.csv")
    for provider in sorted({r["provider"] for r in latency_rows if r["provider"]}):
        path = docs_dir / LATENCY_PLOT.format(provider=provider)
        plot_latency(latency_rows, provider, path)
        written["latency"][provider] = path
    return written


def replace_between_markers(text: str, body: str, source: Path) -> str:
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise SystemExit(f"{source} needs exactly one '{START}' followed by one '{END}'")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{body}{END}{tail}"


def write_report(results_dir: Path, readme: Path, docs_dir: Path, plots: bool = True) -> str:
    """Regenerate the README section (and, with ``plots``, the PNGs); returns the new section."""
    written = write_plots(results_dir, docs_dir) if plots else {}
    links = {kind: {key: Path(os.path.relpath(path, readme.parent)).as_posix() for key, path in paths.items()}
             for kind, paths in written.items()}
    body = build_section(results_dir, links)
    readme.write_text(replace_between_markers(readme.read_text(), body, readme))
    return body
