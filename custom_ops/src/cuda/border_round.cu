// CUDA kernels of com.aquant::BorderRound (DESIGN.md §3–5). Same arithmetic as the CPU
// reference, with explicitly rounded intrinsics so nvcc cannot contract into FMA:
//   v = x / scale + zero_point; B = (b2 * v + b1) * v + b0; code = clip(ceil(v - B), qmin, qmax).
// im2col form: one thread per (n, c, window) reads the kh*kw inputs of its window once,
// averages their borders (fuse) and writes kh*kw codes; consecutive threads own consecutive
// windows, so the writes of each im2col row are coalesced.
#include <cuda_fp16.h>

#include <algorithm>

#include "border_round.cuh"

namespace aquant {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535LL * 16;  // grid-stride loops cover the rest
constexpr int kCachedWindow = 49;             // kernels up to 7x7 keep their inputs in registers/local memory

__device__ __forceinline__ float LoadX(const float* x, int64_t index) { return x[index]; }
__device__ __forceinline__ float LoadX(const uint16_t* x, int64_t index) {
  return __half2float(__ushort_as_half(x[index]));
}

__device__ __forceinline__ float Quantize(float x, float scale, float zero_point) {
  return __fadd_rn(__fdiv_rn(x, scale), zero_point);
}

__device__ __forceinline__ float EvalBorder(const BorderRoundProblem& p, const float* coeffs, int64_t column, float v) {
  const float b0 = coeffs[column];
  if (p.degree == 1) return b0;
  const float b1 = coeffs[p.features + column];
  if (p.degree == 2) return __fadd_rn(__fmul_rn(b1, v), b0);
  const float b2 = coeffs[2 * p.features + column];
  return __fadd_rn(__fmul_rn(__fadd_rn(__fmul_rn(b2, v), b1), v), b0);
}

template <typename Out>
__device__ __forceinline__ Out Code(float v, float border, float qmin, float qmax) {
  // fmaxf/fminf map NaN to qmin, as the CPU kernel does.
  return static_cast<Out>(static_cast<int32_t>(fminf(fmaxf(ceilf(__fsub_rn(v, border)), qmin), qmax)));
}

template <typename In, typename Out>
__global__ void ElementwiseKernel(const BorderRoundProblem p, const In* __restrict__ x,
                                  const float* __restrict__ coeffs, Out* __restrict__ codes) {
  const float zero_point = static_cast<float>(p.zero_point);
  const float qmin = static_cast<float>(p.qmin), qmax = static_cast<float>(p.qmax);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < p.count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = Quantize(LoadX(x, i), p.scale, zero_point);
    codes[i] = Code<Out>(v, EvalBorder(p, coeffs, (i / p.coeff_divisor) % p.features, v), qmin, qmax);
  }
}

template <typename In, typename Out>
__global__ void Im2colKernel(const BorderRoundProblem p, const In* __restrict__ x, const float* __restrict__ coeffs,
                             Out* __restrict__ codes) {
  const float zero_point = static_cast<float>(p.zero_point);
  const float qmin = static_cast<float>(p.qmin), qmax = static_cast<float>(p.qmax);
  const int64_t kernel_area = p.kernel_h * p.kernel_w;
  const int64_t windows = p.out_h * p.out_w;
  const int64_t total = p.batch * p.channels * windows;
  const bool cache = kernel_area <= kCachedWindow;
  float cached[kCachedWindow];
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t window = t % windows;
    const int64_t nc = t / windows;  // n * channels + c
    const int64_t c = nc % p.channels;
    const int64_t oy = window / p.out_w, ox = window % p.out_w;
    const In* x_plane = x + nc * p.height * p.width;
    const int64_t first_row = c * kernel_area;

    // Window entry k: whether it lies inside X (else padding) and its offset in the plane.
    auto locate = [&](int64_t k, int64_t& offset) {
      const int64_t iy = oy * p.stride_h - p.pad_top + (k / p.kernel_w) * p.dilation_h;
      const int64_t ix = ox * p.stride_w - p.pad_left + (k % p.kernel_w) * p.dilation_w;
      offset = iy * p.width + ix;
      return iy >= 0 && iy < p.height && ix >= 0 && ix < p.width;
    };
    auto value = [&](bool inside, int64_t offset) {
      return inside ? Quantize(LoadX(x_plane, offset), p.scale, zero_point) : zero_point;
    };
    auto column = [&](int64_t k) { return ((first_row + k) / p.coeff_divisor) % p.features; };

    float fused = 0.0f;
    if (p.fuse) {
      float sum = 0.0f;  // sequential float32 sum in (ky, kx) row-major order, as the CPU reference
      for (int64_t k = 0; k < kernel_area; ++k) {
        int64_t offset;
        const bool inside = locate(k, offset);
        const float v = value(inside, offset);
        if (cache) cached[k] = v;
        sum = __fadd_rn(sum, EvalBorder(p, coeffs, column(k), v));
      }
      fused = __fdiv_rn(sum, static_cast<float>(kernel_area));
    }
    Out* out = codes + nc * kernel_area * windows + window;  // row first_row of sample n
    for (int64_t k = 0; k < kernel_area; ++k) {
      int64_t offset;
      const bool inside = locate(k, offset);
      // Kernels larger than kCachedWindow read X a second time here.
      const float v = (p.fuse && cache) ? cached[k] : value(inside, offset);
      const float border = p.fuse ? fused : EvalBorder(p, coeffs, column(k), v);
      out[k * windows] = inside ? Code<Out>(v, border, qmin, qmax) : static_cast<Out>(p.zero_point);
    }
  }
}

template <typename In, typename Out>
cudaError_t Launch(const BorderRoundProblem& p, const In* x, const float* coeffs, Out* codes, cudaStream_t stream) {
  const int64_t work = p.im2col ? p.batch * p.channels * p.out_h * p.out_w : p.count;
  if (work == 0) return cudaSuccess;
  const int blocks = static_cast<int>(std::min<int64_t>((work + kThreads - 1) / kThreads, kMaxBlocks));
  if (p.im2col) {
    Im2colKernel<In, Out><<<blocks, kThreads, 0, stream>>>(p, x, coeffs, codes);
  } else {
    ElementwiseKernel<In, Out><<<blocks, kThreads, 0, stream>>>(p, x, coeffs, codes);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchBorderRound(const BorderRoundProblem& p, const float* x, const float* coeffs, uint8_t* codes,
                              cudaStream_t stream) {
  return Launch(p, x, coeffs, codes, stream);
}
cudaError_t LaunchBorderRound(const BorderRoundProblem& p, const float* x, const float* coeffs, int8_t* codes,
                              cudaStream_t stream) {
  return Launch(p, x, coeffs, codes, stream);
}
cudaError_t LaunchBorderRound(const BorderRoundProblem& p, const uint16_t* x_half, const float* coeffs, uint8_t* codes,
                              cudaStream_t stream) {
  return Launch(p, x_half, coeffs, codes, stream);
}
cudaError_t LaunchBorderRound(const BorderRoundProblem& p, const uint16_t* x_half, const float* coeffs, int8_t* codes,
                              cudaStream_t stream) {
  return Launch(p, x_half, coeffs, codes, stream);
}

}  // namespace aquant
