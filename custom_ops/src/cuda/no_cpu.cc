// Builds whose CUDA kernels take CPUExecutionProvider's place (the host emulation and the host
// bridge, custom_ops/README.md): no CPU kernel, so the CPU EP runs the CUDA kernels' code.
#include "../kernels.h"

namespace aquant {

void CreateCpuKernels(LiteOps&) {}

}  // namespace aquant
