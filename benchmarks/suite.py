"""The benchmark suites: typed lists of jobs that ``python -m benchmarks run --suite NAME`` executes.

A :class:`Job` is one in-process call of a benchmark module's ``main`` with fixed arguments,
plus the result rows that prove it has run (``--resume`` skips a job whose rows all exist).
The accuracy suite's ResNet-20 jobs are the published table; ImageNet models are GPU jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .models import MODELS
from .results_io import RESULTS, read_csv

SUITES = ("accuracy", "ablation", "speed", "latency", "parity", "ort-quantize")

# The published accuracy table (DESIGN §7): methods x bit settings, two seeds where the
# methods are stochastic enough to need them.
METHODS = ("rtn", "adaround", "brecq", "qdrop", "flexround", "aquant")
PUBLISHED_BITS = ((4, 4), (2, 4), (3, 3), (2, 2))
SEEDS = (1005, 1006)
TWO_SEED_METHODS = frozenset({"brecq", "qdrop", "aquant"})
GPU_METHODS = ("rtn", "qdrop", "aquant")  # the paper's headline comparison, at its ImageNet schedule
GPU_MODELS = ("mobilenet_v2", "efficientnet_lite0")
ACCURACY_BATCH = 32
ACCURACY_NUM_CALIB = 1000
# AQuant ablations (DESIGN §3 options; the paper's Table 3 and the border learning rate), on
# ResNet-20 at a reduced schedule (one AQuant run at 2000 iterations takes 15–50 min on 2 CPU cores,
# with two runs side by side), then a few again at the published schedule.
ABLATION_OPTIONS = ("border=linear", "border=constant", "border_fusion=false", "border_granularity=channel",
                    "lr_border=0.01", "lr_border=0.0001", "lr_border=0", "grad_through_border=true")
ABLATION_BITS = ((3, 3), (2, 2))
ABLATION_ITERS = 500
ABLATION_SEED = 1005
# At the published schedule: AQuant border schedules and QDrop's activation-range initialisation
# (the official QDrop code fits the activation grids on the float model).
LONG_ABLATION_ITERS = 2000
LONG_ABLATIONS = (
    ("aquant", (2, 2), 1005, "border_warmup=0.2"), ("aquant", (2, 2), 1006, "border_warmup=0.2"),
    ("aquant", (3, 3), 1005, "border_warmup=0.2"), ("aquant", (3, 3), 1006, "border_warmup=0.2"),
    ("aquant", (2, 2), 1005, "lr_border_cosine=true"), ("aquant", (2, 2), 1005, "border_clamp_b0=true"),
    ("aquant", (3, 3), 1005, "border_clamp_b0=true"),
    ("aquant", (2, 2), 1005, "drop_prob=0"), ("aquant", (2, 2), 1005, "lr_border=0.00025"),
    ("qdrop", (2, 4), 1005, "act_ranges_from_float=true"), ("qdrop", (2, 4), 1006, "act_ranges_from_float=true"),
    ("qdrop", (2, 2), 1005, "act_ranges_from_float=true"), ("aquant", (2, 2), 1005, "act_ranges_from_float=true"),
    # the border-form ablations (500 it above) again at the published schedule
    *(("aquant", bits, 1005, options) for options in ("border=linear", "border_fusion=false",
                                                        "border_granularity=channel") for bits in ABLATION_BITS),
)
ORT_QUANTIZE_BITS = ((8, 8), (4, 8), (4, 4))
ORT_QUANTIZE_CALIBRATE = ("minmax", "percentile")
ORT_QUANTIZE_NUM_CALIB = 1000
ORT_QUANTIZE_SEED = 1005


@dataclass(frozen=True)
class Job:
    """One call of ``<module>.main()`` with ``argv``; ``expected`` rows of ``results`` show it has run.

    ``expected`` holds field subsets: the job is done when each one matches some row of the
    CSV (values compared as strings). ``resumable`` modules also get ``--resume`` themselves,
    so a job that stopped half-way redoes only its missing rows.
    """

    suite: str
    name: str
    module: str
    argv: tuple[str, ...]
    results: str
    expected: tuple[Mapping[str, str], ...]
    gpu: bool = False
    resumable: bool = False
    note: str = ""

    def done(self, results_dir: Path = RESULTS) -> bool:
        rows = read_csv(results_dir / self.results)
        return all(any(all(row.get(k) == v for k, v in want.items()) for row in rows) for want in self.expected)

    def command(self, resume: bool) -> list[str]:
        """The module's argv (what ``python -m <module>`` would be given)."""
        return [*self.argv, *(["--resume"] if resume and self.resumable else [])]


def _rows(**columns: object) -> dict[str, str]:
    return {k: str(v) for k, v in columns.items()}


