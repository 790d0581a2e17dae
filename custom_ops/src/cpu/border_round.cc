// CPU kernel of com.aquant::BorderRound: the reference implementation (DESIGN.md §3–4).
//
//   v = x / scale + zero_point                  (float32, true division)
//   B = (b2 * v + b1) * v + b0                  (no FMA: built with -ffp-contract=off)
//   fused: B_c(window) = (sum over (ky, kx) row-major of B_j(v_j)) / (kh * kw)
//   code = clip(ceil(v - B), qmin, qmax); padded im2col entries use v = zero_point inside
//   the mean and emit zero_point.
//
// Single-threaded on purpose: plain loops whose innermost dimension is contiguous, so the
// compiler vectorises them without reordering any float operation.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../border_round_attrs.h"
#include "../kernels.h"

namespace aquant {
namespace {

inline float ToFloat(float value) { return value; }
inline float ToFloat(Ort::Float16_t value) { return value.ToFloat(); }

// Coefficients of one border column.
struct Border {
  int32_t degree;
  float b0, b1, b2;

  Border(const BorderRoundProblem& problem, const float* coeffs, int64_t column)
      : degree(problem.degree),
        b0(coeffs[column]),
        b1(degree > 1 ? coeffs[problem.features + column] : 0.0f),
        b2(degree > 2 ? coeffs[2 * problem.features + column] : 0.0f) {}

  float operator()(float v) const {
    if (degree == 1) return b0;
    if (degree == 2) return b1 * v + b0;
    return (b2 * v + b1) * v + b0;
  }
};

template <typename Out>
inline Out Code(float v, float border, float qmin, float qmax) {
  // fmax/fmin map NaN to qmin, so a NaN input yields a defined code.
  return static_cast<Out>(static_cast<int32_t>(std::fmin(std::fmax(std::ceil(v - border), qmin), qmax)));
}

template <typename In, typename Out>
void RunElementwise(const BorderRoundProblem& problem, const In* x, const float* coeffs, Out* codes) {
  const float scale = problem.scale, zero_point = static_cast<float>(problem.zero_point);
  const float qmin = static_cast<float>(problem.qmin), qmax = static_cast<float>(problem.qmax);
  const int64_t run = problem.coeff_divisor;  // consecutive elements sharing one coefficient column
  for (int64_t start = 0, block = 0; start < problem.count; start += run, ++block) {
    const Border border(problem, coeffs, block % problem.features);
    const int64_t end = std::min(start + run, problem.count);
    for (int64_t i = start; i < end; ++i) {
      const float v = ToFloat(x[i]) / scale + zero_point;
      codes[i] = Code<Out>(v, border(v), qmin, qmax);
    }
  }
}

template <typename In, typename Out>
void RunIm2col(const BorderRoundProblem& problem, const In* x, const float* coeffs, Out* codes) {
  const float scale = problem.scale, zero_point = static_cast<float>(problem.zero_point);
  const float qmin = static_cast<float>(problem.qmin), qmax = static_cast<float>(problem.qmax);
  const Out padded_code = static_cast<Out>(problem.zero_point);
  const int64_t kernel_area = problem.kernel_h * problem.kernel_w;
  const int64_t windows = problem.out_h * problem.out_w;
  const int64_t plane = problem.height * problem.width;
  std::vector<float> fused_border(problem.fuse ? windows : 0);

  // Visits every window of kernel entry (ky, kx): fn(window, inside, v).
  auto for_each_window = [&](const In* x_plane, int64_t ky, int64_t kx, auto&& fn) {
    for (int64_t oy = 0; oy < problem.out_h; ++oy) {
      const int64_t iy = oy * problem.stride_h - problem.pad_top + ky * problem.dilation_h;
      const bool row_inside = iy >= 0 && iy < problem.height;
      for (int64_t ox = 0; ox < problem.out_w; ++ox) {
        const int64_t ix = ox * problem.stride_w - problem.pad_left + kx * problem.dilation_w;
        const bool inside = row_inside && ix >= 0 && ix < problem.width;
        const float v = inside ? ToFloat(x_plane[iy * problem.width + ix]) / scale + zero_point : zero_point;
        fn(oy * problem.out_w + ox, inside, v);
      }
    }
  };

  for (int64_t n = 0; n < problem.batch; ++n) {
    for (int64_t c = 0; c < problem.channels; ++c) {
      const In* x_plane = x + (n * problem.channels + c) * plane;
      const int64_t first_row = c * kernel_area;  // im2col row j = (c * kh + ky) * kw + kx
      auto border_of = [&](int64_t j) { return Border(problem, coeffs, (j / problem.coeff_divisor) % problem.features); };
      if (problem.fuse) {
        std::fill(fused_border.begin(), fused_border.end(), 0.0f);
        for (int64_t k = 0; k < kernel_area; ++k) {
          const Border border = border_of(first_row + k);
          for_each_window(x_plane, k / problem.kernel_w, k % problem.kernel_w,
                          [&](int64_t window, bool, float v) { fused_border[window] += border(v); });
        }
        const float area = static_cast<float>(kernel_area);
        for (float& total : fused_border) total = total / area;
      }
      for (int64_t k = 0; k < kernel_area; ++k) {
        const Border border = border_of(first_row + k);
        Out* row = codes + (n * problem.channels * kernel_area + first_row + k) * windows;
        for_each_window(x_plane, k / problem.kernel_w, k % problem.kernel_w, [&](int64_t window, bool inside, float v) {
          const float b = problem.fuse ? fused_border[window] : border(v);
          row[window] = inside ? Code<Out>(v, b, qmin, qmax) : padded_code;
        });
      }
    }
  }
}

// One Lite-API kernel per (X type, output type) pair; attributes are read once, at creation.
template <typename In, typename Out>
struct BorderRoundCpu {
  BorderRoundCpu(const OrtApi*, const OrtKernelInfo* info) : attrs_(info), clip_range_(attrs_.ClipRange<Out>()) {}

