// Host bridge of the BorderRound CUDA launcher (AQUANT_CUDA_HOST_BRIDGE=ON, GPU checks only): the
// real kernels on the real GPU, registered for CPUExecutionProvider. Each call copies X and the
// coefficients to the device, enqueues the kernel exactly as the library does (kernels::Enqueue),
// and copies the codes back. So a machine with a GPU but only the CPU onnxruntime (the GPU machine
// before onnxruntime-gpu is unpacked) runs the CPU test suite's kernel tests on the GPU
// ($AQUANT_ONNX_CUDA_BRIDGE, tests/test_custom_ops.py) and times the kernel alone: with
// $AQUANT_CUDA_BRIDGE_TIMINGS naming a file, every call appends the kernel's time in ms, from CUDA
// events around the launch only (benchmarks/cuda_kernel.py).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "../border_round.cuh"
#include "../border_round_kernels.cuh"

namespace aquant {
namespace {

// A device allocation freed on scope exit, so an error return leaks nothing.
struct DeviceBuffer {
  void* data = nullptr;
  ~DeviceBuffer() {
    if (data != nullptr) cudaFree(data);
  }
  cudaError_t Allocate(size_t bytes) { return bytes == 0 ? cudaSuccess : cudaMalloc(&data, bytes); }
};

struct Event {
  cudaEvent_t event = nullptr;
  ~Event() {
    if (event != nullptr) cudaEventDestroy(event);
  }
};

#define AQUANT_RETURN_IF_FAILED(call)          \
  do {                                         \
    const cudaError_t status_ = (call);        \
    if (status_ != cudaSuccess) return status_; \
  } while (0)

// Appends the kernel's milliseconds to $AQUANT_CUDA_BRIDGE_TIMINGS (no file named: nothing).
void RecordTime(float milliseconds) {
  const char* path = std::getenv("AQUANT_CUDA_BRIDGE_TIMINGS");
  if (path == nullptr) return;
  if (FILE* file = std::fopen(path, "a")) {
    std::fprintf(file, "%.6f\n", milliseconds);
    std::fclose(file);
  }
}

}  // namespace

template <typename In, typename Out>
cudaError_t LaunchBorderRound(const BorderRoundProblem& p, const In* x, const float* coeffs, Out* codes,
                              cudaStream_t) {
  const size_t x_count = p.im2col ? p.batch * p.channels * p.height * p.width : p.count;
  const size_t code_count =
      p.im2col ? p.batch * p.channels * p.kernel_h * p.kernel_w * p.out_h * p.out_w : p.count;
  const size_t coeff_count = p.degree * p.features;
  DeviceBuffer device_x, device_coeffs, device_codes;
  AQUANT_RETURN_IF_FAILED(device_x.Allocate(x_count * sizeof(In)));
  AQUANT_RETURN_IF_FAILED(device_coeffs.Allocate(coeff_count * sizeof(float)));
  AQUANT_RETURN_IF_FAILED(device_codes.Allocate(code_count * sizeof(Out)));
  AQUANT_RETURN_IF_FAILED(cudaMemcpy(device_x.data, x, x_count * sizeof(In), cudaMemcpyHostToDevice));
  AQUANT_RETURN_IF_FAILED(cudaMemcpy(device_coeffs.data, coeffs, coeff_count * sizeof(float), cudaMemcpyHostToDevice));
  Event start, stop;
  AQUANT_RETURN_IF_FAILED(cudaEventCreate(&start.event));
  AQUANT_RETURN_IF_FAILED(cudaEventCreate(&stop.event));
  AQUANT_RETURN_IF_FAILED(cudaEventRecord(start.event));
  AQUANT_RETURN_IF_FAILED(kernels::Enqueue(p, static_cast<const In*>(device_x.data),
                                           static_cast<const float*>(device_coeffs.data),
                                           static_cast<Out*>(device_codes.data), nullptr));
  AQUANT_RETURN_IF_FAILED(cudaEventRecord(stop.event));
  AQUANT_RETURN_IF_FAILED(cudaEventSynchronize(stop.event));
  float milliseconds = 0.0f;
  AQUANT_RETURN_IF_FAILED(cudaEventElapsedTime(&milliseconds, start.event, stop.event));
  RecordTime(milliseconds);
  return cudaMemcpy(codes, device_codes.data, code_count * sizeof(Out), cudaMemcpyDeviceToHost);
}

AQUANT_BORDER_ROUND_TYPES(AQUANT_INSTANTIATE_LAUNCHER)

}  // namespace aquant
