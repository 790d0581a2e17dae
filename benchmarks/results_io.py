"""Result files shared by every benchmark: append-only CSV rows and markdown tables made from them."""

from __future__ import annotations

import csv
import datetime
import os
import platform
import subprocess
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def git_commit() -> str:
    """Short commit of the checkout the benchmark runs from (recorded in every row)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(provider: str = "cpu") -> str:
    """What a row ran on: the GPU model for ``cuda``, else the CPU model and its core count."""
    if provider == "cuda":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cuda"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:  # not Linux: platform's answer is all we have
        pass
    return f"{cpu} ({os.cpu_count()} cores)"


def run_metadata(provider: str = "cpu") -> dict[str, str]:
    """What every result row records about where and with what it was measured."""
    import onnxruntime
    import torch

    return {"device": device_name(provider), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "date": datetime.date.today().isoformat(), "commit": git_commit()}


def calibration_set(calib_folder: str | os.PathLike) -> str:
    """The name a row records for a calibration folder (e.g. ``cifar10_calib``)."""
    return Path(calib_folder).name


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as handle:  # rows shorter than the header (older writers) read "" there
        return [{k: v for k, v in row.items() if k is not None} for row in csv.DictReader(handle, restval="")]


def append_csv(path: Path, fields: list[str], rows: list[dict]) -> list[dict]:
    """Append ``rows`` (header written on first use); returns every row now in the file.

    A file written before a column was added is first rewritten under ``fields`` (old rows get
    the new columns empty). New columns go last, so a process still running the older script
    appends rows whose columns are a prefix of the new header and stay readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    if not new:
        with path.open() as handle:
            header = next(csv.reader(handle), [])
        if header != fields:
            earlier = read_csv(path)
            with path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fields, restval="", extrasaction="ignore")
                writer.writeheader()
                writer.writerows(earlier)
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fields, restval="")
        if new:
            writer.writeheader()
        writer.writerows(rows)
    return read_csv(path)


def markdown_table(rows: list[dict], fields: list[str]) -> list[str]:
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    return lines + ["| " + " | ".join(str(r.get(f, "")) for f in fields) + " |" for r in rows]
