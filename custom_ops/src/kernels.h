// Registration entry points of the BorderRound kernels, one per execution provider.
#pragma once

#include <memory>
#include <vector>

#include "onnxruntime_lite_custom_op.h"

namespace aquant {

using LiteOps = std::vector<std::unique_ptr<Ort::Custom::OrtLiteCustomOp>>;

// Appends BorderRound kernels for CPUExecutionProvider (all X/output type pairs) to `ops`.
void CreateCpuKernels(LiteOps& ops);

// Appends BorderRound kernels for CUDAExecutionProvider; adds none in a CPU-only build
// (src/cuda/no_cuda.cc), so register.cc needs no #ifdef.
void CreateCudaKernels(LiteOps& ops);

// The Lite API creates kernels through CreateKernel, whose exceptions would unwind through
// ONNX Runtime. ORT prefers CreateKernelV2 when it is set and reports its status as a normal
// session error, so a node with invalid attributes fails cleanly at session creation.
inline Ort::Custom::OrtLiteCustomOp* WithStatusOnCreate(Ort::Custom::OrtLiteCustomOp* op) {
  op->CreateKernelV2 = [](const OrtCustomOp* self, const OrtApi* api, const OrtKernelInfo* info,
                          void** kernel) -> OrtStatusPtr {
    try {
      *kernel = self->CreateKernel(self, api, info);
      return nullptr;
    } catch (const Ort::Exception& error) {
      return api->CreateStatus(error.GetOrtErrorCode(), error.what());
    } catch (const std::exception& error) {
      return api->CreateStatus(ORT_FAIL, error.what());
    }
  };
  return op;
}

}  // namespace aquant
