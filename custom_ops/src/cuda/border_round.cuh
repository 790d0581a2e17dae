// Launchers of the BorderRound CUDA kernels. Plain types only: no ORT header reaches nvcc.
// X is float32 or float16 (passed as its raw uint16_t bits); codes are uint8 or int8.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../border_round_problem.h"

namespace aquant {

// Enqueues BorderRound on `stream`; returns the launch error, if any. `coeffs` and `codes` are
// device pointers; scale and zero_point travel inside `problem`.
cudaError_t LaunchBorderRound(const BorderRoundProblem& problem, const float* x, const float* coeffs, uint8_t* codes,
                              cudaStream_t stream);
cudaError_t LaunchBorderRound(const BorderRoundProblem& problem, const float* x, const float* coeffs, int8_t* codes,
                              cudaStream_t stream);
cudaError_t LaunchBorderRound(const BorderRoundProblem& problem, const uint16_t* x_half, const float* coeffs,
                              uint8_t* codes, cudaStream_t stream);
cudaError_t LaunchBorderRound(const BorderRoundProblem& problem, const uint16_t* x_half, const float* coeffs,
                              int8_t* codes, cudaStream_t stream);

}  // namespace aquant
