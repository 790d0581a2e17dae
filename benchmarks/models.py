"""Benchmark models and data sets (paths under ../shared; see its READMEs)."""

from __future__ import annotations

import os
from pathlib import Path

# ../shared beside the checkout; $AQUANT_SHARED names a copy elsewhere (the GPU machine gets a
# carried subset, see scripts/gpu_checks.sh).
SHARED = Path(os.environ.get("AQUANT_SHARED") or Path(__file__).resolve().parents[2] / "shared")
DATA = SHARED / "data"

MODELS = {
    "resnet20": {"path": SHARED / "models" / "resnet20_cifar10.onnx", "calib": DATA / "cifar10_calib",
                 "evals": {"cifar10_test_9k": DATA / "cifar10_test_9k", "cifar10_test": DATA / "cifar10_test"}},
    "mobilenet_v2": {"path": SHARED / "models" / "mobilenet_v2_1.0_224.onnx", "calib": DATA / "imagenet_1k",
                     "evals": {"imagenet_val": DATA / "imagenet_val"}},
    "efficientnet_lite0": {"path": SHARED / "models" / "efficientnet_lite0.onnx", "calib": DATA / "imagenet_1k",
                           "evals": {"imagenet_val": DATA / "imagenet_val"}},
}
