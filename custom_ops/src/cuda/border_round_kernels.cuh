// Device code of com.aquant::BorderRound (DESIGN.md §3–5), shared by the CUDA launcher
// (border_round.cu, nvcc) and the host emulation the tests build (emulation/launch.cc, any C++17
// compiler): the same source runs on the GPU and, one (block, thread) at a time, on the CPU.
// Same arithmetic as the CPU reference, with explicitly rounded intrinsics so nvcc cannot
// contract into FMA:
//   v = x / scale + zero_point; B = (b2 * v + b1) * v + b0; code = clip(ceil(v - B), qmin, qmax).
// im2col form: one thread per (n, c, window) reads the kh*kw inputs of its window once,
// averages their borders (fuse) and writes kh*kw codes; consecutive threads own consecutive
// windows, so the writes of each im2col row are coalesced.
#pragma once

#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "../border_round_problem.h"

namespace aquant {
namespace kernels {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535LL * 16;  // grid-stride loops cover the rest
constexpr int kCachedWindow = 49;             // kernels up to 7x7 keep their inputs in registers/local memory

template <typename Index>
__device__ __forceinline__ float LoadX(const float* x, Index index) {
  return x[index];
}
template <typename Index>
__device__ __forceinline__ float LoadX(const uint16_t* x, Index index) {
  return __half2float(__ushort_as_half(x[index]));
}

__device__ __forceinline__ float Quantize(float x, float scale, float zero_point) {
  return __fadd_rn(__fdiv_rn(x, scale), zero_point);
}

template <typename Index>
__device__ __forceinline__ float EvalBorder(const BorderRoundProblem& p, const float* coeffs, Index column, float v) {
  const float b0 = coeffs[column];
  if (p.degree == 1) return b0;
  const float b1 = coeffs[static_cast<Index>(p.features) + column];
  if (p.degree == 2) return __fadd_rn(__fmul_rn(b1, v), b0);
  const float b2 = coeffs[static_cast<Index>(2 * p.features) + column];
  return __fadd_rn(__fmul_rn(__fadd_rn(__fmul_rn(b2, v), b1), v), b0);
}

template <typename Out>
__device__ __forceinline__ Out Code(float v, float border, float qmin, float qmax) {
  // fmaxf/fminf map NaN to qmin, as the CPU kernel does.
  return static_cast<Out>(static_cast<int32_t>(fminf(fmaxf(ceilf(__fsub_rn(v, border)), qmin), qmax)));
}

// Index is uint32_t when every flat index of X and of the codes fits in 31 bits (see
// UsesNarrowIndex), else int64_t: the GPU has no integer divider, and a 64-bit division or modulo
// costs several times the instructions of a 32-bit one.
template <typename Index, typename In, typename Out>
__global__ void ElementwiseKernel(const BorderRoundProblem p, const In* __restrict__ x,
                                  const float* __restrict__ coeffs, Out* __restrict__ codes) {
  const float zero_point = static_cast<float>(p.zero_point);
  const float qmin = static_cast<float>(p.qmin), qmax = static_cast<float>(p.qmax);
  const Index count = static_cast<Index>(p.count), divisor = static_cast<Index>(p.coeff_divisor);
  const Index features = static_cast<Index>(p.features);
  for (Index i = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<Index>(gridDim.x) * blockDim.x) {
    const float v = Quantize(LoadX(x, i), p.scale, zero_point);
    const Index column = features == 1 ? 0 : (i / divisor) % features;
    codes[i] = Code<Out>(v, EvalBorder(p, coeffs, column, v), qmin, qmax);
  }
}

template <typename Index, typename In, typename Out>
__global__ void Im2colKernel(const BorderRoundProblem p, const In* __restrict__ x, const float* __restrict__ coeffs,
                             Out* __restrict__ codes) {
  const float zero_point = static_cast<float>(p.zero_point);
  const float qmin = static_cast<float>(p.qmin), qmax = static_cast<float>(p.qmax);
  const int kernel_h = static_cast<int>(p.kernel_h), kernel_w = static_cast<int>(p.kernel_w);
  const int kernel_area = kernel_h * kernel_w;
  const Index out_w = static_cast<Index>(p.out_w), channels = static_cast<Index>(p.channels);
  const Index windows = static_cast<Index>(p.out_h) * out_w;
  const Index total = static_cast<Index>(p.batch) * channels * windows;
  // Coefficient column of window entry k of channel c (im2col row j = c·kh·kw + k): F = C·kh·kw
  // gives j, F = C gives c, F = 1 gives 0 (MakeProblem's coeff_divisor is 1, kh·kw, any).
  const bool per_row = p.features > 1 && p.coeff_divisor == 1;
  const bool per_channel = p.features > 1 && p.coeff_divisor != 1;
  const bool cache = kernel_area <= kCachedWindow;
  float cached[kCachedWindow];
  for (Index t = blockIdx.x * static_cast<Index>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<Index>(gridDim.x) * blockDim.x) {
    const Index nc = t / windows;  // n * channels + c
    const Index window = t - nc * windows;
    const Index c = nc % channels;
    const Index oy = window / out_w, ox = window - oy * out_w;
    const In* x_plane = x + nc * static_cast<Index>(p.height * p.width);
    const Index first_column = per_row ? c * kernel_area : per_channel ? c : 0;
    const Index column_step = per_row ? 1 : 0;
    // Input row/column of window entry (0, 0); entry (ky, kx) adds (ky·dh, kx·dw). Signed: it may be padding.
    const int64_t iy0 = static_cast<int64_t>(oy) * p.stride_h - p.pad_top;
    const int64_t ix0 = static_cast<int64_t>(ox) * p.stride_w - p.pad_left;

    // Visits the window's entries in (ky, kx) row-major order: visit(k, inside X, offset in the plane).
    auto for_each_entry = [&](auto&& visit) {
      int k = 0;
      for (int ky = 0; ky < kernel_h; ++ky) {
        const int64_t iy = iy0 + ky * p.dilation_h;
        const bool row_inside = iy >= 0 && iy < p.height;
        for (int kx = 0; kx < kernel_w; ++kx, ++k) {
          const int64_t ix = ix0 + kx * p.dilation_w;
          visit(k, row_inside && ix >= 0 && ix < p.width, iy * p.width + ix);
        }
      }
    };
    auto value = [&](bool inside, int64_t offset) {
      return inside ? Quantize(LoadX(x_plane, offset), p.scale, zero_point) : zero_point;
    };

    float fused = 0.0f;
    if (p.fuse) {
      float sum = 0.0f;  // sequential float32 sum in (ky, kx) row-major order, as the CPU reference
      for_each_entry([&](int k, bool inside, int64_t offset) {
        const float v = value(inside, offset);
        if (cache) cached[k] = v;
        sum = __fadd_rn(sum, EvalBorder(p, coeffs, first_column + k * column_step, v));
      });
      fused = __fdiv_rn(sum, static_cast<float>(kernel_area));
    }
    Out* out = codes + nc * (kernel_area * windows) + window;  // row first_row of sample n
    for_each_entry([&](int k, bool inside, int64_t offset) {
      // Kernels larger than kCachedWindow read X a second time here.
      const float v = (p.fuse && cache) ? cached[k] : value(inside, offset);
      const float border = p.fuse ? fused : EvalBorder(p, coeffs, first_column + k * column_step, v);
      out[k * windows] = inside ? Code<Out>(v, border, qmin, qmax) : static_cast<Out>(p.zero_point);
    });
  }
}

// Grid of one launch: grid-stride loops cover work beyond kMaxBlocks * kThreads.
struct LaunchShape {
  int blocks = 0;
  int threads = kThreads;
};

// Whether 32-bit indices reach every element of X and of the codes.
inline bool UsesNarrowIndex(const BorderRoundProblem& p) {
  constexpr int64_t kLimit = int64_t{1} << 31;  // below 2^31, so a grid-stride step cannot wrap a uint32_t
  if (!p.im2col) return p.count < kLimit;
  const int64_t planes = p.batch * p.channels;
  return planes * p.height * p.width < kLimit && planes * p.kernel_h * p.kernel_w * p.out_h * p.out_w < kLimit &&
         p.features * 3 < kLimit;
}

template <typename In, typename Out>
using Kernel = void (*)(const BorderRoundProblem, const In*, const float*, Out*);

// The kernel of the problem's form with 32-bit (narrow) or 64-bit indices.
template <typename In, typename Out>
Kernel<In, Out> KernelFor(const BorderRoundProblem& p, bool narrow) {
  if (narrow) return p.im2col ? &Im2colKernel<uint32_t, In, Out> : &ElementwiseKernel<uint32_t, In, Out>;
  return p.im2col ? &Im2colKernel<int64_t, In, Out> : &ElementwiseKernel<int64_t, In, Out>;
}

inline LaunchShape LaunchShapeOf(const BorderRoundProblem& p) {
  const int64_t work = p.im2col ? p.batch * p.channels * p.out_h * p.out_w : p.count;
  return {static_cast<int>(std::min<int64_t>((work + kThreads - 1) / kThreads, kMaxBlocks)), kThreads};
}

#ifdef __CUDACC__
// Enqueues the problem's kernel on `stream` (device pointers); returns the launch error, if any.
// The one launch of the library (border_round.cu) and of the host bridge (host_bridge/launch.cu).
template <typename In, typename Out>
cudaError_t Enqueue(const BorderRoundProblem& p, const In* x, const float* coeffs, Out* codes, cudaStream_t stream) {
  const LaunchShape shape = LaunchShapeOf(p);
  if (shape.blocks == 0) return cudaSuccess;
  KernelFor<In, Out>(p, UsesNarrowIndex(p))<<<shape.blocks, shape.threads, 0, stream>>>(p, x, coeffs, codes);
  return cudaGetLastError();
}
#endif

}  // namespace kernels
}  // namespace aquant
