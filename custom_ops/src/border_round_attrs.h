// Attribute parsing and input validation of com.aquant::BorderRound, shared by the CPU and
// CUDA kernels (DESIGN.md §4). Every problem a model can have throws Ort::Exception with a
// message naming the op and the attribute or input; ORT turns it into an error status.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "border_round_problem.h"
#include "onnxruntime_cxx_api.h"

namespace aquant {

inline constexpr const char* kDomain = "com.aquant";
inline constexpr const char* kOpName = "BorderRound";

[[noreturn]] inline void Fail(const std::string& message) {
  ORT_CXX_API_THROW(std::string("com.aquant::BorderRound: ") + message, ORT_INVALID_ARGUMENT);
}

inline std::string FloatString(float value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.9g", value);
  return text;
}

inline std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// ORT reports a missing attribute and a wrongly typed one with the same status, so an attribute
// that cannot be read as the wanted type counts as missing only if no other type reads it either.
inline bool HasAttributeOfAnyType(const OrtKernelInfo* info, const char* name) {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  int64_t int_value = 0;
  float float_value = 0.0f;
  return Ort::Status{api.KernelInfoGetAttribute_int64(info, name, &int_value)}.IsOK() ||
         Ort::Status{api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size)}.IsOK() ||
         Ort::Status{api.KernelInfoGetAttribute_float(info, name, &float_value)}.IsOK() ||
         Ort::Status{api.KernelInfoGetAttributeArray_float(info, name, nullptr, &size)}.IsOK() ||
         Ort::Status{api.KernelInfoGetAttribute_string(info, name, nullptr, &size)}.IsOK();
}

inline std::optional<std::vector<int64_t>> ReadInts(const OrtKernelInfo* info, const char* name) {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  Ort::Status status{api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size)};
  if (!status.IsOK()) {
    if (!HasAttributeOfAnyType(info, name)) return std::nullopt;
    Fail(std::string("attribute '") + name + "' must be a list of ints");
  }
  std::vector<int64_t> values(size);
  if (size > 0) Ort::ThrowOnError(api.KernelInfoGetAttributeArray_int64(info, name, values.data(), &size));
  return values;
}

inline std::optional<int64_t> ReadInt(const OrtKernelInfo* info, const char* name) {
  int64_t value = 0;
  Ort::Status status{Ort::GetApi().KernelInfoGetAttribute_int64(info, name, &value)};
  if (!status.IsOK()) {
    if (!HasAttributeOfAnyType(info, name)) return std::nullopt;
    Fail(std::string("attribute '") + name + "' must be an int");
  }
  return value;
}

// A list attribute of the im2col form: `count` values, each >= minimum; `fallback` when absent.
inline std::vector<int64_t> ReadWindowInts(const OrtKernelInfo* info, const char* name, size_t count, int64_t minimum,
                                           int64_t fallback) {
  std::optional<std::vector<int64_t>> values = ReadInts(info, name);
  if (!values) return std::vector<int64_t>(count, fallback);
  if (values->size() != count) {
    Fail(std::string("attribute '") + name + "' must have " + std::to_string(count) + " values, got " +
         ShapeString(*values));
  }
  for (int64_t value : *values) {
    if (value < minimum) {
      Fail(std::string("attribute '") + name + "' values must be >= " + std::to_string(minimum) + ", got " +
           ShapeString(*values));
    }
  }
  return *values;
}

// Attributes as written on the node, validated once when ORT creates the kernel.
struct BorderRoundAttrs {
  bool im2col = false;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;  // ONNX order [top, left, bottom, right]
  int64_t dilation_h = 1, dilation_w = 1;
  bool fuse = true;
  int64_t axis = 1;
  std::optional<int64_t> qmin, qmax;

