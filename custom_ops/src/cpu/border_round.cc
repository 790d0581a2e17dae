// CPU kernel of com.aquant::BorderRound (DESIGN.md §3–4), bit exact with tests/border_reference.py.
//
//   v = x / scale + zero_point                  (float32, true division)
//   B = (b2 * v + b1) * v + b0                  (no FMA: built with -ffp-contract=off)
//   fused: B_c(window) = (sum over (ky, kx) row-major of B_j(v_j)) / (kh * kw)
//   code = clip(ceil(v - B), qmin, qmax); padded im2col entries use v = zero_point inside
//   the mean and emit zero_point.
//
// Speed without reordering any float operation:
// - the inner loops run over a contiguous stretch with one coefficient column and a degree
//   fixed at compile time, so the compiler vectorises them; on x86-64 they are also built
//   for AVX2 and AVX-512 and picked at load time (target_clones), the library still runs on
//   any CPU; vector widths change no result (each element's operations are the same);
// - im2col: v is computed once per (n, c) plane into zero_point-padded scratch, split into
//   stride_h x stride_w phase planes (PhaseLayout) so that with any stride the windows of one tap
//   read one contiguous run, and the planes of one channel in consecutive images are stacked, so
//   each tap's run over all of them is a single long vectorised loop. With a 3x3 or 5x5 kernel
//   and fuse=1 one loop over the windows evaluates all taps' borders, their mean and all taps'
//   codes per window in registers; otherwise the fused sums are accumulated tap by tap through
//   memory (each window adds its taps in row-major order either way). Codes are computed for
//   whole rows of windows and copied out row by row, the few padded entries overwritten with
//   zero_point. Against strided rows of windows, tap by tap: ResNet-20's [32, 16, 32, 32] 1.8x
//   and MobileNetV2's stride-2 [1, 96, 112, 112] 2.6x faster (1 thread);
// - work is split into independent element ranges / planes on ONNX Runtime's intra-op thread
//   pool; every output element is computed by one task, so codes never depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "../border_round_attrs.h"
#include "../kernels.h"

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && defined(__has_attribute)
#if __has_attribute(target_clones) && !defined(__clang__) && __GNUC__ >= 11
// AVX-512 (x86-64-v4) doubles the element-wise throughput where the CPU has it (2.1x on
// [1, 96, 112, 112], benchmarks.ort_latency --kernel); GCC 11 introduced the level names.
#define AQUANT_HOT_LOOP __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#elif __has_attribute(target_clones)
#define AQUANT_HOT_LOOP __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef AQUANT_HOT_LOOP
#define AQUANT_HOT_LOOP
#endif
#if defined(__GNUC__)
#define AQUANT_INLINE inline __attribute__((always_inline))
#else
#define AQUANT_INLINE inline
#endif

