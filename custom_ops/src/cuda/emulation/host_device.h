// What nvcc provides to device code, defined for the host (emulation build only): the
// qualifiers, the thread coordinates of the (block, thread) being emulated, and the
// explicitly rounded float intrinsics, which on the host are plain IEEE operations
// (the library is built with -ffp-contract=off, so none is fused).
#pragma once

#include <math.h>

#define __global__
#define __device__
#define __forceinline__ inline

struct EmulatedDim3 {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local EmulatedDim3 blockIdx, threadIdx, blockDim, gridDim;

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
