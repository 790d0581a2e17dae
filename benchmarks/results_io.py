"""Result files shared by every benchmark: append-only CSV rows and markdown tables made from them."""

from __future__ import annotations

import csv
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


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def append_csv(path: Path, fields: list[str], rows: list[dict]) -> list[dict]:
    """Append ``rows`` (header written on first use); returns every row now in the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)
    return read_csv(path)


def markdown_table(rows: list[dict], fields: list[str]) -> list[str]:
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    return lines + ["| " + " | ".join(str(r.get(f, "")) for f in fields) + " |" for r in rows]
