// Host stand-in for the CUDA runtime types that border_round.cc and border_round.cuh use, so
// the tests' emulation build (AQUANT_CUDA_EMULATION=ON) compiles them without a CUDA toolkit.
#pragma once

enum cudaError_t { cudaSuccess = 0 };
using cudaStream_t = struct CUstream_st*;

inline const char* cudaGetErrorName(cudaError_t) { return "cudaSuccess"; }
inline const char* cudaGetErrorString(cudaError_t) { return "no error"; }
