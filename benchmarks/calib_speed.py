"""Iterations per second of the reconstruction loop, eager vs compiled (DESIGN §7).

    python -m benchmarks.calib_speed --model resnet20 --blocks 1,5,9 --iters 100 \
        [--engines eager,compiled] [--methods qdrop,aquant] [--act-drop P]

Per block: RTN W4A4 quantizers, cache of ``--num-calib`` samples, one reconstruction step of the
method (QDrop: AdaRound + LSQ; AQuant: the same plus border functions) at batch 32, set up as
``BlockMethod.reconstruct`` does: the QDrop input mix and the quantizers' activation dropout
both use the method's drop probability (0.5; ``--act-drop`` overrides the quantizers', recorded
in the ``act_drop`` column). The first ``--warmup`` iterations (compilation) are not timed.
Appends a row per (model, method, block, engine) to benchmarks/results/calib_speed.csv and
rewrites calib_speed.md.
"""

from __future__ import annotations

import argparse
import time

import torch

from aquant_onnx.config import Engine, QuantConfig
from aquant_onnx.data.calibration import load_calibration, model_inputs_of
from aquant_onnx.data.metadata import preprocessing_for_model
from aquant_onnx.graph.load import load_model
from aquant_onnx.pipeline import resolve_device
from aquant_onnx.recon.attach import attach_quantizers, init_activation_ranges
from aquant_onnx.recon.block_methods import CACHE_CHUNK
from aquant_onnx.recon.cache import cache_from_model_inputs, load_model_inputs
from aquant_onnx.recon.loop import LoopSettings, optimize_unit
from aquant_onnx.recon.methods import CalibrationContext, get_method
from aquant_onnx.torchgraph.executor import TorchGraph

from .models import MODELS
from .results_io import RESULTS, append_csv, calibration_set, markdown_table, run_metadata

FIELDS = ["model", "method", "block", "layers", "engine", "batch", "iters", "it_per_s", "device", "threads", "torch", "date",
          "act_drop", "seed", "num_calib", "calib_set", "onnxruntime", "commit"]


def measure(model_key: str, method_name: str, block_ids: list[int], engines: list[str], iters: int, warmup: int, num_calib: int,
            device_name: str, act_drop: float | None = None) -> list[dict]:
    spec = MODELS[model_key]
    canonical = load_model(spec["path"])
    prep = preprocessing_for_model(canonical, model_path=str(spec["path"]))
    calib = load_calibration(spec["calib"], model_inputs_of(canonical), prep, num_calib, 0)
    rows = []
    for engine in engines:
        config = QuantConfig(method=method_name, w_bits=4, a_bits=4, num_calib=num_calib)
        config.recon.engine = Engine(engine)
        config.recon.iters = iters + warmup
        device = resolve_device(device_name)
        graph = TorchGraph(canonical)
        bits = attach_quantizers(graph, config)
        graph.to(device)
        ctx = CalibrationContext(canonical, graph, calib, config, bits, device)
        init_activation_ranges(graph, ctx.batches(), ctx.num_batches())
        method = get_method(config.method)
        units = method.units(ctx)
        inputs = load_model_inputs(ctx)
        for block in block_ids:
            unit = units[block]
            cache = cache_from_model_inputs(graph, unit, inputs, device, CACHE_CHUNK)
            method.prepare_unit(ctx, unit)
            quantizers = method.unit_quantizers(ctx, unit)
            drop = method.input_drop_prob(ctx)
            quantizer_drop = drop if act_drop is None else act_drop
            for q in quantizers:
                if hasattr(q, "drop_prob"):  # activation and border quantizers, as in reconstruct()
                    q.drop_prob = quantizer_drop
            by_kind: dict = {}
            for q in quantizers:
                for kind, params in q.learnable_parameters().items():
                    by_kind.setdefault(kind, []).extend(params)
            groups = method.param_groups(ctx, by_kind)
            regularized = [q for q in quantizers if hasattr(q, "regularizer")]
            timings = []
            for count in (warmup, iters):
                settings = LoopSettings(count, 32, drop, 0.01, 0.2, 20.0, 2.0, Engine(engine), 0)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                optimize_unit(graph, unit, cache, groups, regularized, quantizers, settings, device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                timings.append(time.perf_counter() - start)
            rows.append({
                "model": model_key, "method": method_name, "block": block, "layers": len(unit.layer_names), "engine": engine, "batch": 32,
                "iters": iters, "it_per_s": round(iters / timings[1], 2), "threads": torch.get_num_threads(),
                "act_drop": quantizer_drop, "seed": config.seed, "num_calib": num_calib,
                "calib_set": calibration_set(spec["calib"]), **run_metadata(device.type),
            })
            print(rows[-1], flush=True)
    return rows


def write(rows: list[dict]) -> None:
    all_rows = append_csv(RESULTS / "calib_speed.csv", FIELDS, rows)
    lines = ["# Reconstruction loop speed (one reconstruction step, batch 32)", "", *markdown_table(all_rows, FIELDS)]
    (RESULTS / "calib_speed.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20", choices=sorted(MODELS),
                        help="shared model whose blocks are timed")
    parser.add_argument("--blocks", default="1,5,9", help="comma-separated block indices (inspect --blocks)")
    parser.add_argument("--engines", default="eager,compiled", help="comma-separated loop engines to compare")
    parser.add_argument("--methods", default="qdrop", help="comma-separated: qdrop, aquant, brecq, flexround")
    parser.add_argument("--iters", type=int, default=100, help="timed iterations per block")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations first (compilation, caches)")
    parser.add_argument("--num-calib", type=int, default=256, help="calibration images cached for the blocks")
    parser.add_argument("--device", default="auto", help="cpu, or auto (CUDA when torch sees it)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--act-drop", type=float, default=None,
                        help="activation dropout of the quantizers (default: the method's, as in calibration)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for method in args.methods.split(","):  # rows written per method: a run stopped later keeps them
        write(measure(args.model, method, [int(b) for b in args.blocks.split(",")], args.engines.split(","),
                      args.iters, args.warmup, args.num_calib, args.device, args.act_drop))


if __name__ == "__main__":
    main()
