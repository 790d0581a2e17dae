"""Finding and decoding image files; unreadable files come back as ``None``, never as an exception."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .preprocess import Preprocessing

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

# PIL releases the GIL while decoding and resampling, so a few threads overlap well.
LOADER_THREADS = min(4, os.cpu_count() or 1)


def find_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted by path.

    Extensions: jpg, jpeg, png, bmp, webp in any case. Symlinked directories are not
    entered (no loops, nothing outside the folder); symlinked files are kept.
    """
    found: list[Path] = []
    for root, _dirs, files in os.walk(folder, followlinks=False):
        found.extend(Path(root, name) for name in files if Path(name).suffix.lower() in IMAGE_EXTENSIONS)
    return sorted(found)


def load_image(path: str | Path, prep: Preprocessing) -> np.ndarray | None:
    """``prep`` applied to the image at ``path`` (float32, ``(3, H, W)``), or ``None`` if unreadable.

    Corrupt, truncated or non-image files (any PIL decoding error or I/O error) give
    ``None`` and a debug log line; callers count and report them.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()  # decode fully here so truncation shows up now, not later
            return prep(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        log.debug("cannot read image %s: %s", path, error)
        return None


def load_images(paths: Sequence[Path], prep: Preprocessing) -> list[np.ndarray | None]:
    """:func:`load_image` of each path, in order, decoded on a few threads."""
    if len(paths) <= 1:
        return [load_image(path, prep) for path in paths]
    with ThreadPoolExecutor(max_workers=LOADER_THREADS) as pool:
        return list(pool.map(lambda path: load_image(path, prep), paths))