  explicit BorderRoundAttrs(const OrtKernelInfo* info) {
    std::optional<std::vector<int64_t>> kernel_shape = ReadInts(info, "kernel_shape");
    im2col = kernel_shape.has_value();
    if (im2col) {
      std::vector<int64_t> kernel = ReadWindowInts(info, "kernel_shape", 2, 1, 1);
      std::vector<int64_t> strides = ReadWindowInts(info, "strides", 2, 1, 1);
      std::vector<int64_t> pads = ReadWindowInts(info, "pads", 4, 0, 0);
      std::vector<int64_t> dilations = ReadWindowInts(info, "dilations", 2, 1, 1);
      kernel_h = kernel[0], kernel_w = kernel[1];
      stride_h = strides[0], stride_w = strides[1];
      pad_top = pads[0], pad_left = pads[1], pad_bottom = pads[2], pad_right = pads[3];
      dilation_h = dilations[0], dilation_w = dilations[1];
    } else {
      for (const char* name : {"strides", "pads", "dilations"}) {
        if (ReadInts(info, name)) {
          Fail(std::string("attribute '") + name +
               "' needs 'kernel_shape' (im2col form); remove it for the element-wise form");
        }
      }
    }
    const int64_t fuse_value = ReadInt(info, "fuse").value_or(1);
    if (fuse_value != 0 && fuse_value != 1) Fail("attribute 'fuse' must be 0 or 1, got " + std::to_string(fuse_value));
    fuse = fuse_value == 1;
    axis = ReadInt(info, "axis").value_or(1);
    if (im2col && axis != 1) {
      Fail("attribute 'axis' applies only to the element-wise form (without 'kernel_shape'), got " +
           std::to_string(axis));
    }
    qmin = ReadInt(info, "qmin");
    qmax = ReadInt(info, "qmax");
  }

  // Clip range for output type T: the attributes 'qmin'/'qmax' or T's full range.
  template <typename T>
  std::pair<int32_t, int32_t> ClipRange() const {
    const int64_t lowest = std::numeric_limits<T>::min(), highest = std::numeric_limits<T>::max();
    const int64_t low = qmin.value_or(lowest), high = qmax.value_or(highest);
    if (low < lowest || low > highest) {
      Fail("attribute 'qmin' = " + std::to_string(low) + " is outside the output type's range [" +
           std::to_string(lowest) + ", " + std::to_string(highest) + "]");
    }
    if (high < lowest || high > highest) {
      Fail("attribute 'qmax' = " + std::to_string(high) + " is outside the output type's range [" +
           std::to_string(lowest) + ", " + std::to_string(highest) + "]");
    }
    if (low > high) Fail("attribute 'qmin' (" + std::to_string(low) + ") must be <= 'qmax' (" + std::to_string(high) + ")");
    return {static_cast<int32_t>(low), static_cast<int32_t>(high)};
  }
};

