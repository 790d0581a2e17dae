// CUDA launcher of com.aquant::BorderRound: the kernels live in border_round_kernels.cuh
// (shared with the tests' host emulation); this file only enqueues them on ORT's stream.
#include "border_round.cuh"
#include "border_round_kernels.cuh"

namespace aquant {

template <typename In, typename Out>
cudaError_t LaunchBorderRound(const BorderRoundProblem& p, const In* x, const float* coeffs, Out* codes,
                              cudaStream_t stream) {
  const kernels::LaunchShape shape = kernels::LaunchShapeOf(p);
  if (shape.blocks == 0) return cudaSuccess;
  const kernels::Kernel<In, Out> kernel = kernels::KernelFor<In, Out>(p, kernels::UsesNarrowIndex(p));
  kernel<<<shape.blocks, shape.threads, 0, stream>>>(p, x, coeffs, codes);
  return cudaGetLastError();
}

AQUANT_BORDER_ROUND_TYPES(AQUANT_INSTANTIATE_LAUNCHER)

}  // namespace aquant
