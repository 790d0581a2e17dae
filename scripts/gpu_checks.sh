#!/usr/bin/env bash
# The GPU figures of issues 4-6 in device calls (benchmarks/README.md, "GPU session"). Runs ON the
# GPU machine from the repository root; results (CSV rows, logs, the exported model) go to $OUT.
#
#   bash scripts/gpu_checks.sh kernel  # carry .gpu/whl .gpu/lib .gpu/bridge; no onnxruntime-gpu needed (~2 min):
#                                      # the CUDA kernels vs the reference, kernel bandwidth, sanitizers
#   bash scripts/gpu_checks.sh torch   # carry .gpu/whl .gpu/shared-torch: calibration speed + one 20k-iteration run
#   bash scripts/gpu_checks.sh ort     # after ORT-GPU is unpacked; carry .gpu/whl .gpu/lib .gpu/shared-ort:
#                                      # CUDA EP kernel tests, parity, latency
# scripts/gpu_prepare.sh fills .gpu/ on the dev machine.
#
# ITERS (default 20000) sets the full run's iterations; a CPU dry run of the torch stage:
#   OUT=/tmp/out ITERS=2 SPEED_ITERS=2 DEVICE=cpu PATH=.venv/bin:$PATH bash scripts/gpu_checks.sh torch
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?usage: gpu_checks.sh kernel|torch|ort}
case "$stage" in kernel|torch|ort) ;; *) echo "unknown stage '$stage' (kernel, torch or ort)"; exit 2 ;; esac
OUT=${OUT:?set OUT to the folder results go to}
ITERS=${ITERS:-20000}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT" .gpu/site
# onnx-graphsurgeon (the only missing dependency there) from a carried wheel; the package runs from the checkout.
if compgen -G ".gpu/whl/*.whl" >/dev/null; then
  python3 -m pip install --quiet --upgrade --no-deps --no-index --target .gpu/site .gpu/whl/*.whl 2>&1 | grep -v WARNING || true
fi
export PYTHONPATH="$PWD:$PWD/cli:$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}"
export AQUANT_SHARED=${AQUANT_SHARED:-$PWD/.gpu/shared-$stage}
save() { cp benchmarks/results/"$1".csv "$OUT/" 2>/dev/null || true; }

case "$stage" in
  kernel)
    # Issue 6 with the CPU onnxruntime only: the host-bridge build runs the real CUDA kernels on the GPU
    # behind host copies, so the CPU suite's kernel tests compare them with the reference (bit exact, which
    # the CPU kernel is too), and benchmarks.cuda_kernel times the launch alone against a D2D copy.
    export AQUANT_ONNX_OPS_LIBRARY=$PWD/.gpu/lib/libaquant_onnx_ops.so
    export AQUANT_ONNX_CUDA_BRIDGE=$PWD/.gpu/bridge/libaquant_onnx_ops.so
    nvidia-smi -L | tee "$OUT/kernel.log"
    timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_custom_ops.py -k cuda-bridge 2>&1 | tail -15 \
      | tee -a "$OUT/kernel.log" || true
    timeout 120 python3 -m benchmarks.cuda_kernel --bridge "$AQUANT_ONNX_CUDA_BRIDGE" 2>&1 | tee -a "$OUT/kernel.log" || true
    save cuda_kernel
    # Out-of-bounds accesses and races of the kernels, on the reference cases.
    for tool in memcheck racecheck; do
      timeout 120 compute-sanitizer --tool "$tool" --error-exitcode 9 python3 -m pytest -q -p no:cacheprovider \
        tests/test_custom_ops.py -k "cuda-bridge and codes_equal" 2>&1 | tail -8 | tee "$OUT/$tool.log" || true
    done
    ;;
  torch)
    python3 -c "import torch; assert '$DEVICE' == 'cpu' or torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
    # Issue 4/5: eager vs compiled step rate on the same blocks (target compiled >= 4x eager), QDrop vs AQuant.
    for model in resnet20 mobilenet_v2; do
      timeout 240 python3 -m benchmarks.calib_speed --model "$model" --blocks 1,5,9 --engines eager,compiled \
        --methods qdrop,aquant --iters "${SPEED_ITERS:-100}" --device "$DEVICE" --threads 8 2>&1 | tee -a "$OUT/calib_speed.log" || true
    done
    save calib_speed
    # Issue 4: wall time of a full QDrop W4A4 MobileNetV2 calibration (target <= 5 min on the H100), resumable
    # per block; the model comes back in $OUT and is evaluated on imagenet_val on the CPU machine.
    start=$(date +%s)
    python3 -m aquant_onnx_cli.main -v quantize "$AQUANT_SHARED/models/mobilenet_v2_1.0_224.onnx" \
      --calib "$AQUANT_SHARED/data/imagenet_1k" --num-calib 1024 --method qdrop --w-bits 4 --a-bits 4 \
      --iters "$ITERS" --batch-size 32 --seed 1005 --device "$DEVICE" --engine compiled \
      --checkpoint-dir .gpu/checkpoints/mbv2_qdrop_w4a4 -o "$OUT/mobilenet_v2_qdrop_w4a4.onnx" 2>&1 | tee "$OUT/mbv2_qdrop.log"
    echo "mobilenet_v2 qdrop w4a4 iters=$ITERS wall_s=$(( $(date +%s) - start ))" | tee -a "$OUT/mbv2_qdrop.log"
    ;;
  ort)
    test -f /tmp/ortgpu/site/.ortgpu-ready || { echo "ORT-GPU is not unpacked (../shared/tools/README.md)"; exit 3; }
    . /tmp/ortgpu/env.sh
    export PYTHONPATH="$PWD:$PWD/cli:$PWD/.gpu/site:$PYTHONPATH"
    export AQUANT_ONNX_OPS_LIBRARY=$PWD/.gpu/lib/libaquant_onnx_ops.so
    python3 - <<'PY'
import onnxruntime as ort
from aquant_onnx.runtime import library
assert "CUDAExecutionProvider" in ort.get_available_providers(), ort.get_available_providers()
assert library.has_cuda_kernel(), "the carried library has no CUDA kernel"
print("onnxruntime", ort.__version__, "library", library.library_path())
PY
    # Issue 6: CUDA EP kernel == CPU kernel (<= 1e-4 of codes off by one), through ORT's stream and memory.
    python3 -m pytest -q -p no:cacheprovider tests/test_custom_ops_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
    # Parity and the kernel on the CUDA EP, then model latency.
    timeout 240 python3 -m benchmarks.parity --model resnet20 --provider cuda 2>&1 | tail -3 | tee "$OUT/parity.log" || true
    save parity
    timeout 120 python3 -m benchmarks.ort_latency --kernel-only --batches 1,32 --provider cuda 2>&1 | tee "$OUT/kernel.log"
    timeout 300 python3 -m benchmarks.ort_latency --models resnet20 --batches 1,32 --provider cuda 2>&1 | tee "$OUT/latency.log" || true
    save ort_latency
    ;;
esac
