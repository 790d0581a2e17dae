// CPU-only build: no CUDA kernels, so sessions on CUDAExecutionProvider run BorderRound on the CPU.
#include "../kernels.h"

namespace aquant {

void CreateCudaKernels(LiteOps&) {}

}  // namespace aquant
