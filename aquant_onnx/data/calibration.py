"""Calibration data: a folder of images or arrays keyed by model input names (DESIGN §1 ``--calib``).

:func:`load_calibration` picks the samples once (deterministically from ``seed``) and
checks them against the model inputs; the returned :class:`CalibrationSet` hands them out
in batches. Image folders are streamed: images are decoded when a batch is asked for, so
1,024 ImageNet images never sit in memory at once unless :meth:`CalibrationSet.materialize`
is called.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..errors import CalibrationDataError, ConfigError
from .images import find_images, load_images
from .metadata import check_input_size, infer_preprocessing
from .preprocess import Preprocessing

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

# Candidates examined at once while replacing unreadable files; bounds the wasted decoding.
CANDIDATE_CHUNK = 256


class ModelInput(NamedTuple):
    """One graph input: name, shape (``None`` for a dynamic dimension) and numpy dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype = np.dtype(np.float32)


def model_inputs_of(model: onnx.ModelProto) -> list[ModelInput]:
    """The real inputs of ``model`` (graph inputs that are not initializers)."""
    import onnx

    initializers = {init.name for init in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        shape = tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in tensor_type.shape.dim)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        inputs.append(ModelInput(value.name, shape, dtype))
    return inputs


class CalibrationSet:
    """Samples for calibration, handed out as ``{input name: float32/int array}`` batches.

    ``len()`` is the number of samples; ``skipped`` counts files that were not readable
    images (always 0 for arrays); ``source`` is where the data came from.
    """

    def __init__(self, input_names: Sequence[str], count: int, source: str, skipped: int = 0) -> None:
        self.input_names = list(input_names)
        self.count = count
        self.source = source
        self.skipped = skipped

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.count} samples from {self.source}, skipped {self.skipped})"

    def iter_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Consecutive batches of at most ``batch_size`` samples, in a fixed order."""
        if batch_size < 1:
            raise ConfigError(f"calibration batch size must be at least 1, got {batch_size}")
        for start in range(0, self.count, batch_size):
            yield self._batch(start, min(start + batch_size, self.count))

    def materialize(self) -> dict[str, np.ndarray]:
        """All samples at once (for small sets)."""
        return self._batch(0, self.count)

    def _batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        raise NotImplementedError


class ArrayCalibrationSet(CalibrationSet):
    """Samples held as arrays (from a ``.npz``, a dict or one array)."""

    def __init__(self, arrays: dict[str, np.ndarray], source: str) -> None:
        super().__init__(list(arrays), len(next(iter(arrays.values()))), source)
        self.arrays = arrays

    def _batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {name: array[start:stop] for name, array in self.arrays.items()}


class ImageFolderCalibrationSet(CalibrationSet):
    """Image files decoded and preprocessed batch by batch."""

    def __init__(self, files: list[Path], prep: Preprocessing, input_name: str, source: str, skipped: int) -> None:
        super().__init__([input_name], len(files), source, skipped)
        self.files = files
        self.prep = prep

    def _batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        paths = self.files[start:stop]
        images = load_images(paths, self.prep)
        for path, image in zip(paths, images):
            if image is None:
                raise CalibrationDataError(f"calibration image {path} was readable earlier but cannot be read now")
        return {self.input_names[0]: np.stack(images)}


def load_calibration(
    source: str | Path | np.ndarray | Mapping[str, np.ndarray],
    model_inputs: Sequence[ModelInput | tuple[Any, ...]],
    prep: Preprocessing | None = None,
    num: int = 1024,
    seed: int = 0,
) -> CalibrationSet:
    """Calibration samples from a folder of images, a ``.npz`` file, a dict of arrays or one array.

    ``model_inputs``: ``(name, shape[, dtype])`` of each model input (see
    :func:`model_inputs_of`). Selection: with ``num`` >= available samples all are used in
    sorted order; otherwise ``numpy.random.default_rng(seed).permutation(count)`` is walked
    and the first ``num`` usable samples (unreadable images are replaced by the next
    candidates) are kept, in sorted order. Arrays have samples on their first axis.

    Raises:
        CalibrationDataError: missing path, no readable images, keys/shapes/dtypes that do
            not fit the model inputs.
    """
    if num < 1:
        raise ConfigError(f"number of calibration samples must be at least 1, got {num} (--num-calib)")
    inputs = [ModelInput(*entry) for entry in model_inputs]
    if isinstance(source, np.ndarray):
        if len(inputs) != 1:
            raise CalibrationDataError(
                f"one calibration array given but the model has inputs {', '.join(i.name for i in inputs)}; "
                "pass a dict or .npz keyed by input name"
            )
        return _array_set({inputs[0].name: source}, inputs, num, seed, "array")
    if isinstance(source, Mapping):
        return _array_set(dict(source), inputs, num, seed, "dict")
    path = Path(source)
    if not path.exists():
        raise CalibrationDataError(f"calibration data {path} does not exist; pass a folder of images or a .npz file")
    if path.is_dir():
        return _image_folder_set(path, inputs, prep, num, seed)
    if path.suffix.lower() != ".npz":
        raise CalibrationDataError(f"calibration data {path} is neither a folder of images nor a .npz file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise CalibrationDataError(f"cannot read calibration file {path} as .npz: {error}") from None
    return _array_set(arrays, inputs, num, seed, str(path))


def _array_set(
    arrays: dict[str, Any], inputs: list[ModelInput], num: int, seed: int, origin: str
) -> ArrayCalibrationSet:
    """Check ``arrays`` against ``inputs`` (names, trailing shapes, castable dtypes), then subset."""
    names = [i.name for i in inputs]
    missing = [name for name in names if name not in arrays]
    extra = [key for key in arrays if key not in names]
    if missing or extra:
        raise CalibrationDataError(
            f"calibration data {origin} must hold exactly the model inputs {names}: "
            f"missing {missing}, unexpected {extra}"
        )
    checked: dict[str, np.ndarray] = {}
    for name, want_shape, want_dtype in inputs:
        array = np.asarray(arrays[name])
        where = f"{origin}['{name}']"
        if array.dtype == object or not np.can_cast(array.dtype, want_dtype, casting="same_kind"):
            raise CalibrationDataError(
                f"{where} has dtype {array.dtype}, which cannot be cast to the input's {want_dtype}"
            )
        sample_shape = tuple(want_shape[1:])
        fits = array.ndim == len(want_shape) and all(
            not _is_static(want) or want == got for want, got in zip(sample_shape, array.shape[1:])
        )
        if not fits:
            raise CalibrationDataError(
                f"{where} has shape {list(array.shape)} but input '{name}' takes samples of shape "
                f"{_format_dims(sample_shape)} stacked on the first axis"
            )
        checked[name] = array.astype(want_dtype, copy=False)
    counts = {name: len(array) for name, array in checked.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise CalibrationDataError(
            f"calibration data {origin} needs the same, non-zero sample count per input, got {counts}"
        )
    count = next(iter(counts.values()))
    if num < count:
        keep = np.sort(np.random.default_rng(seed).permutation(count)[:num])
        checked = {name: array[keep] for name, array in checked.items()}
    return ArrayCalibrationSet(checked, origin)


def _image_folder_set(
    folder: Path, inputs: list[ModelInput], prep: Preprocessing | None, num: int, seed: int
) -> ImageFolderCalibrationSet:
    """Pick ``num`` readable images of ``folder`` (see :func:`load_calibration`)."""
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise CalibrationDataError(
            f"an image folder ({folder}) calibrates models with one NCHW image input; this model has inputs "
            f"{[(i.name, _format_dims(i.shape)) for i in inputs]}; pass a .npz keyed by input name instead"
        )
    image_input = inputs[0]
    if prep is None:
        prep = infer_preprocessing(image_input.shape)
    check_input_size(prep, image_input.shape, "the preprocessing")
    files = find_images(folder)
    if not files:
        raise CalibrationDataError(f"calibration folder {folder} contains no image files (jpg, jpeg, png, bmp, webp)")
    order = np.arange(len(files)) if num >= len(files) else np.random.default_rng(seed).permutation(len(files))
    chosen: list[int] = []
    examined = 0
    while len(chosen) < num and examined < len(order):
        candidates = order[examined : examined + min(num - len(chosen), CANDIDATE_CHUNK)]
        images = load_images([files[i] for i in candidates], prep)
        chosen.extend(int(i) for i, image in zip(candidates, images) if image is not None)
        examined += len(candidates)
    skipped = examined - len(chosen)
    if not chosen:
        raise CalibrationDataError(f"none of the {examined} image files in calibration folder {folder} can be read")
    if skipped:
        log.warning("skipped %d of %d files that are not readable images in %s", skipped, examined, folder)
    if len(chosen) < num:
        log.info("using all %d readable images of %s (fewer than the %d asked for)", len(chosen), folder, num)
    picked = [files[i] for i in sorted(chosen)]
    return ImageFolderCalibrationSet(picked, prep, image_input.name, str(folder), skipped)


def _is_static(dim: Any) -> bool:
    return isinstance(dim, (int, np.integer)) and dim > 0


def _format_dims(shape: Sequence[Any]) -> str:
    return "x".join(str(d) if _is_static(d) else "?" for d in shape)