def accuracy_jobs(iters: int, gpu_iters: int) -> list[Job]:
    """ResNet-20 on cifar10_test_9k + cifar10_test (CPU), MobileNetV2 / EfficientNet-Lite0 on imagenet_val (GPU)."""
    jobs = []
    plans = [("resnet20", METHODS, iters, False)] + [(model, GPU_METHODS, gpu_iters, True) for model in GPU_MODELS]
    for model, methods, model_iters, gpu in plans:
        evals = tuple(MODELS[model]["evals"])
        for method in methods:
            seeds = SEEDS if method in TWO_SEED_METHODS and not gpu else SEEDS[:1]
            run_iters = 0 if method == "rtn" else model_iters  # accuracy.py records RTN with 0 iterations
            for w_bits, a_bits in PUBLISHED_BITS:
                for seed in seeds:
                    jobs.append(Job(
                        suite="accuracy", name=f"{model} {method} W{w_bits}A{a_bits} seed {seed} iters {run_iters}",
                        module="benchmarks.accuracy",
                        argv=("--model", model, "--methods", method, "--bits", f"{w_bits}/{a_bits}", "--seeds",
                              str(seed), "--iters", str(model_iters), "--eval", ",".join(evals), "--batch",
                              str(ACCURACY_BATCH), "--num-calib", str(ACCURACY_NUM_CALIB)),
                        results="accuracy.csv",
                        expected=tuple(_rows(model=model, method=method, w_bits=w_bits, a_bits=a_bits, seed=seed,
                                             iters=run_iters, batch=ACCURACY_BATCH, num_calib=ACCURACY_NUM_CALIB,
                                             eval_set=name) for name in evals),
                        gpu=gpu, resumable=True, note=f"calibration set {Path(MODELS[model]['calib']).name}"))
    return jobs


def _ablation_job(method: str, bits: tuple[int, int], seed: int, iters: int, options: str) -> Job:
    """One ResNet-20 run with ``options`` (ablation.csv), or without (the default, accuracy.csv)."""
    model, evals = "resnet20", tuple(MODELS["resnet20"]["evals"])
    w_bits, a_bits = bits
    expected = tuple(_rows(model=model, method=method, **({"options": options} if options else {}), w_bits=w_bits,
                           a_bits=a_bits, seed=seed, iters=iters, batch=ACCURACY_BATCH, num_calib=ACCURACY_NUM_CALIB,
                           eval_set=name) for name in evals)
    schedule = "" if iters == ABLATION_ITERS and seed == ABLATION_SEED else f" seed {seed} iters {iters}"
    return Job(
        suite="ablation", name=f"{model} {method} W{w_bits}A{a_bits} {options or 'default'}{schedule}",
        module="benchmarks.accuracy",
        argv=("--model", model, "--seeds", str(seed), "--iters", str(iters), "--eval", ",".join(evals), "--batch",
              str(ACCURACY_BATCH), "--num-calib", str(ACCURACY_NUM_CALIB), "--methods", method, "--bits",
              f"{w_bits}/{a_bits}", *(("--option", options) if options else ())),
        results="ablation.csv" if options else "accuracy.csv", expected=expected, resumable=True)


def ablation_jobs() -> list[Job]:
    """ResNet-20 AQuant variants at W3A3 / W2A2 beside the default AQuant and QDrop of the same schedule,
    then the schedule experiments at the published schedule (their defaults are accuracy-suite jobs)."""
    jobs = []
    for options in ("", *ABLATION_OPTIONS):
        for method in ("qdrop", "aquant") if not options else ("aquant",):
            for bits in ABLATION_BITS:
                jobs.append(_ablation_job(method, bits, ABLATION_SEED, ABLATION_ITERS, options))
    jobs += [_ablation_job(method, bits, seed, LONG_ABLATION_ITERS, options)
             for method, bits, seed, options in LONG_ABLATIONS]
    return jobs


def speed_jobs() -> list[Job]:
    """Reconstruction-loop iterations/s per block, eager vs compiled (calib_speed.py defaults)."""
    blocks, engines, speed_iters = (1, 5, 9), ("eager", "compiled"), 100
    jobs = []
    for model, gpu in (("resnet20", False), ("mobilenet_v2", True)):
        for method in ("qdrop", "aquant"):
            jobs.append(Job(
                suite="speed", name=f"{model} {method} blocks {','.join(map(str, blocks))} {'/'.join(engines)}",
                module="benchmarks.calib_speed",
                argv=("--model", model, "--methods", method, "--blocks", ",".join(map(str, blocks)), "--engines",
                      ",".join(engines), "--iters", str(speed_iters)),
                results="calib_speed.csv",
                expected=tuple(_rows(model=model, method=method, block=b, engine=e, iters=speed_iters)
                               for b in blocks for e in engines),
                gpu=gpu))
    return jobs


