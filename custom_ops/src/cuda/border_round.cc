// CUDAExecutionProvider kernels of com.aquant::BorderRound: validate on the host, launch the
// kernel (border_round.cu) on ORT's compute stream. 'scale' and 'zero_point' are declared
// CPU inputs, so their values are read on the host without a device copy; X and 'coeffs' stay
// on the device.
#include <string>
#include <type_traits>

#include "../border_round_attrs.h"
#include "../kernels.h"
#include "border_round.cuh"

// The tests' host emulation (AQUANT_CUDA_EMULATION=ON) registers these kernels for the CPU EP.
#ifndef AQUANT_CUDA_KERNEL_PROVIDER
#define AQUANT_CUDA_KERNEL_PROVIDER "CUDAExecutionProvider"
#endif

namespace aquant {
namespace {

// float16 X reaches the launcher as its raw bits.
template <typename In>
using DeviceInput = std::conditional_t<std::is_same_v<In, Ort::Float16_t>, uint16_t, float>;

template <typename In, typename Out>
struct BorderRoundCuda {
  BorderRoundCuda(const OrtApi*, const OrtKernelInfo* info) : attrs_(info), clip_range_(attrs_.ClipRange<Out>()) {}

  Ort::Status Compute(OrtKernelContext* context, const Ort::Custom::Tensor<In>& x,
                      const Ort::Custom::Tensor<float>& scale, const Ort::Custom::Tensor<Out>& zero_point,
                      const Ort::Custom::Tensor<float>& coeffs, Ort::Custom::Tensor<Out>& codes) {
    try {
      const std::vector<int64_t>& x_shape = x.Shape();
      CheckScalarInputs(scale.Shape(), zero_point.Shape());
      const BorderRoundProblem problem = MakeProblem(attrs_, clip_range_, x_shape, scale.Data()[0],
                                                     static_cast<int32_t>(zero_point.Data()[0]), coeffs.Shape());
      Out* out = codes.Allocate(OutputShape(problem, x_shape));
      auto stream = static_cast<cudaStream_t>(Ort::KernelContext(context).GetGPUComputeStream());
      const cudaError_t status = LaunchBorderRound(problem, reinterpret_cast<const DeviceInput<In>*>(x.Data()),
                                                   coeffs.Data(), out, stream);
      if (status != cudaSuccess) {
        Fail(std::string("CUDA kernel launch failed: ") + cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
      }
      return Ort::Status{nullptr};
    } catch (const Ort::Exception& error) {
      return Ort::Status{error};
    } catch (const std::exception& error) {
      return Ort::Status{error};
    }
  }

 private:
  BorderRoundAttrs attrs_;
  std::pair<int32_t, int32_t> clip_range_;
};

// Inputs: 0 X, 1 scale, 2 zero_point, 3 coeffs.
OrtMemType ORT_API_CALL InputMemoryType(const OrtCustomOp*, size_t index) {
  return index == 1 || index == 2 ? OrtMemTypeCPUInput : OrtMemTypeDefault;
}

template <typename In, typename Out>
void AddCudaKernel(LiteOps& ops) {
  Ort::Custom::OrtLiteCustomOp* op = Ort::Custom::CreateLiteCustomOp<BorderRoundCuda<In, Out>>(kOpName, AQUANT_CUDA_KERNEL_PROVIDER);
  op->GetInputMemoryType = InputMemoryType;
  ops.emplace_back(WithStatusOnCreate(op));
}

}  // namespace

void CreateCudaKernels(LiteOps& ops) {
  AddCudaKernel<float, uint8_t>(ops);
  AddCudaKernel<float, int8_t>(ops);
  AddCudaKernel<Ort::Float16_t, uint8_t>(ops);
  AddCudaKernel<Ort::Float16_t, int8_t>(ops);
}

}  // namespace aquant