inline int64_t ElementCount(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

// Call before reading the values of 'scale' and 'zero_point' (per-tensor quantization only).
inline void CheckScalarInputs(const std::vector<int64_t>& scale_shape, const std::vector<int64_t>& zero_point_shape) {
  if (ElementCount(scale_shape) != 1) Fail("input 'scale' must hold one value, got shape " + ShapeString(scale_shape));
  if (ElementCount(zero_point_shape) != 1) {
    Fail("input 'zero_point' must hold one value, got shape " + ShapeString(zero_point_shape));
  }
}

// The problem of one call, from the validated attributes and the actual inputs.
// `scale` and `zero_point` are host values (the CUDA kernel takes them as CPU inputs).
inline BorderRoundProblem MakeProblem(const BorderRoundAttrs& attrs, std::pair<int32_t, int32_t> clip_range,
                                      const std::vector<int64_t>& x_shape, float scale, int32_t zero_point,
                                      const std::vector<int64_t>& coeffs_shape) {
  if (!std::isfinite(scale) || !(scale > 0.0f)) Fail("input 'scale' must be finite and > 0, got " + FloatString(scale));
  BorderRoundProblem problem;
  problem.scale = scale;
  problem.zero_point = zero_point;
  problem.qmin = clip_range.first;
  problem.qmax = clip_range.second;
  if (zero_point < problem.qmin || zero_point > problem.qmax) {
    Fail("input 'zero_point' = " + std::to_string(zero_point) + " is outside [qmin, qmax] = [" +
         std::to_string(problem.qmin) + ", " + std::to_string(problem.qmax) + "]");
  }
  if (coeffs_shape.size() != 2 || coeffs_shape[0] < 1 || coeffs_shape[0] > 3 || coeffs_shape[1] < 1) {
    Fail("input 'coeffs' must have shape [D, F] with D in {1, 2, 3} and F >= 1, got " + ShapeString(coeffs_shape));
  }
  problem.degree = static_cast<int32_t>(coeffs_shape[0]);
  problem.features = coeffs_shape[1];

  if (!attrs.im2col) {
    problem.count = ElementCount(x_shape);
    const int64_t rank = static_cast<int64_t>(x_shape.size());
    if (rank > 0 && (attrs.axis < -rank || attrs.axis >= rank)) {
      Fail("attribute 'axis' = " + std::to_string(attrs.axis) + " is out of range for input 'X' of shape " +
           ShapeString(x_shape));
    }
    if (problem.features != 1) {
      const int64_t axis = attrs.axis < 0 ? attrs.axis + rank : attrs.axis;
      if (rank == 0 || x_shape[axis] != problem.features) {
        Fail("input 'coeffs' has F = " + std::to_string(problem.features) + " columns but input 'X' of shape " +
             ShapeString(x_shape) + " has " + (rank == 0 ? std::string("no axis ") : std::to_string(x_shape[axis])) +
             " entries along attribute 'axis' = " + std::to_string(attrs.axis) + " (F must match it or be 1)");
      }
      problem.coeff_divisor = 1;
      for (int64_t dim = axis + 1; dim < rank; ++dim) problem.coeff_divisor *= x_shape[dim];
    }
    return problem;
  }

  if (x_shape.size() != 4) {
    Fail("input 'X' must be 4-D [N, C, H, W] with attribute 'kernel_shape', got shape " + ShapeString(x_shape));
  }
  problem.im2col = true;
  problem.fuse = attrs.fuse;
  problem.batch = x_shape[0], problem.channels = x_shape[1], problem.height = x_shape[2], problem.width = x_shape[3];
  problem.kernel_h = attrs.kernel_h, problem.kernel_w = attrs.kernel_w;
  problem.stride_h = attrs.stride_h, problem.stride_w = attrs.stride_w;
  problem.pad_top = attrs.pad_top, problem.pad_left = attrs.pad_left;
  problem.dilation_h = attrs.dilation_h, problem.dilation_w = attrs.dilation_w;
  const int64_t span_h = attrs.dilation_h * (attrs.kernel_h - 1) + 1;
  const int64_t span_w = attrs.dilation_w * (attrs.kernel_w - 1) + 1;
  const int64_t padded_h = problem.height + attrs.pad_top + attrs.pad_bottom;
  const int64_t padded_w = problem.width + attrs.pad_left + attrs.pad_right;
  if (span_h > padded_h || span_w > padded_w) {
    Fail("attribute 'kernel_shape' with 'dilations' spans " + std::to_string(span_h) + "x" + std::to_string(span_w) +
         ", larger than the padded input " + std::to_string(padded_h) + "x" + std::to_string(padded_w) +
         " of input 'X' " + ShapeString(x_shape));
  }
  problem.out_h = (padded_h - span_h) / attrs.stride_h + 1;
  problem.out_w = (padded_w - span_w) / attrs.stride_w + 1;
  const int64_t kernel_area = attrs.kernel_h * attrs.kernel_w;
  if (problem.features == problem.channels * kernel_area) {
    problem.coeff_divisor = 1;
  } else if (problem.features == problem.channels) {
    problem.coeff_divisor = kernel_area;
  } else if (problem.features != 1) {
    Fail("input 'coeffs' has F = " + std::to_string(problem.features) + " columns; with C = " +
         std::to_string(problem.channels) + " and attribute 'kernel_shape' " + std::to_string(attrs.kernel_h) + "x" +
         std::to_string(attrs.kernel_w) + " F must be C*kh*kw = " + std::to_string(problem.channels * kernel_area) +
         ", C or 1");
  }
  return problem;
}

// Output shape: X's shape (element-wise) or [N, C*kh*kw, OH*OW] (im2col).
inline std::vector<int64_t> OutputShape(const BorderRoundProblem& problem, const std::vector<int64_t>& x_shape) {
  if (!problem.im2col) return x_shape;
  return {problem.batch, problem.channels * problem.kernel_h * problem.kernel_w, problem.out_h * problem.out_w};
}

}  // namespace aquant
