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
// - im2col: v is computed once per (n, c) plane into a zero_point-padded scratch plane. With
//   stride 1 and a 3x3 or 5x5 kernel one loop over the windows evaluates all taps' borders,
//   their mean and all taps' codes per window in registers; otherwise the fused sums are
//   accumulated tap by tap through memory (each window adds its taps in row-major order either way).
//   With stride 1 the windows of one tap read one contiguous run of that plane (rows padded_w
//   apart), and the planes of one channel in consecutive images are stacked below each other,
//   so each tap's sums over all of them are a single long vectorised loop (the extra columns are
//   never read); other strides go one (strided) row of windows at a time. Codes are computed for whole
//   rows of windows (the padded plane makes every window readable) and the few padded entries
//   overwritten with zero_point afterwards; with stride 1 as one long run per tap, copied out row
//   by row with inline moves (per-row loops, memmove or memset calls cost more than the codes on
//   small maps). Stacking cut the time per code of ResNet-20's [32, 64, 8, 8] 2.4x, and one run
//   per tap that of [32, 16, 32, 32] by 23 %;
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

// Elements (or output codes) per parallel task: below this a task is not worth a thread hand-off.
constexpr int64_t kTaskElements = 64 * 1024;
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

template <int Degree>
AQUANT_INLINE void AccumulateLoop(float* sums, const float* v, int64_t length, int64_t step, const Border& border) {
  if (step == 1) {
    for (int64_t i = 0; i < length; ++i) sums[i] += Evaluate<Degree>(border, v[i]);
  } else {
    for (int64_t i = 0; i < length; ++i) sums[i] += Evaluate<Degree>(border, v[i * step]);
  }
}

// Window rows of one kernel tap: row oy of windows reads v at origin + oy * row_pitch, column ox
// at + ox * step; the rows' fused sums are sums + oy * out_w.
struct TapRows {
  const float* origin;
  int64_t out_w, row_pitch, step;
};

template <int Degree>
AQUANT_INLINE void AccumulateTapLoop(float* sums, const TapRows& tap, int64_t out_h, const Border& border) {
  for (int64_t oy = 0; oy < out_h; ++oy) {
    AccumulateLoop<Degree>(sums + oy * tap.out_w, tap.origin + oy * tap.row_pitch, tap.out_w, tap.step, border);
  }
}

// sums[oy, ox] += B(v) over all windows of one kernel tap (one call per tap: small maps have short rows).
AQUANT_HOT_LOOP void AccumulateTap(float* sums, TapRows tap, int64_t out_h, int32_t degree, Border border) {
  if (degree == 1) return AccumulateTapLoop<1>(sums, tap, out_h, border);
  if (degree == 2) return AccumulateTapLoop<2>(sums, tap, out_h, border);
  AccumulateTapLoop<3>(sums, tap, out_h, border);
}

// Degree 0 stands for the fused form: the border is the window's mean fused[i].
template <int Degree, typename Out>
AQUANT_INLINE void CodeLoop(Out* codes, const float* v, const float* fused, int64_t length, int64_t step,
                            const Quantizer& q, const Border& border) {
  for (int64_t i = 0; i < length; ++i) {
    const float value = v[i * step];
    if constexpr (Degree == 0) {
      codes[i] = Code<Out>(value, fused[i], q);
    } else {
      codes[i] = Code<Out>(value, Evaluate<Degree>(border, value), q);
    }
  }
}

template <int Degree, typename Out>
AQUANT_INLINE void CodeLoopAnyStep(Out* codes, const float* v, const float* fused, int64_t length, int64_t step,
                                   const Quantizer& q, const Border& border) {
  if (step == 1) return CodeLoop<Degree>(codes, v, fused, length, 1, q, border);  // constant step: contiguous loads
  CodeLoop<Degree>(codes, v, fused, length, step, q, border);
}