def latency_jobs() -> list[Job]:
    """ORT latency of every model variant at batch 1 and 32, the BorderRound kernel, and exported model sizes;
    on CPU also with one intra-op thread (the shared 2-core host's second core is at times contended)."""
    from .ort_latency import KERNEL_MODEL, VARIANTS

    batches = (1, 32)
    kernels = ("QuantizeLinear", "BorderRound_channel", "BorderRound_im2col3x3", "BorderRound_im2col3x3s2")
    jobs = []
    for provider, threads, gpu in (("cpu", 2, False), ("cpu", 1, False), ("cuda", 2, True)):
        suffix = "" if threads == 2 else f", {threads} thread"
        setting = ("--provider", provider, "--threads", str(threads))
        for model in ("resnet20", "mobilenet_v2"):
            jobs.append(Job(
                suite="latency", name=f"{model} {provider} latency{suffix}", module="benchmarks.ort_latency",
                argv=("--models", model, "--batches", "1,32", *setting), results="ort_latency.csv",
                expected=tuple(_rows(model=model, variant=v, batch=b, provider=provider, threads=threads)
                               for v in VARIANTS for b in batches),
                gpu=gpu, resumable=True))
        jobs.append(Job(
            suite="latency", name=f"BorderRound kernel {provider}{suffix}", module="benchmarks.ort_latency",
            argv=("--kernel-only", "--batches", "1,32", *setting), results="ort_latency.csv",
            expected=tuple(_rows(model=KERNEL_MODEL, variant=k, batch=b, provider=provider, threads=threads)
                           for k in kernels for b in batches),
            gpu=gpu, resumable=True))
    jobs.append(Job(
        suite="latency", name="exported model sizes", module="benchmarks.model_size",
        argv=("--models", "resnet20,mobilenet_v2"), results="model_size.csv",
        expected=tuple(_rows(model=m, variant=v) for m in ("resnet20", "mobilenet_v2") for v in VARIANTS),
        resumable=True))
    return jobs


def parity_jobs() -> list[Job]:
    """Torch simulation vs ORT custom op vs standard-op form (the settings of parity.md's rows)."""
    plans = [("resnet20", "quadratic", "im2col", 50, 128), ("mobilenet_v2", "linear", "channel", 20, 64),
             ("mobilenet_v2", "linear", "im2col", 20, 64)]
    return [Job(suite="parity", name=f"{model} {border} {granularity}", module="benchmarks.parity",
                argv=("--model", model, "--border", border, "--granularity", granularity, "--iters", str(iters),
                      "--num-calib", str(num_calib)),
                results="parity.csv",
                expected=(_rows(model=model, border=border, granularity=granularity, w_bits=4, a_bits=4,
                                iters=iters, num_calib=num_calib),))
            for model, border, granularity, iters, num_calib in plans]


def ort_quantize_jobs() -> list[Job]:
    """ONNX Runtime quantize_static (MinMax, Percentile) at W8A8 / W4A8 / W4A4 on the accuracy eval sets."""
    jobs = []
    for model in ("resnet20", "mobilenet_v2"):
        evals = tuple(MODELS[model]["evals"])
        settings = [("fp32", 32, 32)] + [(c, w, a) for c in ORT_QUANTIZE_CALIBRATE for w, a in ORT_QUANTIZE_BITS]
        jobs.append(Job(
            suite="ort-quantize", name=f"{model} quantize_static", module="benchmarks.ort_quantize",
            argv=("--models", model, "--bits", ",".join(f"{w}/{a}" for w, a in ORT_QUANTIZE_BITS), "--calibrate",
                  ",".join(ORT_QUANTIZE_CALIBRATE), "--num-calib", str(ORT_QUANTIZE_NUM_CALIB), "--seed",
                  str(ORT_QUANTIZE_SEED)),
            results="ort_quantize.csv",
            expected=tuple(_rows(model=model, calibrate=c, w_bits=w, a_bits=a, num_calib=ORT_QUANTIZE_NUM_CALIB,
                                 seed=ORT_QUANTIZE_SEED, eval_set=name) for c, w, a in settings for name in evals),
            resumable=True, note=f"calibration set {Path(MODELS[model]['calib']).name}"))
    return jobs


def suite_jobs(suite: str, iters: int = 2000, gpu_iters: int = 20000) -> list[Job]:
    """The jobs of ``suite`` (one of :data:`SUITES`), in the order they run."""
    builders: dict[str, Callable[[], list[Job]]] = {
        "accuracy": lambda: accuracy_jobs(iters, gpu_iters), "ablation": ablation_jobs, "speed": speed_jobs, "latency": latency_jobs,
        "parity": parity_jobs, "ort-quantize": ort_quantize_jobs,
    }
    if suite not in builders:
        raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    return builders[suite]()