  Ort::Status Compute(const Ort::Custom::Tensor<In>& x, const Ort::Custom::Tensor<float>& scale,
                      const Ort::Custom::Tensor<Out>& zero_point, const Ort::Custom::Tensor<float>& coeffs,
                      Ort::Custom::Tensor<Out>& codes) {
    try {
      const std::vector<int64_t>& x_shape = x.Shape();
      CheckScalarInputs(scale.Shape(), zero_point.Shape());
      const BorderRoundProblem problem = MakeProblem(attrs_, clip_range_, x_shape, scale.Data()[0],
                                                     static_cast<int32_t>(zero_point.Data()[0]), coeffs.Shape());
      Out* out = codes.Allocate(OutputShape(problem, x_shape));
      if (problem.im2col) {
        RunIm2col(problem, x.Data(), coeffs.Data(), out);
      } else {
        RunElementwise(problem, x.Data(), coeffs.Data(), out);
      }
      return Ort::Status{nullptr};
    } catch (const Ort::Exception& error) {
      return Ort::Status{error};
    } catch (const std::exception& error) {
      return Ort::Status{error};
    }
  }

 private:
  BorderRoundAttrs attrs_;
  std::pair<int32_t, int32_t> clip_range_;
};

template <typename In, typename Out>
void AddCpuKernel(LiteOps& ops) {
  ops.emplace_back(
      WithStatusOnCreate(Ort::Custom::CreateLiteCustomOp<BorderRoundCpu<In, Out>>(kOpName, "CPUExecutionProvider")));
}

}  // namespace

void CreateCpuKernels(LiteOps& ops) {
  AddCpuKernel<float, uint8_t>(ops);
  AddCpuKernel<float, int8_t>(ops);
  AddCpuKernel<Ort::Float16_t, uint8_t>(ops);
  AddCpuKernel<Ort::Float16_t, int8_t>(ops);
}

}  // namespace aquant
