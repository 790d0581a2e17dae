// Launcher of the BorderRound CUDA kernels. Plain types only: no ORT header reaches nvcc.
// X is float32 or float16 (passed as its raw uint16_t bits); codes are uint8 or int8.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../border_round_problem.h"

namespace aquant {

// Enqueues BorderRound on `stream`; returns the launch error, if any. `coeffs` and `codes` are
// device pointers; scale and zero_point travel inside `problem`. Instantiated for the
// (In, Out) pairs of AQUANT_BORDER_ROUND_TYPES by border_round.cu (or, in the tests' host
// emulation, by emulation/launch.cc).
template <typename In, typename Out>
cudaError_t LaunchBorderRound(const BorderRoundProblem& problem, const In* x, const float* coeffs, Out* codes,
                              cudaStream_t stream);

#define AQUANT_BORDER_ROUND_TYPES(APPLY) \
  APPLY(float, uint8_t) APPLY(float, int8_t) APPLY(uint16_t, uint8_t) APPLY(uint16_t, int8_t)

#define AQUANT_INSTANTIATE_LAUNCHER(In, Out)                                                                  \
  template cudaError_t LaunchBorderRound<In, Out>(const BorderRoundProblem&, const In*, const float*, Out*, \
                                                  cudaStream_t);

}  // namespace aquant
