// CUDA launcher of com.aquant::BorderRound: the kernels live in border_round_kernels.cuh
// (shared with the tests' host emulation); this file only enqueues them on ORT's stream.
#include "border_round.cuh"
#include "border_round_kernels.cuh"

namespace aquant {

template <typename In, typename Out>
cudaError_t LaunchBorderRound(const BorderRoundProblem& p, const In* x, const float* coeffs, Out* codes,
                              cudaStream_t stream) {
  return kernels::Enqueue(p, x, coeffs, codes, stream);
}

AQUANT_BORDER_ROUND_TYPES(AQUANT_INSTANTIATE_LAUNCHER)

}  // namespace aquant
