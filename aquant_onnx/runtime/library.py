"""Find, describe and build the ``com.aquant::BorderRound`` custom-op library (DESIGN §5).

The library ``libaquant_onnx_ops.so`` is built by CMake from ``custom_ops/``: ``pip install .``
builds it into the wheel at ``aquant_onnx/runtime/lib/``; a developer checkout builds it with

    python -m aquant_onnx.runtime.library --build [--cuda auto|on|off]

which configures into ``build/custom_ops`` and installs into ``aquant_onnx/runtime/lib/``.

Only ``RegisterCustomOps`` may be exported from the library, so whether it holds CUDA kernels
is recorded at build time in a sidecar ``libaquant_onnx_ops.json`` next to it
(``{"cuda": true|false, ...}``); :func:`has_cuda_kernel` reads it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from aquant_onnx.errors import RuntimeLibraryError

logger = logging.getLogger(__name__)

LIBRARY_NAME = "libaquant_onnx_ops.so"
BUILD_INFO_NAME = "libaquant_onnx_ops.json"
ENV_LIBRARY = "AQUANT_ONNX_OPS_LIBRARY"
PACKAGE_LIB_DIR = Path(__file__).resolve().parent / "lib"
# Source checkout root (holds CMakeLists.txt and custom_ops/); absent in an installed wheel.
REPO_ROOT = Path(__file__).resolve().parents[2]
# Build folders searched after the package folder: `--build` output, then the CPU-only test build.
BUILD_DIRS = (REPO_ROOT / "build" / "custom_ops", REPO_ROOT / "build" / "custom_ops-cpu")
BUILD_HINT = "pip install . builds it; or run python -m aquant_onnx.runtime.library --build"


def _installed_copy() -> list[Path]:
    """The library recorded in the installed distribution; with an editable install the Python
    files load from the checkout while the built library sits in site-packages."""
    from importlib import metadata

    try:
        files = metadata.distribution("aquant-onnx").files or []
    except metadata.PackageNotFoundError:
        return []
    return [Path(f.locate()) for f in files if f.name == LIBRARY_NAME]


def _candidates() -> list[Path]:
    found = [PACKAGE_LIB_DIR / LIBRARY_NAME, *_installed_copy()]
    for build_dir in BUILD_DIRS:
        found.append(build_dir / "custom_ops" / LIBRARY_NAME)
    return found


def library_path() -> Path:
    """Path of the op library: ``$AQUANT_ONNX_OPS_LIBRARY``, else the package's ``lib/``, else a build folder.

    Raises:
        RuntimeLibraryError: the variable names a missing file, or no library was built.
    """
    override = os.environ.get(ENV_LIBRARY)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise RuntimeLibraryError(f"{ENV_LIBRARY}={override} does not name a file; unset it or point it at {LIBRARY_NAME}.")
        return path
    for path in _candidates():
        if path.is_file():
            return path
    raise RuntimeLibraryError(f"the com.aquant::BorderRound op library {LIBRARY_NAME} is not built; {BUILD_HINT}.")


def build_info(path: Path | None = None) -> dict:
    """Contents of the sidecar written next to the library at build time (``{}`` when absent)."""
    path = library_path() if path is None else Path(path)
    sidecar = path.with_name(BUILD_INFO_NAME)
    if not sidecar.is_file():
        return {}
    return json.loads(sidecar.read_text())


def has_cuda_kernel(path: Path | None = None) -> bool:
    """Whether the library (default: :func:`library_path`) was built with the CUDAExecutionProvider kernel."""
    return bool(build_info(path).get("cuda", False))


def _cmake() -> str:
    found = shutil.which("cmake")
    if found:
        return found
    try:  # the `cmake` PyPI package, which scikit-build-core may have installed
        import cmake

        return str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
    except ImportError:
        raise RuntimeLibraryError("cmake is not installed; pip install cmake, then build the op library again.") from None


def build_library(
    build_dir: Path | None = None,
    cuda: str = "auto",
    install: bool = True,
    jobs: int | None = None,
    cmake_options: Sequence[str] = (),
) -> Path:
    """Configure and build the op library from the source checkout; returns the built library's path.

    Args:
        build_dir: CMake build folder (default ``build/custom_ops``).
        cuda: ``"auto"`` (CUDA kernels when nvcc is found), ``"on"`` or ``"off"``.
        install: also copy the library and its sidecar into ``aquant_onnx/runtime/lib/``.
        jobs: parallel compile jobs (default: CPU count).
        cmake_options: extra configure arguments, e.g. ``("-DAQUANT_CUDA_EMULATION=ON",)`` (the tests' build
            of the CUDA kernels on the host, see custom_ops/README.md).

    Raises:
        RuntimeLibraryError: no source checkout, no cmake, or the build failed (its output is in the message).
    """
    if not (REPO_ROOT / "custom_ops" / "CMakeLists.txt").is_file():
        raise RuntimeLibraryError(f"no custom_ops/ sources next to {Path(__file__).parent}; reinstall with pip install . instead.")
    if cuda not in ("auto", "on", "off"):
        raise RuntimeLibraryError(f"cuda={cuda!r} is not one of auto, on, off.")
    cmake = _cmake()
    build_dir = Path(build_dir) if build_dir is not None else BUILD_DIRS[0]
    commands = [
        [cmake, "-S", str(REPO_ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release", f"-DAQUANT_WITH_CUDA={cuda.upper()}",
         *cmake_options],
        [cmake, "--build", str(build_dir), "--parallel", str(jobs or os.cpu_count() or 1)],
    ]
    if install:
        commands.append([cmake, "--install", str(build_dir), "--prefix", str(REPO_ROOT)])
    for command in commands:
        logger.info("running %s", " ".join(command))
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            output = (result.stdout + result.stderr)[-4000:]
            raise RuntimeLibraryError(f"building the op library failed at `{' '.join(command)}`; fix the error below and rerun.\n{output}")
    return build_dir / "custom_ops" / LIBRARY_NAME


def main(argv: list[str] | None = None) -> int:
    """``python -m aquant_onnx.runtime.library [--build] [--cuda auto|on|off]``: build or locate the library."""
    parser = argparse.ArgumentParser(prog="python -m aquant_onnx.runtime.library", description=__doc__.splitlines()[0])
    parser.add_argument("--build", action="store_true", help="build with CMake and install into aquant_onnx/runtime/lib/")
    parser.add_argument("--cuda", choices=("auto", "on", "off"), default="auto", help="CUDA kernels (default: auto)")
    parser.add_argument("--build-dir", type=Path, default=None, help="CMake build folder (default: build/custom_ops)")
    args = parser.parse_args(argv)
    try:
        if args.build:
            build_library(args.build_dir, cuda=args.cuda)
        path = library_path()
    except RuntimeLibraryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{path} (CUDA kernel: {'yes' if has_cuda_kernel(path) else 'no'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
