// One BorderRound call described with plain types only, so the CPU kernel, the CUDA
// launcher (.cuh, compiled by nvcc) and the ORT-facing code share it without any ORT
// header reaching nvcc. Semantics: DESIGN.md §3–4, tests/border_reference.py.
#pragma once

#include <cstdint>

namespace aquant {

struct BorderRoundProblem {
  // Quantizer: v = x / scale + zero_point; code = clip(ceil(v - B(v)), qmin, qmax).
  float scale = 1.0f;
  int32_t zero_point = 0;
  int32_t qmin = 0;
  int32_t qmax = 255;

  // coeffs is [degree, features] row-major: B = (b2 * v + b1) * v + b0 for degree 3.
  int32_t degree = 1;
  int64_t features = 1;
  // Coefficient column of an element: (index / coeff_divisor) % features, where index is the
  // flat element index (element-wise form: coeff_divisor = product of dims after `axis`)
  // or the im2col row j (im2col form: kh*kw when features == C, else 1). features == 1
  // always gives column 0.
  int64_t coeff_divisor = 1;

  // Element-wise form: X and codes have `count` elements in the same layout.
  int64_t count = 0;

  // im2col form: X [batch, channels, height, width] -> codes [batch, channels*kh*kw, out_h*out_w].
  bool im2col = false;
  bool fuse = true;
  int64_t batch = 0, channels = 0, height = 0, width = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t out_h = 0, out_w = 0;
};

}  // namespace aquant
