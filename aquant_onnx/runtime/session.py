"""Create ONNX Runtime inference sessions the way every aquant-onnx command needs them (DESIGN §5).

The ``com.aquant::BorderRound`` op library is registered whenever it is found, so any model
the exporter writes runs; a model that uses ``com.aquant`` ops without a library raises
:class:`RuntimeLibraryError` saying how to build it.

CUDA with a CPU-only library: ORT assigns BorderRound to the CPU EP (with device copies around
it) and the rest of the graph to CUDA. The codes are identical, only slower, so this warns
instead of failing: a wheel built on a machine without nvcc still runs every model on a GPU.
Likewise for the ConvInteger and uint8 MatMulInteger layers (exported by default for the CPU EP),
which the CUDA EP lacks kernels for.
"""

from __future__ import annotations

import functools
import logging
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aquant_onnx.errors import RuntimeLibraryError

logger = logging.getLogger(__name__)

PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
AQUANT_DOMAIN = "com.aquant"
X86_MACHINES = {"x86_64", "amd64", "i386", "i686", "x86"}
VNNI_CPU_FLAGS = {"avx512_vnni", "avx_vnni"}  # MLAS then sums u8·s8 products in int32 (vpdpbusd)


def _proto(model: Any) -> Any:
    """``model`` (path, serialized bytes or ModelProto) as a ModelProto, without external data."""
    import onnx

    if isinstance(model, (str, Path)):
        return onnx.load(str(model), load_external_data=False)
    if isinstance(model, bytes):
        return onnx.load_from_string(model)
    return model


def _nodes(model: Any) -> list[Any]:
    return list(model.graph.node) + [node for function in model.functions for node in function.node]


def uses_aquant_ops(model: Any) -> bool:
    """Whether ``model`` (path, serialized bytes or ModelProto) imports or uses the ``com.aquant`` domain."""
    model = _proto(model)
    if any(opset.domain == AQUANT_DOMAIN for opset in model.opset_import):
        return True
    return any(node.domain == AQUANT_DOMAIN for node in _nodes(model))


INTEGER_LAYER_OPS = ("ConvInteger", "MatMulInteger")  # the exporter's uint8 forms: no CUDA EP kernel


def uses_integer_layers(model: Any) -> bool:
    """Whether ``model`` has ConvInteger or MatMulInteger nodes (ONNX Runtime's CUDA EP has no kernel
    for the first, and the second only for int8 × int8, not the exporter's uint8)."""
    return any(node.op_type in INTEGER_LAYER_OPS and node.domain in ("", "ai.onnx") for node in _nodes(_proto(model)))


@functools.lru_cache(maxsize=1)
def int8_sums_can_saturate(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether ONNX Runtime's CPU EP adds u8·s8 products in saturating 16-bit pairs on this host:
    x86 without VNNI (tools/README §3). ``session.x64quantprecision`` then buys exact sums, at
    a cost: int8 QDQ models run slower on its U8U8 path. An x86 host whose CPU flags cannot be
    read counts as saturating; ARM's dot-product kernels are exact."""
    if platform.machine().lower() not in X86_MACHINES:
        return False
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        return True
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return not VNNI_CPU_FLAGS & set(flags)


def _provider_name(provider: Any) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


def session(
    model: str | Path | bytes,
    providers: Sequence[Any] | str = ("CPUExecutionProvider",),
    exact_int8: bool | None = None,
    intra_op_threads: int | None = None,
    profile_prefix: str | None = None,
) -> Any:
    """Open ``model`` (path, serialized bytes or ModelProto) in ONNX Runtime with the op library registered.

    ``providers`` takes ORT provider names/tuples or the aliases ``"cpu"``/``"cuda"``.
    ``exact_int8`` sets ``session.x64quantprecision`` so the CPU EP's integer kernels do
    not saturate in 16-bit intermediates; ``None`` (default): only where they would
    (:func:`int8_sums_can_saturate`, x86 without VNNI), as the flag slows int8 kernels down.
    ``intra_op_threads`` fixes ORT's intra-op thread pool size (``None``: ORT's default,
    one thread per physical core), e.g. for reproducible latency measurements.
    ``profile_prefix``: ORT profiles the session's runs into ``<prefix>_<date>.json``
    (``end_profiling()`` writes it).

    Raises:
        RuntimeLibraryError: the model uses ``com.aquant`` ops and the library is missing or
            cannot be loaded.
    """
    import onnxruntime as ort

    if isinstance(providers, str):
        providers = [PROVIDER_ALIASES.get(providers, providers)]
        if providers[0] == "CUDAExecutionProvider":
            providers.append("CPUExecutionProvider")
    providers = list(providers)
    if not isinstance(model, (str, Path, bytes)):  # an onnx.ModelProto
        model = model.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if exact_int8 or (exact_int8 is None and int8_sums_can_saturate()):
        options.add_session_config_entry("session.x64quantprecision", "1")
    _register_library(options, model, providers)
    if any(_provider_name(p) == "CUDAExecutionProvider" for p in providers) and uses_integer_layers(model):
        logger.warning("the model has ConvInteger/MatMulInteger layers, which ONNX Runtime's CUDA EP runs on the "
                       "CPU; for CUDA, re-export with --no-conv-integer.")
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=options, providers=providers)


def _register_library(options: Any, model: str | Path | bytes, providers: list[Any]) -> None:
    # Imported here so `python -m aquant_onnx.runtime.library` does not import itself twice.
    from .library import BUILD_HINT, has_cuda_kernel, library_path

    try:
        path = library_path()
    except RuntimeLibraryError as error:
        if uses_aquant_ops(model):
            raise RuntimeLibraryError(
                f"the model uses {AQUANT_DOMAIN}::BorderRound but its op library cannot be found ({error}); "
                f"{BUILD_HINT}, or export with --border-op onnx."
            ) from None
        return
    try:
        options.register_custom_ops_library(str(path))
    except Exception as error:  # ORT raises its own exception types for a bad library
        raise RuntimeLibraryError(
            f"ONNX Runtime cannot load the op library {path} ({error}); rebuild it: {BUILD_HINT}."
        ) from None
    wants_cuda = any(_provider_name(provider) == "CUDAExecutionProvider" for provider in providers)
    if wants_cuda and not has_cuda_kernel(path) and uses_aquant_ops(model):
        logger.warning(
            "%s has no CUDA kernel: BorderRound runs on the CPU EP (same codes, slower); "
            "rebuild with nvcc available: python -m aquant_onnx.runtime.library --build --cuda on",
            path,
        )
