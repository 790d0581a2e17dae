"""Top-1/top-5 accuracy of an ONNX classifier through ONNX Runtime on an ImageFolder (DESIGN §1 ``eval``).

Layout: ``data_dir/<class folder>/<images>`` (sub-folders inside a class folder count too).
Folder names map to model output indices through a class list TSV
(``index<TAB>name<TAB>name...``; a folder may match the second or the third column), so a
subset such as ``imagenet_val`` (629 of 1,000 class folders) is numbered correctly.

Order and subsets are deterministic: samples are sorted by (class folder, path); ``limit=k``
of ``n`` samples keeps indices ``(i * n) // k`` for ``i < k`` (an even stride over the
sorted list, so every class keeps about the same share).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import find_images, load_images
from ..data.metadata import check_input_size, preprocessing_for_model
from ..data.preprocess import Preprocessing
from ..errors import AquantError, CalibrationDataError, ConfigError, RuntimeLibraryError, UnsupportedModelError

log = logging.getLogger(__name__)

TOP_K = 5


@dataclass(frozen=True)
class EvalResult:
    """Accuracy in percent over ``count`` images; ``skipped`` unreadable files were left out."""

    top1: float
    top5: float
    count: int
    skipped: int
    provider: str
    seconds: float


def evaluate(
    model_path: str | Path,
    data_dir: str | Path,
    classes: str | Path | None = None,
    limit: int | None = None,
    provider: str = "cpu",
    batch_size: int = 32,
    prep: Preprocessing | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Classify every image of the ImageFolder ``data_dir`` with ``model_path`` and score it.

    Args:
        classes: class list TSV; by default ``<dataset>_classes.tsv`` in ``data_dir`` or its
            parent (dataset from the model's preprocessing), else sorted folder names.
        limit: evaluate only this many images, an even stride over the sorted list.
        provider: ``"cpu"``, ``"cuda"`` or an ORT provider name; CUDA must not fall back to CPU.
        batch_size: images per run; a model with a fixed batch dimension uses that instead.
        prep: preprocessing; by default the model's (see ``preprocessing_for_model``).
        progress: called as ``progress(images_done, images_total)`` after each batch.

    Raises:
        CalibrationDataError: missing/empty data, folders not in the class list.
        RuntimeLibraryError: CUDA requested but not used by ONNX Runtime.
    """
    from ..runtime import session

    model_path, data_dir = Path(model_path), Path(data_dir)
    if not model_path.is_file():
        raise UnsupportedModelError(f"model file {model_path} does not exist")
    if not data_dir.is_dir():
        raise CalibrationDataError(f"evaluation data folder {data_dir} does not exist")
    if prep is None:
        prep = preprocessing_for_model(model_path)
    samples = _labelled_images(data_dir, _class_index(data_dir, classes, prep.dataset))
    if limit is not None and limit < 1:
        raise ConfigError(f"evaluation limit must be at least 1 image, got {limit} (--limit)")
    if limit is not None and limit < len(samples):
        samples = [samples[(i * len(samples)) // limit] for i in range(limit)]

    try:
        sess = session(model_path, providers=provider)
    except AquantError:
        raise
    except Exception as error:  # ORT raises its own pybind exception types for bad models
        raise UnsupportedModelError(f"ONNX Runtime cannot load {model_path}: {error}") from error
    used_provider = sess.get_providers()[0]
    if provider.lower() in ("cuda", "cudaexecutionprovider") and used_provider != "CUDAExecutionProvider":
        raise RuntimeLibraryError(
            f"CUDA requested but ONNX Runtime fell back to CPU (providers {sess.get_providers()}); "
            "install onnxruntime-gpu matching your CUDA/cuDNN or pass --provider cpu"
        )
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise UnsupportedModelError(
            f"evaluation needs a classifier with one image input, {model_path} has {len(inputs)}"
        )
    input_name, input_shape = inputs[0].name, inputs[0].shape
    check_input_size(prep, input_shape, "the given preprocessing")
    fixed_batch = input_shape[0] if isinstance(input_shape[0], int) and input_shape[0] > 0 else None
    run_batch = fixed_batch or batch_size

    start = time.perf_counter()
    top1 = top5 = count = skipped = 0
    paths = [path for path, _ in samples]
    labels = np.array([label for _, label in samples], dtype=np.int64)
    for offset, images in _prefetched_batches(paths, prep, run_batch):
        readable = [i for i, image in enumerate(images) if image is not None]
        skipped += len(images) - len(readable)
        if readable:
            batch = np.stack([images[i] for i in readable])
            logits = _run(sess, input_name, batch, fixed_batch)
            batch_labels = labels[offset + np.asarray(readable)]
            _check_label_range(batch_labels, logits.shape[1], model_path)
            k = min(TOP_K, logits.shape[1])
            best = np.argpartition(-logits, k - 1, axis=1)[:, :k]
            top1 += int(np.sum(np.argmax(logits, axis=1) == batch_labels))
            top5 += int(np.sum(np.any(best == batch_labels[:, None], axis=1)))
            count += len(readable)
        if progress is not None:
            progress(offset + len(images), len(paths))
    if skipped:
        log.warning("skipped %d of %d files that are not readable images in %s", skipped, len(paths), data_dir)
    if count == 0:
        raise CalibrationDataError(f"none of the {len(paths)} image files in {data_dir} can be read")
    return EvalResult(
        100.0 * top1 / count, 100.0 * top5 / count, count, skipped, used_provider, time.perf_counter() - start
    )


def read_class_list(path: str | Path) -> dict[str, int]:
    """Map class names to indices from a TSV ``index<TAB>name<TAB>name...``.

    Column 2 names (e.g. ImageNet wnids) always map; a column 3+ name maps when it is not
    ambiguous (``crane`` occurs twice among ImageNet names and is left out).
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationDataError(f"class list {path} does not exist (--classes)")
    primary: dict[str, int] = {}
    secondary: dict[str, set[int]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip().isdigit():
            raise CalibrationDataError(f"class list {path} line {number} is not 'index<TAB>name[<TAB>name]': {line!r}")
        index = int(fields[0])
        primary[fields[1].strip()] = index
        for name in fields[2:]:
            secondary.setdefault(name.strip(), set()).add(index)
    unique = {name: indices.pop() for name, indices in secondary.items() if len(indices) == 1}
    return {**unique, **primary}


def _class_index(data_dir: Path, classes: str | Path | None, dataset: str | None) -> dict[str, int]:
    """Folder name -> class index for ``data_dir`` (see :func:`evaluate` for where the list comes from)."""
    folders = sorted(entry.name for entry in data_dir.iterdir() if entry.is_dir())
    if not folders:
        raise CalibrationDataError(
            f"evaluation data {data_dir} has no class folders; expected the ImageFolder layout <class>/<image>"
        )
    if classes is None and dataset is not None:
        candidates = [folder / f"{dataset}_classes.tsv" for folder in (data_dir, data_dir.parent)]
        classes = next((c for c in candidates if c.is_file()), None)
        if classes is not None:
            log.info("class list %s (dataset '%s' of the model)", classes, dataset)
    if classes is None:
        log.warning(
            "no class list for %s: numbering its %d folders in sorted order, which is only right when they are "
            "all of the model's classes (not for imagenet_val with 629 of 1000); pass --classes",
            data_dir,
            len(folders),
        )
        return {name: index for index, name in enumerate(folders)}
    class_list = read_class_list(classes)
    unknown = [name for name in folders if name not in class_list]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise CalibrationDataError(f"class folders {shown} of {data_dir} are not names in class list {classes}")
    return {name: class_list[name] for name in folders}


def _labelled_images(data_dir: Path, class_index: dict[str, int]) -> list[tuple[Path, int]]:
    """(image path, class index) of every image, sorted by folder then path."""
    samples = [(path, index) for name, index in class_index.items() for path in find_images(data_dir / name)]
    if not samples:
        raise CalibrationDataError(f"evaluation data {data_dir} has class folders but no image files in them")
    return samples


def _prefetched_batches(
    paths: Sequence[Path], prep: Preprocessing, batch_size: int
) -> Iterator[tuple[int, list[np.ndarray | None]]]:
    """``(offset, images)`` per batch; the next batch decodes while the caller runs the model."""
    offsets = list(range(0, len(paths), batch_size))
    with ThreadPoolExecutor(max_workers=1) as loader:
        pending = loader.submit(load_images, paths[0:batch_size], prep) if offsets else None
        for number, offset in enumerate(offsets):
            images = pending.result()
            if number + 1 < len(offsets):
                nxt = offsets[number + 1]
                pending = loader.submit(load_images, paths[nxt : nxt + batch_size], prep)
            yield offset, images


def _run(sess: Any, input_name: str, batch: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    """Logits ``[len(batch), classes]``; a short batch for a fixed-batch model is padded with its last image."""
    real = len(batch)
    if fixed_batch is not None and real < fixed_batch:
        batch = np.concatenate([batch, np.repeat(batch[-1:], fixed_batch - real, axis=0)])
    logits = sess.run(None, {input_name: batch})[0]
    return np.asarray(logits, dtype=np.float32).reshape(len(batch), -1)[:real]


def _check_label_range(labels: np.ndarray, num_classes: int, model_path: Path) -> None:
    if labels.max() >= num_classes:
        raise CalibrationDataError(
            f"the class list gives index {int(labels.max())} but {model_path} has only {num_classes} outputs; "
            "pass the --classes list that matches the model"
        )