// Codes of one kernel tap over one row of windows: the fused mean `fused` when given, else B_j(v).
template <typename Out>
AQUANT_INLINE void CodeRowImpl(Out* codes, const float* v, const float* fused, int64_t length, int64_t step,
                               Quantizer q, int32_t degree, Border border) {
  if (fused != nullptr) return CodeLoopAnyStep<0>(codes, v, fused, length, step, q, border);
  if (degree == 1) return CodeLoopAnyStep<1>(codes, v, fused, length, step, q, border);
  if (degree == 2) return CodeLoopAnyStep<2>(codes, v, fused, length, step, q, border);
  CodeLoopAnyStep<3>(codes, v, fused, length, step, q, border);
}

// Fused codes of all `Taps` taps over one wide-order run (stride 1, fuse=1) in one pass: window i's
// border is the mean of its taps' B_j(v), added in row-major tap order from 0 as the two-pass form
// adds them, and each tap's code goes to its own run (codes + t * code_pitch). Sums, means and v
// stay in registers: 1.9x faster than accumulating each tap's sums through memory on ResNet-20's
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

// Codes of one kernel tap at the window rows `rows`, every column (entries on padding are
// overwritten by FillPadding): the fused mean `fused` (row oy at fused + oy * fused_pitch) when
// given, else B_j(v).
template <typename Out>
AQUANT_INLINE void CodeTapImpl(Out* codes, const TapRows& tap, const float* fused, int64_t fused_pitch,
                               InsideRange rows, Quantizer q, int32_t degree, Border border) {
  for (int64_t oy = rows.first; oy < rows.last; ++oy) {
    CodeRowImpl(codes + oy * tap.out_w, tap.origin + oy * tap.row_pitch,
                fused != nullptr ? fused + oy * fused_pitch : nullptr, tap.out_w, tap.step, q, degree, border);
  }
}

AQUANT_HOT_LOOP void CodeTap(uint8_t* codes, TapRows tap, const float* fused, int64_t fused_pitch, InsideRange rows,
                             Quantizer q, int32_t degree, Border border) {
  CodeTapImpl(codes, tap, fused, fused_pitch, rows, q, degree, border);
}

AQUANT_HOT_LOOP void CodeTap(int8_t* codes, TapRows tap, const float* fused, int64_t fused_pitch, InsideRange rows,
                             Quantizer q, int32_t degree, Border border) {
  CodeTapImpl(codes, tap, fused, fused_pitch, rows, q, degree, border);
}

