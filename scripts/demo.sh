#!/usr/bin/env bash
# Set up, then quantize the shipped ResNet-20 (CIFAR-10) with RTN at W8A8 and W4A4 on 128
# shipped calibration images and compare FP32 vs quantized top-1 on 500 shipped test images.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
AQ=.venv/bin/aquant-onnx
DATA=tests/data
$AQ eval models/resnet20_cifar10.onnx --data $DATA/cifar10_test --classes $DATA/cifar10_classes.tsv
for bits in 8 4; do
  $AQ quantize models/resnet20_cifar10.onnx --calib $DATA/cifar10_calib --method rtn \
      --w-bits $bits --a-bits $bits -o out/resnet20_rtn_w${bits}a${bits}.onnx
  $AQ eval out/resnet20_rtn_w${bits}a${bits}.onnx --data $DATA/cifar10_test --classes $DATA/cifar10_classes.tsv
done
