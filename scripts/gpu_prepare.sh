#!/usr/bin/env bash
# On the dev machine, before the device calls of scripts/gpu_checks.sh: fills the git-ignored .gpu/
# with what the GPU machine lacks (it has torch, onnx, CUDA and nvcc, no internet and no ../shared).
#   .gpu/whl           onnx-graphsurgeon wheel (the one missing Python dependency)
#   .gpu/lib           the op library with CUDA kernels, built here with nvcc (sm_80/sm_90 + PTX)
#   .gpu/bridge        its host-bridge build: the same CUDA kernels registered for the CPU EP (stage kernel)
#   .gpu/shared-torch  models + data of the torch stage (ResNet-20, MobileNetV2, cifar10_calib, imagenet_1k)
#   .gpu/shared-ort    models + data of the ort stage (ResNet-20, cifar10_calib, cifar10_test)
# ORT-GPU itself travels in parts: bash ../shared/tools/ortgpu-pack .ortgpu (../shared/tools/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${AQUANT_SHARED:-../shared}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p .gpu/whl .gpu/lib .gpu/bridge
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform any onnx-graphsurgeon -d .gpu/whl
library=$("$PYTHON" -c "
from pathlib import Path
from aquant_onnx.runtime import library
path = library.build_library(Path('build/custom_ops-gpu'), cuda='on', install=False)
assert library.has_cuda_kernel(path), path
print(path)")
cp "$library" "${library%.so}.json" .gpu/lib/
bridge=$("$PYTHON" -c "
from pathlib import Path
from aquant_onnx.runtime import library
path = library.build_library(Path('build/custom_ops-cuda-bridge'), cuda='on', install=False,
                             cmake_options=('-DAQUANT_CUDA_HOST_BRIDGE=ON',))
assert library.build_info(path).get('cuda_host_bridge'), path
print(path)")
cp "$bridge" "${bridge%.so}.json" .gpu/bridge/
copy() {  # copy STAGE PATH...: PATHs under $SHARED into .gpu/shared-STAGE
  local stage=$1; shift
  for item in "$@"; do
    mkdir -p ".gpu/shared-$stage/$(dirname "$item")"
    cp -r "$SHARED/$item" ".gpu/shared-$stage/$(dirname "$item")/"
  done
}
copy torch models/resnet20_cifar10.onnx models/mobilenet_v2_1.0_224.onnx models/models.json \
  data/cifar10_calib data/imagenet_1k data/cifar10_classes.tsv data/imagenet_classes.tsv
copy ort models/resnet20_cifar10.onnx models/models.json data/cifar10_calib data/cifar10_test data/cifar10_classes.tsv
du -sh .gpu/* | sed 's/^/  /'
echo "tracked tree: $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) bytes (each call sends it plus the carried paths, 64 MiB in all)"
