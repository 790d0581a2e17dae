"""Create ONNX Runtime inference sessions the way every aquant-onnx command needs them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def session(
    model: str | Path | bytes,
    providers: Sequence[Any] | str = ("CPUExecutionProvider",),
    exact_int8: bool = True,
) -> Any:
    """Open ``model`` (path or serialized bytes) in ONNX Runtime.

    ``providers`` takes ORT provider names/tuples or the aliases ``"cpu"``/``"cuda"``.
    ``exact_int8`` sets ``session.x64quantprecision`` so the CPU EP's integer kernels do
    not saturate in 16-bit intermediates on hosts without VNNI (tools/README §3).
    """
    import onnxruntime as ort

    if isinstance(providers, str):
        providers = [PROVIDER_ALIASES.get(providers, providers)]
        if providers[0] == "CUDAExecutionProvider":
            providers.append("CPUExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if exact_int8:
        options.add_session_config_entry("session.x64quantprecision", "1")
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=options, providers=list(providers))
