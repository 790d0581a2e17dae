"""Which preprocessing a model wants: flags, its own metadata, a models.json beside it, or its input shape.

Order of precedence (first that applies wins):

1. ``preset`` and ``overrides`` given by the user (overrides apply on top of the preset or,
   without one, on top of what the model says);
2. ``aquant.preprocess.*`` entries of the model's ``metadata_props`` (written by our exporter);
3. the entry of a ``models.json`` next to the model file whose ``file`` is the model's name;
4. a guess from the static input size: 224 -> ``imagenet``, 32 -> ``cifar10`` (logged warning).

The result is checked against the model's static input height/width.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CalibrationDataError, ConfigError, UnsupportedModelError
from .preprocess import METADATA_PREFIX, PRESETS, Preprocessing

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

OVERRIDE_FLAGS = {"size": "--size", "resize": "--resize", "mean": "--mean", "std": "--std"}


def preprocessing_for_model(
    model: onnx.ModelProto | str | Path,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    model_path: str | Path | None = None,
) -> Preprocessing:
    """The preprocessing for ``model``'s image input (see the module docstring for the order).

    ``model`` is a loaded ModelProto or a path; ``model_path`` (implied by a path) lets a
    ``models.json`` next to the file be found. ``overrides`` are keyword arguments of
    :meth:`Preprocessing.with_overrides` (``size``, ``resize``, ``mean``, ``std``, ...);
    ``None`` values are ignored. ``.dataset`` of the result names the label space
    (``imagenet``/``cifar10``) when known.

    Raises:
        CalibrationDataError: the preprocessing's size differs from the model's input H/W.
        ConfigError: unknown preset, bad override values.
    """
    if not hasattr(model, "graph"):
        import onnx

        model_path = Path(model)
        try:
            model = onnx.load(str(model_path), load_external_data=False)
        except (OSError, ValueError) as error:  # protobuf DecodeError is a ValueError subclass
            raise UnsupportedModelError(f"cannot load ONNX model {model_path}: {error}") from None
    overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
    shape = image_input_shape(model)
    if preset is not None:
        prep, source = Preprocessing.from_preset(preset), f"--preset {preset}"
    else:
        prep, source = _stored_preprocessing(model, model_path)
        if prep is None:
            prep, source = infer_preprocessing(shape), "a guess from the input shape"
    if overrides:
        prep = prep.with_overrides(**overrides)
        source = " ".join(f"{OVERRIDE_FLAGS.get(k, k)} {_flag_value(v)}" for k, v in overrides.items())
    check_input_size(prep, shape, source)
    log.debug("preprocessing from %s: %s", source, prep)
    return prep


def image_input_shape(model: onnx.ModelProto) -> tuple[int | None, ...]:
    """Shape of the model's single 4-D (NCHW) input; ``None`` for dynamic dimensions."""
    from .calibration import model_inputs_of

    inputs = model_inputs_of(model)
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise CalibrationDataError(
            f"image preprocessing needs a model with one NCHW input, this one has "
            f"{[(i.name, list(i.shape)) for i in inputs]}; calibrate it with a .npz keyed by input name"
        )
    return inputs[0].shape


def infer_preprocessing(shape: Sequence[int | None]) -> Preprocessing:
    """Guess from an NCHW input shape: H = W = 224 -> ``imagenet``, 32 -> ``cifar10``, logged as a warning."""
    height, width = shape[2], shape[3]
    by_size = {224: "imagenet", 32: "cifar10"}
    if height != width or height not in by_size:
        raise CalibrationDataError(
            f"cannot guess the preprocessing of a model with input {_dims(shape)}; "
            f"pass --preset ({', '.join(PRESETS)}) and --size/--mean/--std as needed"
        )
    name = by_size[height]
    log.warning(
        "the model carries no preprocessing; assuming preset '%s' from its %dx%d input (pass --preset to choose)",
        name,
        height,
        width,
    )
    return PRESETS[name]


def check_input_size(prep: Preprocessing, shape: Sequence[Any], source: str) -> None:
    """Raise :class:`CalibrationDataError` when ``prep`` gives another C/H/W than the static ``shape``."""
    for want, got in zip(shape[1:], prep.input_shape):
        if isinstance(want, int) and want > 0 and want != got:
            raise CalibrationDataError(
                f"model expects {_dims(shape[1:])} but {source} gives {_dims(prep.input_shape)}; "
                f"pass --size {shape[2]} or a matching --preset"
            )


def models_json_entry(model_path: str | Path) -> dict[str, Any] | None:
    """The entry of ``models.json`` next to ``model_path`` whose ``file`` is the model's file name."""
    model_path = Path(model_path)
    catalog = model_path.parent / "models.json"
    if not catalog.is_file():
        return None
    try:
        entries = json.loads(catalog.read_text()).get("models", [])
    except (OSError, ValueError, AttributeError) as error:
        log.warning("ignoring unreadable %s: %s", catalog, error)
        return None
    return next((entry for entry in entries if entry.get("file") == model_path.name), None)


def _stored_preprocessing(model: onnx.ModelProto, model_path: str | Path | None) -> tuple[Preprocessing | None, str]:
    """Preprocessing from the model's metadata, else from a models.json entry, else ``(None, "")``."""
    props = {prop.key: prop.value for prop in model.metadata_props}
    if any(key.startswith(METADATA_PREFIX) for key in props):
        return Preprocessing.from_metadata(props), "the model's metadata"
    if model_path is not None:
        entry = models_json_entry(model_path)
        if entry is not None:
            try:
                return Preprocessing.from_models_json_entry(entry), "models.json"
            except (KeyError, TypeError) as error:
                raise ConfigError(f"models.json entry for {Path(model_path).name} lacks or mistypes {error}") from None
    return None, ""


def _dims(shape: Sequence[Any]) -> str:
    return "x".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in shape)


def _flag_value(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