namespace aquant {
namespace {

// Elements (or output codes) per parallel task of a large op.
constexpr int64_t kTaskElements = 64 * 1024;
// A smaller op is still split this many ways, into tasks of at least kMinTaskElements, so that a
// batch-1 layer uses a second thread: ResNet-20 im2col, batch 1, 2 threads 0.537 -> 0.448 ms.
constexpr int64_t kMinTasks = 4;
constexpr int64_t kMinTaskElements = 8 * 1024;
// Elements per iteration of the widest vectorised loop (float32 in, 8-bit codes out, AVX2).
constexpr int64_t kVectorRun = 32;
// float16 inputs are widened in chunks of this many elements before the float32 loops.
constexpr int64_t kWidenChunk = 1024;

inline int64_t RoundUp(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

inline float ToFloat(float value) { return value; }
inline float ToFloat(Ort::Float16_t value) { return value.ToFloat(); }

struct Quantizer {
  float scale, zero_point, qmin, qmax;
};

// Coefficients of one border column; unused ones (degree < 3) are zero and never read.
struct Border {
  float b0, b1, b2;
};

Border BorderOf(const BorderRoundProblem& problem, const float* coeffs, int64_t column) {
  return {coeffs[column], problem.degree > 1 ? coeffs[problem.features + column] : 0.0f,
          problem.degree > 2 ? coeffs[2 * problem.features + column] : 0.0f};
}

template <int Degree>
AQUANT_INLINE float Evaluate(const Border& border, float v) {
  if constexpr (Degree == 1) return border.b0;
  if constexpr (Degree == 2) return border.b1 * v + border.b0;
  return (border.b2 * v + border.b1) * v + border.b0;
}

AQUANT_INLINE float Scaled(float x, const Quantizer& q) { return x / q.scale + q.zero_point; }

// clip(ceil(y), qmin, qmax) == ceil(clip(y, qmin, qmax)) for integer bounds; clipping first keeps
// y in int32 range for the conversion. std::ceil is one rounding instruction in the SSE4.1+ clones
// and an inline sequence in the default one, because the library is built with -fno-trapping-math
// (which changes no result); a truncation plus a compare-and-increment took 2 of ~9 operations
// per code more.
template <typename Out>
AQUANT_INLINE Out Code(float v, float border, const Quantizer& q) {
  float clipped = v - border;
  clipped = clipped > q.qmin ? clipped : q.qmin;  // a NaN compares false here, so a NaN input yields qmin
  clipped = clipped < q.qmax ? clipped : q.qmax;
  return static_cast<Out>(static_cast<int32_t>(std::ceil(clipped)));
}

// ---------------------------------------------------------------- hot loops (vectorised)
// Each cloned entry point switches on the degree once and runs a loop compiled for that degree;
// the loops are force-inlined so that the AVX2 clone really gets AVX2 loops.

template <int Degree, typename Out>
AQUANT_INLINE void QuantizeLoop(const float* x, Out* codes, int64_t length, const Quantizer& q, const Border& border) {
  for (int64_t i = 0; i < length; ++i) {
    const float v = Scaled(x[i], q);
    codes[i] = Code<Out>(v, Evaluate<Degree>(border, v), q);
  }
}

// Element-wise codes of a contiguous run sharing one border column.
template <typename Out>
AQUANT_INLINE void QuantizeRunImpl(const float* x, Out* codes, int64_t length, Quantizer q, int32_t degree,
                                   Border border) {
  if (degree == 1) return QuantizeLoop<1>(x, codes, length, q, border);
  if (degree == 2) return QuantizeLoop<2>(x, codes, length, q, border);
  QuantizeLoop<3>(x, codes, length, q, border);
}

AQUANT_HOT_LOOP void QuantizeRun(const float* x, uint8_t* codes, int64_t length, Quantizer q, int32_t degree,
                                 Border border) {
  QuantizeRunImpl(x, codes, length, q, degree, border);
}

AQUANT_HOT_LOOP void QuantizeRun(const float* x, int8_t* codes, int64_t length, Quantizer q, int32_t degree,
                                 Border border) {
  QuantizeRunImpl(x, codes, length, q, degree, border);
}

AQUANT_HOT_LOOP void ScaleRow(const float* x, float* v, int64_t length, Quantizer q) {
  for (int64_t i = 0; i < length; ++i) v[i] = Scaled(x[i], q);
}

// even[j] = row[2j], odd[j] = row[2j + 1]: stride 2's column phases, in a loop the compiler
// vectorises (the general strided copy stays scalar: [32, 144, 56, 56] stride 2, 1 thread,
// 11.2 ms with it against 9.9 ms).
AQUANT_HOT_LOOP void SplitPairs(const float* row, float* even, float* odd, int64_t pairs) {
  for (int64_t j = 0; j < pairs; ++j) {
    even[j] = row[2 * j];
    odd[j] = row[2 * j + 1];
  }
}

template <int Degree>
AQUANT_INLINE void AccumulateLoop(float* sums, const float* v, int64_t length, const Border& border) {
  for (int64_t i = 0; i < length; ++i) sums[i] += Evaluate<Degree>(border, v[i]);
}

// sums[i] += B(v[i]) over one tap's run of windows (the two-pass fused form).
AQUANT_HOT_LOOP void AccumulateTap(float* sums, const float* v, int64_t length, int32_t degree, Border border) {
  if (degree == 1) return AccumulateLoop<1>(sums, v, length, border);
  if (degree == 2) return AccumulateLoop<2>(sums, v, length, border);
  AccumulateLoop<3>(sums, v, length, border);
}

// Degree 0 stands for the fused form: the border is the window's mean fused[i].
template <int Degree, typename Out>
AQUANT_INLINE void CodeLoop(Out* codes, const float* v, const float* fused, int64_t length, const Quantizer& q,
                            const Border& border) {
  for (int64_t i = 0; i < length; ++i) {
    if constexpr (Degree == 0) {
      codes[i] = Code<Out>(v[i], fused[i], q);
    } else {
      codes[i] = Code<Out>(v[i], Evaluate<Degree>(border, v[i]), q);
    }
  }
}

// Codes of one tap's run of windows: the fused mean `fused` when given, else B_j(v).
template <typename Out>
AQUANT_INLINE void CodeTapImpl(Out* codes, const float* v, const float* fused, int64_t length, Quantizer q,
                               int32_t degree, Border border) {
  if (fused != nullptr) return CodeLoop<0>(codes, v, fused, length, q, border);
  if (degree == 1) return CodeLoop<1>(codes, v, fused, length, q, border);
  if (degree == 2) return CodeLoop<2>(codes, v, fused, length, q, border);
  CodeLoop<3>(codes, v, fused, length, q, border);
}

AQUANT_HOT_LOOP void CodeTap(uint8_t* codes, const float* v, const float* fused, int64_t length, Quantizer q,
                             int32_t degree, Border border) {
  CodeTapImpl(codes, v, fused, length, q, degree, border);
}

AQUANT_HOT_LOOP void CodeTap(int8_t* codes, const float* v, const float* fused, int64_t length, Quantizer q,
                             int32_t degree, Border border) {
  CodeTapImpl(codes, v, fused, length, q, degree, border);
}

// Fused codes of all `Taps` taps over one wide-order run (fuse=1) in one pass: window i's
// border is the mean of its taps' B_j(v), added in row-major tap order from 0 as the two-pass form
// adds them, and each tap's code goes to its own run (codes + t * code_pitch). Sums, means and v
// stay in registers: 1.35x faster than accumulating each tap's sums through memory on ResNet-20's
// [32, 16, 32, 32] maps.
template <int Degree, int Taps, typename Out>
AQUANT_INLINE void FusedRunLoop(Out* codes, int64_t code_pitch, const float* v, const int64_t* offsets,
                                const Border* borders, int64_t length, const Quantizer& q) {
  const float* tap_v[Taps];
  Out* tap_codes[Taps];
  Border border[Taps];
  for (int t = 0; t < Taps; ++t) {
    tap_v[t] = v + offsets[t];
    tap_codes[t] = codes + t * code_pitch;
    border[t] = borders[t];
  }
#pragma GCC ivdep
  for (int64_t i = 0; i < length; ++i) {
    float sum = 0.0f;
#pragma GCC unroll 32
    for (int t = 0; t < Taps; ++t) sum += Evaluate<Degree>(border[t], tap_v[t][i]);
    const float fused = sum / static_cast<float>(Taps);
#pragma GCC unroll 32
    for (int t = 0; t < Taps; ++t) tap_codes[t][i] = Code<Out>(tap_v[t][i], fused, q);
  }
}

template <int Taps, typename Out>
AQUANT_INLINE void FusedRunImpl(Out* codes, int64_t code_pitch, const float* v, const int64_t* offsets,
                                const Border* borders, int64_t length, Quantizer q, int32_t degree) {
  if (degree == 1) return FusedRunLoop<1, Taps>(codes, code_pitch, v, offsets, borders, length, q);
  if (degree == 2) return FusedRunLoop<2, Taps>(codes, code_pitch, v, offsets, borders, length, q);
  FusedRunLoop<3, Taps>(codes, code_pitch, v, offsets, borders, length, q);
}

// Kernel areas with a one-pass fused loop; others take the two-pass form.
constexpr bool HasFusedRun(int64_t taps) { return taps == 9 || taps == 25; }
constexpr int64_t kMaxFusedTaps = 25;

// Precondition: HasFusedRun(taps).
template <typename Out>
AQUANT_INLINE void FusedRunAnyTaps(Out* codes, int64_t code_pitch, const float* v, const int64_t* offsets,
                                   const Border* borders, int64_t taps, int64_t length, Quantizer q, int32_t degree) {
  if (taps == 9) return FusedRunImpl<9>(codes, code_pitch, v, offsets, borders, length, q, degree);
  FusedRunImpl<25>(codes, code_pitch, v, offsets, borders, length, q, degree);
}

AQUANT_HOT_LOOP void FusedRun(uint8_t* codes, int64_t code_pitch, const float* v, const int64_t* offsets,
                              const Border* borders, int64_t taps, int64_t length, Quantizer q, int32_t degree) {
  FusedRunAnyTaps(codes, code_pitch, v, offsets, borders, taps, length, q, degree);
}

AQUANT_HOT_LOOP void FusedRun(int8_t* codes, int64_t code_pitch, const float* v, const int64_t* offsets,
                              const Border* borders, int64_t taps, int64_t length, Quantizer q, int32_t degree) {
  FusedRunAnyTaps(codes, code_pitch, v, offsets, borders, taps, length, q, degree);
}

// Window positions [first, last) along one axis whose input entry is inside the map (not padding).
struct InsideRange {
  int64_t first, last;
};

// Copies one row of codes (a few dozen bytes: less than a memmove call costs) in fixed-size moves,
// the last one overlapping the previous.
template <int64_t Bytes, typename Out>
AQUANT_INLINE void CopyInChunks(Out* destination, const Out* source, int64_t length) {
  constexpr int64_t kChunk = Bytes / sizeof(Out);
  for (int64_t i = 0; i + kChunk < length; i += kChunk) std::memcpy(destination + i, source + i, Bytes);
  std::memcpy(destination + length - kChunk, source + length - kChunk, Bytes);
}

// Copies rows [rows.first, rows.last) of `length` codes, `pitch` apart in `source` and `length`
// apart in `destination`. Its own function, with the sizes as by-value parameters: inlined into
// the im2col loop, the byte stores (which may alias anything) made the compiler reload them from
// the closure every row, a third of the op's time on 32-wide maps.
template <typename Out>
void CopyRows(Out* destination, const Out* source, int64_t pitch, int64_t length, InsideRange rows) {
  static_assert(sizeof(Out) == 1, "codes are 8-bit");
  for (int64_t row = rows.first; row < rows.last; ++row) {
    Out* to = destination + row * length;
    const Out* from = source + row * pitch;
    if (length >= 16) {
      CopyInChunks<16>(to, from, length);
    } else if (length >= 8) {
      CopyInChunks<8>(to, from, length);
    } else {
      for (int64_t i = 0; i < length; ++i) to[i] = from[i];
    }
  }
}

// padded_code at the windows of one tap (out_h * out_w codes) outside rows x cols.
template <typename Out>
void FillPadding(Out* codes, int64_t out_h, int64_t out_w, InsideRange rows, InsideRange cols, Out padded_code) {
  std::fill(codes, codes + rows.first * out_w, padded_code);
  std::fill(codes + rows.last * out_w, codes + out_h * out_w, padded_code);
  // The side columns are a window or two wide: filled column by column, strided stores rather
  // than two tiny memset calls per row.
  auto fill_columns = [&](int64_t first, int64_t last) {
    for (int64_t ox = first; ox < last; ++ox) {
      for (int64_t oy = rows.first; oy < rows.last; ++oy) codes[oy * out_w + ox] = padded_code;
    }
  };
  fill_columns(0, cols.first);
  fill_columns(cols.last, out_w);
}

// ---------------------------------------------------------------- parallel loop

// Tasks for `work` elements split at `units` boundaries (at most one task a unit).
int64_t TaskCount(int64_t work, int64_t units) {
  const int64_t by_size = (work + kTaskElements - 1) / kTaskElements;
  const int64_t small_split = std::min(kMinTasks, work / kMinTaskElements);
  return std::clamp<int64_t>(std::max(by_size, small_split), 1, std::max<int64_t>(units, 1));
}

// Runs task(i) for i in [0, tasks) on ORT's intra-op thread pool (inline for a single task or a
// session with one thread). Exceptions must not cross the pool: the first one is rethrown here.
template <typename Task>
void ParallelFor(OrtKernelContext* context, int64_t tasks, Task&& task) {
  if (tasks <= 1) {
    if (tasks == 1) task(int64_t{0});
    return;
  }
  struct Shared {
    std::remove_reference_t<Task>* task;
    std::mutex mutex;
    std::exception_ptr error;
  } shared{&task, {}, nullptr};
  auto run_one = [](void* data, size_t index) {
    Shared& state = *static_cast<Shared*>(data);
    try {
      (*state.task)(static_cast<int64_t>(index));
    } catch (...) {
      std::lock_guard<std::mutex> lock(state.mutex);
      if (!state.error) state.error = std::current_exception();
    }
  };
  Ort::KernelContext(context).ParallelFor(run_one, static_cast<size_t>(tasks), 0, &shared);
  if (shared.error) std::rethrow_exception(shared.error);
}

Quantizer QuantizerOf(const BorderRoundProblem& problem) {
  return {problem.scale, static_cast<float>(problem.zero_point), static_cast<float>(problem.qmin),
          static_cast<float>(problem.qmax)};
}

// ---------------------------------------------------------------- element-wise form

template <typename In, typename Out>
void QuantizeSpan(const In* x, Out* codes, int64_t length, Quantizer q, int32_t degree, Border border) {
  if constexpr (std::is_same_v<In, float>) {
    QuantizeRun(x, codes, length, q, degree, border);
  } else {
    float widened[kWidenChunk];
    for (int64_t start = 0; start < length; start += kWidenChunk) {
      const int64_t size = std::min(kWidenChunk, length - start);
      for (int64_t i = 0; i < size; ++i) widened[i] = ToFloat(x[start + i]);
      QuantizeRun(widened, codes + start, size, q, degree, border);
    }
  }
}

template <typename In, typename Out>
void RunElementwise(OrtKernelContext* context, const BorderRoundProblem& problem, const In* x, const float* coeffs,
                    Out* codes) {
  const Quantizer q = QuantizerOf(problem);
  const int64_t run = problem.coeff_divisor;  // consecutive elements sharing one coefficient column
  if (problem.count == 0) return;
  // Tasks of equal size in whole vector iterations.
  const int64_t wanted_tasks = TaskCount(problem.count, (problem.count + kVectorRun - 1) / kVectorRun);
  const int64_t per_task = RoundUp((problem.count + wanted_tasks - 1) / wanted_tasks, kVectorRun);
  const int64_t tasks = (problem.count + per_task - 1) / per_task;
  ParallelFor(context, tasks, [&](int64_t task) {
    const int64_t end = std::min((task + 1) * per_task, problem.count);
    for (int64_t start = task * per_task; start < end;) {
      const int64_t block = start / run;
      const int64_t stop = std::min((block + 1) * run, end);
      const Border border = BorderOf(problem, coeffs, block % problem.features);
      QuantizeSpan(x + start, codes + start, stop - start, q, problem.degree, border);
      start = stop;
    }
  });
}

// ---------------------------------------------------------------- im2col form

// The InsideRange of one tap: input index o * stride - pad + k * dilation in [0, size).
InsideRange InsideWindows(int64_t windows, int64_t stride, int64_t pad, int64_t offset, int64_t size) {
  // o * stride >= pad - offset and o * stride < size + pad - offset, offset = k * dilation.
  const int64_t low = pad - offset, high = size + pad - offset;
  const int64_t first = low <= 0 ? 0 : (low + stride - 1) / stride;
  const int64_t last = high <= 0 ? 0 : (high + stride - 1) / stride;
  return {std::min(first, windows), std::min(std::max(last, first), windows)};
}

// Scratch layout of the im2col form. The zero_point-padded input of one (image, channel) plane
// (padded_h x padded_w: exactly the positions windows read) is stored as stride_h * stride_w phase
// planes: padded entry (py, px) lies in phase (py % stride_h, px % stride_w) at row py / stride_h,
// column px / stride_w of a phase_h x phase_w plane. The phase planes of `stack` images follow
// each other within one region per phase (phase_pitch apart, with kVectorRun entries of slack).
// Tap (ky, kx) of window (oy, ox) reads padded entry (oy * stride_h + ry, ox * stride_w + rx),
// ry = ky * dilation_h, rx = kx * dilation_w, which is entry (oy + ry / stride_h, ox + rx / stride_w)
// of phase (ry % stride_h, rx % stride_w). So with any stride the windows of one tap, in "wide"
// order j = oy * phase_w + ox, are one contiguous run starting at that tap's origin, and
// continuing into the next images' windows phase_plane apart
// (with stride 1 there is one phase, the padded plane itself). The entries past each row of
// windows, and those between images, are computed and never read.
struct PhaseLayout {
  int64_t padded_h, padded_w, phase_h, phase_w, phase_plane, phases, phase_pitch;

  PhaseLayout(const BorderRoundProblem& problem, int64_t stack)
      : padded_h((problem.out_h - 1) * problem.stride_h + (problem.kernel_h - 1) * problem.dilation_h + 1),
        padded_w((problem.out_w - 1) * problem.stride_w + (problem.kernel_w - 1) * problem.dilation_w + 1),
        phase_h((padded_h + problem.stride_h - 1) / problem.stride_h),
        phase_w((padded_w + problem.stride_w - 1) / problem.stride_w),
        phase_plane(phase_h * phase_w),
        phases(problem.stride_h * problem.stride_w),
        phase_pitch(stack * phase_plane + kVectorRun) {}

  // Offset of tap k's first window (in the first image).
  int64_t Origin(const BorderRoundProblem& problem, int64_t k) const {
    const int64_t ry = k / problem.kernel_w * problem.dilation_h, rx = k % problem.kernel_w * problem.dilation_w;
    const int64_t phase = ry % problem.stride_h * problem.stride_w + rx % problem.stride_w;
    return phase * phase_pitch + ry / problem.stride_h * phase_w + rx / problem.stride_w;
  }
};

// Writes one input plane's scaled, zero_point-padded phase planes to `block` (`row`: padded_w
// floats of scratch). Phase entries outside the padded plane get zero_point too: windows past a
// row of real windows read them.
template <typename In>
void FillPhasePlanes(float* block, float* row, float* widened, const In* x_plane, const In* next_plane,
                     const BorderRoundProblem& problem, const PhaseLayout& layout, InsideRange inside_cols, Quantizer q) {
  const int64_t sh = problem.stride_h, sw = problem.stride_w, inside = inside_cols.last - inside_cols.first;
  // Padded rows in input order (each input row read once, in sequence: with stride 2, reading the
  // even rows first and then the odd ones made the op 2x slower per image once X left the cache);
  // rows past padded_h fill the phases' last rows.
  // Two nested counters, not padded_y % sh and / sh: on 8 x 8 maps a row is only 10 entries.
  for (int64_t phase_row = 0; phase_row < layout.phase_h; ++phase_row) {
    for (int64_t phase_y = 0; phase_y < sh; ++phase_y) {
      const int64_t padded_y = phase_row * sh + phase_y;
      // Row phase_row of phase (phase_y, 0); with stride_w > 1 `row` is split into the sw phases' rows.
      float* phase_lines = block + phase_y * sw * layout.phase_pitch + phase_row * layout.phase_w;
      float* target = sw == 1 ? phase_lines : row;
      const int64_t iy = padded_y - problem.pad_top;
      if (padded_y >= layout.padded_h || iy < 0 || iy >= problem.height) {
        std::fill(target, target + layout.padded_w, q.zero_point);
      } else {
        std::fill(target, target + inside_cols.first, q.zero_point);
        std::fill(target + inside_cols.last, target + layout.padded_w, q.zero_point);
        const In* x_row = x_plane + iy * problem.width;
        if (next_plane != nullptr) {
          const In* next_row = next_plane + iy * problem.width;
          for (int64_t i = 0; i < problem.width; i += 64 / static_cast<int64_t>(sizeof(In))) __builtin_prefetch(next_row + i);
        }
        if constexpr (std::is_same_v<In, float>) {
          ScaleRow(x_row, target + inside_cols.first, inside, q);
        } else {
          for (int64_t i = 0; i < inside; ++i) widened[i] = ToFloat(x_row[i]);
          ScaleRow(widened, target + inside_cols.first, inside, q);
        }
      }
      if (sw == 1) continue;
      if (sw == 2) SplitPairs(row, phase_lines, phase_lines + layout.phase_pitch, layout.padded_w / 2);
      for (int64_t phase_x = 0; phase_x < sw; ++phase_x) {
        float* phase_line = phase_lines + phase_x * layout.phase_pitch;
        const int64_t count = (layout.padded_w - phase_x + sw - 1) / sw;
        for (int64_t j = sw == 2 ? layout.padded_w / 2 : 0; j < count; ++j) phase_line[j] = row[phase_x + j * sw];
        std::fill(phase_line + count, phase_line + layout.phase_w, q.zero_point);
      }
    }
  }
}

template <typename In, typename Out>
void RunIm2col(OrtKernelContext* context, const BorderRoundProblem& problem, const In* x, const float* coeffs,
               Out* codes) {
  const Quantizer q = QuantizerOf(problem);
  const Out padded_code = static_cast<Out>(problem.zero_point);
  const int64_t kernel_area = problem.kernel_h * problem.kernel_w;
  const int64_t out_h = problem.out_h, out_w = problem.out_w, windows = out_h * out_w;
  const int64_t plane = problem.height * problem.width;
  if (windows == 0 || problem.batch * problem.channels == 0) return;
  const int64_t stack = std::clamp<int64_t>(kTaskElements / (kernel_area * windows), 1, problem.batch);
  const PhaseLayout layout(problem, stack);
  // Locals rather than fields read through references: the copy loop's byte stores may alias
  // anything, so fields would be reloaded at every (tap, image).
  const int64_t phase_w = layout.phase_w, phase_plane = layout.phase_plane;
  const int64_t image_codes = problem.channels * kernel_area * windows;  // one image's codes
  const InsideRange inside_cols{std::min(problem.pad_left, layout.padded_w),
                                std::min(problem.pad_left + problem.width, layout.padded_w)};

  // The planes of one channel in `stack` consecutive images share that channel's coefficients, so
  // a tap's run spans all of them (image s's windows start at s * phase_plane): small maps get
  // long loops. The run is rounded up to whole vector iterations: fewer than kVectorRun entries
  // past a phase's last image are read. Codes are computed for whole rows of windows, copied out
  // row by row, and the few padded entries overwritten with zero_point.
  auto run_length = [&](int64_t planes) {
    return RoundUp((planes - 1) * layout.phase_plane + (out_h - 1) * layout.phase_w + out_w, kVectorRun);
  };
  const int64_t longest = run_length(stack);
  const bool one_pass = problem.fuse && HasFusedRun(kernel_area);
  // Per tap: its first window in the scratch, and the windows whose entry is inside the map.
  std::vector<int64_t> origins(kernel_area);
  std::vector<InsideRange> tap_rows(kernel_area), tap_cols(kernel_area);
  for (int64_t k = 0; k < kernel_area; ++k) {
    origins[k] = layout.Origin(problem, k);
    tap_rows[k] = InsideWindows(out_h, problem.stride_h, problem.pad_top, k / problem.kernel_w * problem.dilation_h,
                                problem.height);
    tap_cols[k] = InsideWindows(out_w, problem.stride_w, problem.pad_left, k % problem.kernel_w * problem.dilation_w,
                                problem.width);
  }

  // A group: one channel in `stack` consecutive images (the last group of a channel may hold fewer).
  const int64_t image_blocks = (problem.batch + stack - 1) / stack;
  const int64_t groups = problem.channels * image_blocks;
  const int64_t wanted_tasks = TaskCount(problem.batch * problem.channels * kernel_area * windows, groups);
  const int64_t groups_per_task = (groups + wanted_tasks - 1) / wanted_tasks;
  const int64_t tasks = (groups + groups_per_task - 1) / groups_per_task;
  auto first_image_of = [&](int64_t group) { return group / problem.channels * stack; };
  auto images_in = [&](int64_t group) { return std::min(stack, problem.batch - first_image_of(group)); };
  // Index in X of the group's channel in its first image; image s's plane is s * channels further.
  auto first_plane_of = [&](int64_t group) { return first_image_of(group) * problem.channels + group % problem.channels; };
  ParallelFor(context, tasks, [&](int64_t task) {
    // Scratch is left uninitialised: every entry read is written first (the phase planes, the
    // run's tail below, the codes by the code loops). Filling it per task cost 15 % of the op on
    // ResNet-20's [32, 16, 32, 32] maps, one group a task.
    std::unique_ptr<float[]> padded(new float[layout.phases * layout.phase_pitch]);
    std::vector<float> row(problem.stride_w > 1 ? layout.padded_w : 0);  // stride 1 writes its phase rows directly
    std::vector<float> fused(problem.fuse && !one_pass ? longest : 0);
    std::unique_ptr<Out[]> wide_run(new Out[(one_pass ? kernel_area : 1) * longest]);
    std::vector<float> widened(std::is_same_v<In, float> ? 0 : problem.width);
    const int64_t group_end = std::min((task + 1) * groups_per_task, groups);
    for (int64_t group = task * groups_per_task; group < group_end; ++group) {
      const int64_t channel = group % problem.channels, stacked = images_in(group);
      const int64_t run = run_length(stacked);
      for (int64_t phase = 0; phase < layout.phases; ++phase) {
        float* tail = padded.get() + phase * layout.phase_pitch + stacked * layout.phase_plane;
        std::fill(tail, tail + kVectorRun, q.zero_point);
      }
      // Each row of the next group's input is fetched as this group's same row is read: X read
      // plane by plane is otherwise memory-latency bound once it leaves the cache.
      const int64_t first_plane = first_plane_of(group);
      const bool has_next = group + 1 < groups;
      const int64_t next_first_plane = has_next ? first_plane_of(group + 1) : 0;
      const int64_t next_images = has_next ? images_in(group + 1) : 0;
      for (int64_t s = 0; s < stacked; ++s) {
        const In* next = s < next_images ? x + (next_first_plane + s * problem.channels) * plane : nullptr;
        FillPhasePlanes(padded.get() + s * layout.phase_plane, row.data(), widened.data(),
                        x + (first_plane + s * problem.channels) * plane, next, problem, layout, inside_cols, q);
      }
      // im2col row j = (c * kh + ky) * kw + kx; its coefficient column is (j / coeff_divisor) % features.
      const int64_t first_row = channel * kernel_area;
      auto border_of = [&](int64_t j) { return BorderOf(problem, coeffs, (j / problem.coeff_divisor) % problem.features); };
      if (one_pass) {
        Border borders[kMaxFusedTaps];
        for (int64_t k = 0; k < kernel_area; ++k) borders[k] = border_of(first_row + k);
        FusedRun(wide_run.get(), longest, padded.get(), origins.data(), borders, kernel_area, run, q, problem.degree);
      } else if (problem.fuse) {
        std::fill(fused.begin(), fused.end(), 0.0f);
        for (int64_t k = 0; k < kernel_area; ++k) {  // taps in row-major order: each window's sum keeps it
          AccumulateTap(fused.data(), padded.get() + origins[k], run, problem.degree, border_of(first_row + k));
        }
        const float area = static_cast<float>(kernel_area);
        for (float& total : fused) total = total / area;
      }
      for (int64_t k = 0; k < kernel_area; ++k) {
        const InsideRange rows = tap_rows[k], cols = tap_cols[k];
        const bool padded_windows = rows.first > 0 || rows.last < out_h || cols.first > 0 || cols.last < out_w;
        if (!one_pass) {
          CodeTap(wide_run.get(), padded.get() + origins[k], problem.fuse ? fused.data() : nullptr, run, q,
                  problem.degree, border_of(first_row + k));
        }
        const Out* tap_run = wide_run.get() + (one_pass ? k * longest : 0);
        Out* tap_codes = codes + (first_plane * kernel_area + k) * windows;
        for (int64_t s = 0; s < stacked; ++s, tap_codes += image_codes, tap_run += phase_plane) {
          CopyRows(tap_codes, tap_run, phase_w, out_w, rows);
          if (padded_windows) FillPadding(tap_codes, out_h, out_w, rows, cols, padded_code);
        }
      }
    }
  });
}

// One Lite-API kernel per (X type, output type) pair; attributes are read once, at creation.
template <typename In, typename Out>
struct BorderRoundCpu {
  BorderRoundCpu(const OrtApi*, const OrtKernelInfo* info) : attrs_(info), clip_range_(attrs_.ClipRange<Out>()) {}

  Ort::Status Compute(OrtKernelContext* context, const Ort::Custom::Tensor<In>& x,
                      const Ort::Custom::Tensor<float>& scale, const Ort::Custom::Tensor<Out>& zero_point,
                      const Ort::Custom::Tensor<float>& coeffs, Ort::Custom::Tensor<Out>& codes) {
    try {
      const std::vector<int64_t>& x_shape = x.Shape();
      CheckScalarInputs(scale.Shape(), zero_point.Shape());
      const BorderRoundProblem problem = MakeProblem(attrs_, clip_range_, x_shape, scale.Data()[0],
                                                     static_cast<int32_t>(zero_point.Data()[0]), coeffs.Shape());
      Out* out = codes.Allocate(OutputShape(problem, x_shape));
      if (problem.im2col) {
        RunIm2col(context, problem, x.Data(), coeffs.Data(), out);
      } else {
        RunElementwise(context, problem, x.Data(), coeffs.Data(), out);
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