// Copies one row of codes (a few dozen bytes: less than a memmove call costs) in fixed-size moves,
// the last one overlapping the previous.
template <int64_t Bytes, typename Out>
AQUANT_INLINE void CopyInChunks(Out* destination, const Out* source, int64_t length) {
  constexpr int64_t kChunk = Bytes / sizeof(Out);
  for (int64_t i = 0; i + kChunk <= length; i += kChunk) std::memcpy(destination + i, source + i, Bytes);
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
  const int64_t tasks = (problem.count + kTaskElements - 1) / kTaskElements;
  ParallelFor(context, tasks, [&](int64_t task) {
    const int64_t end = std::min((task + 1) * kTaskElements, problem.count);
    for (int64_t start = task * kTaskElements; start < end;) {
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

template <typename In, typename Out>
void RunIm2col(OrtKernelContext* context, const BorderRoundProblem& problem, const In* x, const float* coeffs,
               Out* codes) {
  const Quantizer q = QuantizerOf(problem);
  const Out padded_code = static_cast<Out>(problem.zero_point);
  const int64_t kernel_area = problem.kernel_h * problem.kernel_w;
  const int64_t out_w = problem.out_w, windows = problem.out_h * problem.out_w;
  const int64_t plane = problem.height * problem.width;
  if (windows == 0 || problem.batch * problem.channels == 0) return;
  // The zero_point-padded plane covers exactly the input positions that windows read.
  const int64_t padded_h = (problem.out_h - 1) * problem.stride_h + (problem.kernel_h - 1) * problem.dilation_h + 1;
  const int64_t padded_w = (out_w - 1) * problem.stride_w + (problem.kernel_w - 1) * problem.dilation_w + 1;
  const int64_t padded_plane = padded_h * padded_w;
  const InsideRange inside_cols{std::min(problem.pad_left, padded_w),
                                std::min(problem.pad_left + problem.width, padded_w)};

  // Stride 1: the windows of one tap are one contiguous run of the padded plane in "wide" order
  // j = oy * padded_w + ox, so a tap's fused sums and codes are one long vectorised loop each
  // instead of out_h short ones (the codes then copied out row by row). The planes of one
  // channel in `stack` consecutive images lie one below the other in the scratch buffer and
  // share that channel's coefficients, so the run spans all of them (plane s's windows start at
  // s * padded_plane): small maps get long loops. The entries past each row of windows, and
  // between planes, are computed and never read. The run is rounded up to whole vector
  // iterations: fewer than kVectorRun entries past the last stacked plane are read.
  const bool wide = problem.stride_h == 1 && problem.stride_w == 1;
  const int64_t stack = wide ? std::clamp<int64_t>(kTaskElements / (kernel_area * windows), 1, problem.batch) : 1;
  // Entries from a tap's first window to its last one, over `planes` stacked planes.
  auto wide_span = [&](int64_t planes) { return (planes - 1) * padded_plane + (problem.out_h - 1) * padded_w + out_w; };
  auto wide_length = [&](int64_t planes) { return RoundUp(wide_span(planes), kVectorRun); };
  const int64_t longest = wide ? wide_length(stack) : 0;
  const bool one_pass = wide && problem.fuse && HasFusedRun(kernel_area);

  // A group: one channel in `stack` consecutive images (the last group of a channel may hold fewer).
  const int64_t image_blocks = (problem.batch + stack - 1) / stack;
  const int64_t groups = problem.channels * image_blocks;
  const int64_t groups_per_task = std::max<int64_t>(1, kTaskElements / (kernel_area * windows * stack));
  const int64_t tasks = (groups + groups_per_task - 1) / groups_per_task;
  ParallelFor(context, tasks, [&](int64_t task) {
    // Scratch is left uninitialised: every entry read is written first (the padded planes row by
    // row, the run's tail below, the codes by the code loops). Filling it per task cost 15 % of
    // the op on ResNet-20's [32, 16, 32, 32] maps, one group a task.
    std::unique_ptr<float[]> padded(new float[stack * padded_plane + (wide ? kVectorRun : 0)]);
    std::vector<float> fused(problem.fuse && !one_pass ? (wide ? longest : windows) : 0);
    std::unique_ptr<Out[]> wide_run(new Out[wide ? (one_pass ? kernel_area : 1) * longest : 0]);
    std::vector<float> widened(std::is_same_v<In, float> ? 0 : problem.width);
    const int64_t group_end = std::min((task + 1) * groups_per_task, groups);
    for (int64_t group = task * groups_per_task; group < group_end; ++group) {
      const int64_t channel = group % problem.channels, first_image = group / problem.channels * stack;
      const int64_t stacked = std::min(stack, problem.batch - first_image);
      const int64_t run = wide ? wide_length(stacked) : 0;
      auto plane_index = [&](int64_t s) { return (first_image + s) * problem.channels + channel; };
      if (wide) std::fill(padded.get() + stacked * padded_plane, padded.get() + stacked * padded_plane + kVectorRun, q.zero_point);
      for (int64_t s = 0; s < stacked; ++s) {
        const In* x_plane = x + plane_index(s) * plane;
        for (int64_t py = 0; py < padded_h; ++py) {
          float* row = padded.get() + s * padded_plane + py * padded_w;
          const int64_t iy = py - problem.pad_top;
          if (iy < 0 || iy >= problem.height) {
            std::fill(row, row + padded_w, q.zero_point);
            continue;
          }
          std::fill(row, row + inside_cols.first, q.zero_point);
          std::fill(row + inside_cols.last, row + padded_w, q.zero_point);
          const In* x_row = x_plane + iy * problem.width;
          const int64_t inside = inside_cols.last - inside_cols.first;
          if constexpr (std::is_same_v<In, float>) {
            ScaleRow(x_row, row + inside_cols.first, inside, q);
          } else {
            for (int64_t i = 0; i < inside; ++i) widened[i] = ToFloat(x_row[i]);
            ScaleRow(widened.data(), row + inside_cols.first, inside, q);
          }
        }
      }
      // im2col row j = (c * kh + ky) * kw + kx; its coefficient column is (j / coeff_divisor) % features.
      const int64_t first_row = channel * kernel_area;
      auto border_of = [&](int64_t j) { return BorderOf(problem, coeffs, (j / problem.coeff_divisor) % problem.features); };
      auto tap_rows = [&](int64_t k, int64_t s) {
        const float* origin = padded.get() + s * padded_plane + (k / problem.kernel_w) * problem.dilation_h * padded_w +
                              (k % problem.kernel_w) * problem.dilation_w;
        return TapRows{origin, out_w, problem.stride_h * padded_w, problem.stride_w};
      };
      if (one_pass) {
        int64_t offsets[kMaxFusedTaps];
        Border borders[kMaxFusedTaps];
        for (int64_t k = 0; k < kernel_area; ++k) {
          offsets[k] = tap_rows(k, 0).origin - padded.get();
          borders[k] = border_of(first_row + k);
        }
        FusedRun(wide_run.get(), longest, padded.get(), offsets, borders, kernel_area, run, q, problem.degree);
      } else if (problem.fuse) {
        std::fill(fused.begin(), fused.end(), 0.0f);
        for (int64_t k = 0; k < kernel_area; ++k) {  // taps in row-major order: each window's sum keeps it
          if (wide) {
            AccumulateTap(fused.data(), TapRows{tap_rows(k, 0).origin, run, 0, 1}, 1, problem.degree,
                          border_of(first_row + k));
          } else {
            AccumulateTap(fused.data(), tap_rows(k, 0), problem.out_h, problem.degree, border_of(first_row + k));
          }
        }
        const float area = static_cast<float>(kernel_area);
        for (float& total : fused) total = total / area;
      }
      for (int64_t k = 0; k < kernel_area; ++k) {
        const int64_t ky = k / problem.kernel_w, kx = k % problem.kernel_w;
        const InsideRange rows = InsideWindows(problem.out_h, problem.stride_h, problem.pad_top,
                                               ky * problem.dilation_h, problem.height);
        const InsideRange cols = InsideWindows(out_w, problem.stride_w, problem.pad_left,
                                               kx * problem.dilation_w, problem.width);
        const Border border = border_of(first_row + k);
        if (wide && !one_pass) {  // one long loop in wide order over the stacked planes, then each row copied out
          CodeTap(wide_run.get(), TapRows{tap_rows(k, 0).origin, run, 0, 1}, problem.fuse ? fused.data() : nullptr,
                  0, {0, 1}, q, problem.degree, border);
        }
        for (int64_t s = 0; s < stacked; ++s) {
          Out* tap_codes = codes + (plane_index(s) * kernel_area + k) * windows;
          if (wide) {
            const Out* plane_run = wide_run.get() + (one_pass ? k * longest : 0) + s * padded_plane;
            CopyRows(tap_codes, plane_run, padded_w, out_w, rows);
          } else {
            CodeTap(tap_codes, tap_rows(k, s), problem.fuse ? fused.data() : nullptr, out_w, rows, q, problem.degree,
                    border);  // stack is 1 here
          }
          FillPadding(tap_codes, problem.out_h, out_w, rows, cols, padded_code);
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
