// Host emulation of the BorderRound CUDA launcher, for the tests: the kernels of
// border_round_kernels.cuh run on the CPU, one (block, thread) after another, over the grid the
// real launcher would use. Built only with AQUANT_CUDA_EMULATION=ON, where the CUDA EP wrapper
// (border_round.cc) is registered for CPUExecutionProvider instead of the CPU kernel, so the
// CPU test suite checks the CUDA kernels' indexing, padding, fusion and arithmetic without a GPU.
// Sequential emulation cannot show races; the kernels write each output from one thread only.
//
// $AQUANT_CUDA_EMULATION_MAX_BLOCKS caps the grid, so small tests also run the grid-stride loops;
// $AQUANT_CUDA_EMULATION_WIDE_INDEX runs the 64-bit-index kernels, which real launches pick only
// for tensors of 2^31 elements or more.
#include <algorithm>
#include <cstdlib>

#include "host_device.h"  // before the kernels: qualifiers, thread coordinates, intrinsics

#include "../border_round.cuh"
#include "../border_round_kernels.cuh"

namespace aquant {

template <typename In, typename Out>
cudaError_t LaunchBorderRound(const BorderRoundProblem& p, const In* x, const float* coeffs, Out* codes, cudaStream_t) {
  kernels::LaunchShape shape = kernels::LaunchShapeOf(p);
  if (const char* cap = std::getenv("AQUANT_CUDA_EMULATION_MAX_BLOCKS")) {
    shape.blocks = std::min(shape.blocks, std::max(1, std::atoi(cap)));
  }
  const bool narrow = kernels::UsesNarrowIndex(p) && std::getenv("AQUANT_CUDA_EMULATION_WIDE_INDEX") == nullptr;
  const kernels::Kernel<In, Out> kernel = kernels::KernelFor<In, Out>(p, narrow);
  gridDim.x = static_cast<unsigned>(shape.blocks);
  blockDim.x = static_cast<unsigned>(shape.threads);
  for (unsigned block = 0; block < gridDim.x; ++block) {
    for (unsigned thread = 0; thread < blockDim.x; ++thread) {
      blockIdx.x = block;
      threadIdx.x = thread;
      kernel(p, x, coeffs, codes);
    }
  }
  return cudaSuccess;
}

AQUANT_BORDER_ROUND_TYPES(AQUANT_INSTANTIATE_LAUNCHER)

}  // namespace aquant
