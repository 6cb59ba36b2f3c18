// Depthwise KxK convolution (stride 1, padding K/2, float32; NCHW, and channels-last NHWC below) for MindSpore's
// CPU back end, called through ops.Custom(func_type="aot"). MindSpore's stock CPU kernel for this case runs at
// under 1 GFLOP/s; these kernels keep blocks of output (or of weight-gradient partial sums) in vector
// registers across all K*K taps, one vector FMA per tap, and split the planes (NCHW) or rows (NHWC) over
// OpenMP threads.
//
// Every entry point has MindSpore's AOT signature:
//   int f(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, void *extra)
// params holds the inputs, then the outputs; a non-zero return makes MindSpore raise.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "layer_norm.h"
#include "simd.h"

namespace {

using namespace mindcv_ops;

constexpr int kMaxLanes = 16;  // floats per AVX-512 register, the widest vector the kernels use
constexpr int kRows = 4;       // output rows computed together by ConvPlane

inline int64_t RoundUp(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

// Copies an h x w plane into the middle of a zeroed (h + 2 pad) x row_stride buffer.
void PadPlane(const float *src, int64_t h, int64_t w, int64_t pad, int64_t row_stride, float *dst) {
  std::fill(dst, dst + (h + 2 * pad) * row_stride, 0.0f);
  for (int64_t i = 0; i < h; ++i) std::memcpy(dst + (i + pad) * row_stride + pad, src + i * w, w * sizeof(float));
}

// out[i][j] = bias + sum_{a,b} taps[a*K+b] * padded[i+a][j+b] for an h x w output plane.
// `padded` has row stride >= RoundUp(w, kMaxLanes) + K - 1 and RoundUp(h, kRows) + K - 1 rows, so whole
// blocks of kRows rows x L columns can be computed past the plane's edge (those values are discarded).
// Each block keeps kRows independent accumulators in registers (a single FMA chain would be
// latency-bound) and loads each input vector once for all the output rows it feeds.
template <int K, int L>
__attribute__((always_inline)) inline void ConvPlane(const float *padded, int64_t row_stride, const float *taps,
                                                     float bias, int64_t h, int64_t w, float *out) {
  for (int64_t i0 = 0; i0 < h; i0 += kRows) {
    for (int64_t j0 = 0; j0 < w; j0 += L) {
      Vec<L> acc[kRows];
      for (int q = 0; q < kRows; ++q) acc[q] = Vec<L>{} + bias;
      // Fully unrolled so that the tap-row test below is resolved at compile time.
#pragma GCC unroll 16
      for (int r = 0; r < kRows + K - 1; ++r) {
        const float *row = padded + (i0 + r) * row_stride + j0;
#pragma GCC unroll 16
        for (int b = 0; b < K; ++b) {
          const Vec<L> v = Load<L>(row + b);
#pragma GCC unroll 16
          for (int q = 0; q < kRows; ++q) {
            const int a = r - q;  // tap row linking input row i0 + r to output row i0 + q
            if (a >= 0 && a < K) acc[q] += taps[a * K + b] * v;
          }
        }
      }
      const int64_t lanes = std::min<int64_t>(L, w - j0);
      for (int q = 0; q < kRows && i0 + q < h; ++q)
        std::memcpy(out + (i0 + q) * w + j0, &acc[q], lanes * sizeof(float));
    }
  }
}

// grad[a*K+b] += sum_{i,j} dy[i][j] * padded[i+a][j+b]. `dy_padded` holds dy with the same row stride
// and zeros past column w, so the lanes past the edge contribute nothing. K accumulators (one per
// tap column) give independent FMA chains and share each dy load.
template <int K, int L>
__attribute__((always_inline)) inline void WeightGradPlane(const float *dy_padded, const float *padded,
                                                           int64_t row_stride, int64_t h, int64_t w, float *grad) {
  for (int a = 0; a < K; ++a) {
    Vec<L> acc[K];
    for (int b = 0; b < K; ++b) acc[b] = Vec<L>{};
    for (int64_t i = 0; i < h; ++i) {
      const float *row = padded + (i + a) * row_stride;
      const float *dy_row = dy_padded + i * row_stride;
      for (int64_t j0 = 0; j0 < w; j0 += L) {
        const Vec<L> g = Load<L>(dy_row + j0);
#pragma GCC unroll 16
        for (int b = 0; b < K; ++b) acc[b] += g * Load<L>(row + j0 + b);
      }
    }
    for (int b = 0; b < K; ++b) {
      float sum = 0.0f;
      for (int t = 0; t < L; ++t) sum += acc[b][t];
      grad[a * K + b] += sum;
    }
  }
}

// One entry per instruction set (see simd.h).
template <int K>
MINDCV_AVX512 void ConvPlaneAvx512(const float *padded, int64_t row_stride,
                                                                 const float *taps, float bias, int64_t h,
                                                                 int64_t w, float *out) {
  ConvPlane<K, 16>(padded, row_stride, taps, bias, h, w, out);
}
template <int K>
MINDCV_AVX2 void ConvPlaneAvx2(const float *padded, int64_t row_stride,
                                                               const float *taps, float bias, int64_t h, int64_t w,
                                                               float *out) {
  ConvPlane<K, 8>(padded, row_stride, taps, bias, h, w, out);
}
template <int K>
void ConvPlaneBase(const float *padded, int64_t row_stride, const float *taps, float bias, int64_t h, int64_t w,
                   float *out) {
  ConvPlane<K, 4>(padded, row_stride, taps, bias, h, w, out);
}
template <int K>
MINDCV_AVX512 void WeightGradPlaneAvx512(const float *dy_padded, const float *padded,
                                                                       int64_t row_stride, int64_t h, int64_t w,
                                                                       float *grad) {
  WeightGradPlane<K, 16>(dy_padded, padded, row_stride, h, w, grad);
}
template <int K>
MINDCV_AVX2 void WeightGradPlaneAvx2(const float *dy_padded, const float *padded,
                                                                     int64_t row_stride, int64_t h, int64_t w,
                                                                     float *grad) {
  WeightGradPlane<K, 8>(dy_padded, padded, row_stride, h, w, grad);
}
template <int K>
void WeightGradPlaneBase(const float *dy_padded, const float *padded, int64_t row_stride, int64_t h, int64_t w,
                         float *grad) {
  WeightGradPlane<K, 4>(dy_padded, padded, row_stride, h, w, grad);
}

const Isa kIsa = DetectIsa();

template <int K>
void ConvPlaneAny(const float *padded, int64_t row_stride, const float *taps, float bias, int64_t h, int64_t w,
                  float *out) {
  switch (kIsa) {
    case Isa::kAvx512: return ConvPlaneAvx512<K>(padded, row_stride, taps, bias, h, w, out);
    case Isa::kAvx2: return ConvPlaneAvx2<K>(padded, row_stride, taps, bias, h, w, out);
    default: return ConvPlaneBase<K>(padded, row_stride, taps, bias, h, w, out);
  }
}

template <int K>
void WeightGradPlaneAny(const float *dy_padded, const float *padded, int64_t row_stride, int64_t h, int64_t w,
                        float *grad) {
  switch (kIsa) {
    case Isa::kAvx512: return WeightGradPlaneAvx512<K>(dy_padded, padded, row_stride, h, w, grad);
    case Isa::kAvx2: return WeightGradPlaneAvx2<K>(dy_padded, padded, row_stride, h, w, grad);
    default: return WeightGradPlaneBase<K>(dy_padded, padded, row_stride, h, w, grad);
  }
}

struct Dims {
  int64_t n, c, h, w, k, pad, row_stride;
};

bool ReadDims(const int *ndims, int64_t **shapes, const char **dtypes, int n_tensors, Dims *d) {
  if (!AllFloat32(n_tensors, dtypes) || ndims[0] != 4 || ndims[1] != 4) return false;
  d->n = shapes[0][0];
  d->c = shapes[0][1];
  d->h = shapes[0][2];
  d->w = shapes[0][3];
  d->k = shapes[1][3];
  if (shapes[1][0] != d->c || shapes[1][1] != 1 || shapes[1][2] != d->k || d->k % 2 == 0) return false;
  d->pad = d->k / 2;
  d->row_stride = RoundUp(d->w, kMaxLanes) + d->k - 1;
  return true;
}

// Forward (flip = false) or input gradient (flip = true: correlation with the kernel rotated by 180
// degrees, which is the transpose of a stride-1, padding-K/2 convolution).
template <int K>
void ConvAll(const Dims &d, const float *x, const float *weight, const float *bias, bool flip, float *y) {
  const int64_t planes = d.n * d.c;
  const int64_t plane = d.h * d.w;
#pragma omp parallel
  {
    std::vector<float> padded((RoundUp(d.h, kRows) + 2 * d.pad) * d.row_stride);
    float taps[K * K];
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      const int64_t ch = p % d.c;
      for (int q = 0; q < K * K; ++q) taps[q] = weight[ch * K * K + (flip ? K * K - 1 - q : q)];
      PadPlane(x + p * plane, d.h, d.w, d.pad, d.row_stride, padded.data());
      ConvPlaneAny<K>(padded.data(), d.row_stride, taps, bias ? bias[ch] : 0.0f, d.h, d.w, y + p * plane);
    }
  }
}

template <int K>
void WeightGradAll(const Dims &d, const float *dy, const float *x, float *dw, float *db) {
  const int64_t plane = d.h * d.w;
#pragma omp parallel
  {
    std::vector<float> padded((RoundUp(d.h, kRows) + 2 * d.pad) * d.row_stride);
    std::vector<float> dy_padded(d.h * d.row_stride);
#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < d.c; ++ch) {
      float *grad = dw + ch * K * K;
      std::fill(grad, grad + K * K, 0.0f);
      double bias_sum = 0.0;
      for (int64_t s = 0; s < d.n; ++s) {
        const int64_t p = s * d.c + ch;
        PadPlane(x + p * plane, d.h, d.w, d.pad, d.row_stride, padded.data());
        // dy at offset 0 of each row with zeros after column w: PadPlane with no vertical padding.
        std::fill(dy_padded.begin(), dy_padded.end(), 0.0f);
        for (int64_t i = 0; i < d.h; ++i)
          std::memcpy(dy_padded.data() + i * d.row_stride, dy + p * plane + i * d.w, d.w * sizeof(float));
        WeightGradPlaneAny<K>(dy_padded.data(), padded.data(), d.row_stride, d.h, d.w, grad);
        for (int64_t q = 0; q < plane; ++q) bias_sum += dy[p * plane + q];
      }
      db[ch] = static_cast<float>(bias_sum);
    }
  }
}

// ---- Channels-last (NHWC) variants: the channels are the vector lanes. ----
//
// A thread works through a contiguous range of output rows (n, i) and keeps, in a ring of K buffers, the input
// rows i - K/2 .. i + K/2 of image n padded with K/2 zero pixels left and right, with zero rows outside the
// image, and with the channels padded to a multiple of kMaxLanes: every load of the inner loops is then in
// bounds and needs no test. Moving to the next row copies one new input row.
class RowWindow {
 public:
  RowWindow(const float *x, int64_t h, int64_t w, int64_t c, int k, int64_t padded_width)
      : x_(x), h_(h), w_(w), c_(c), k_(k), pad_(k / 2), channels_(RoundUp(c, kMaxLanes)),
        row_floats_(padded_width * channels_), rows_(k * row_floats_, 0.0f), held_(k, kNone) {}

  // The padded input rows i - K/2 + a (a = 0 .. K-1) of image n, in `row[a]`.
  void Move(int64_t n, int64_t i, const float **row) {
    for (int a = 0; a < k_; ++a) {
      const int64_t r = i - pad_ + a, key = r < 0 || r >= h_ ? kNone - 1 : n * h_ + r;  // all outside rows alike
      const int slot = static_cast<int>(((r % k_) + k_) % k_);
      float *dst = &rows_[slot * row_floats_];
      if (held_[slot] != key) {
        std::fill(dst, dst + row_floats_, 0.0f);
        if (key != kNone - 1)
          for (int64_t j = 0; j < w_; ++j)
            std::memcpy(dst + (j + pad_) * channels_, x_ + (key * w_ + j) * c_, c_ * sizeof(float));
        held_[slot] = key;
      }
      row[a] = dst;
    }
  }

 private:
  static constexpr int64_t kNone = -1;
  const float *x_;
  int64_t h_, w_, c_;
  int k_, pad_;
  int64_t channels_, row_floats_;
  std::vector<float> rows_;
  std::vector<int64_t> held_;
};

constexpr int kPixels = 4;  // output pixels computed together (each weight vector is loaded once for them)

// One output row, channels-last: out[j][c] = bias[c] + sum_{a,b} taps[a][b][c] * row[a][j + b][c], with `taps`
// [K*K][channels] and `bias` [channels] padded to `channels` (a multiple of kMaxLanes). Pixels past w are
// computed into `spill` and dropped.
template <int K, int L>
__attribute__((always_inline)) inline void ConvRowNhwc(const float *const *row, const float *taps, const float *bias,
                                                       int64_t w, int64_t c, int64_t channels, float *out) {
  for (int64_t c0 = 0; c0 < channels; c0 += L) {
    const int64_t lanes = std::min<int64_t>(L, c - c0);
    if (lanes <= 0) break;
    for (int64_t j0 = 0; j0 < w; j0 += kPixels) {
      Vec<L> acc[kPixels];
      const Vec<L> b = bias ? Load<L>(bias + c0) : Vec<L>{};
      for (int q = 0; q < kPixels; ++q) acc[q] = b;
#pragma GCC unroll 7
      for (int a = 0; a < K; ++a) {
        const float *in = row[a] + j0 * channels + c0;
#pragma GCC unroll 7
        for (int tb = 0; tb < K; ++tb) {
          const Vec<L> tap = Load<L>(taps + (a * K + tb) * channels + c0);
#pragma GCC unroll 4
          for (int q = 0; q < kPixels; ++q) acc[q] += tap * Load<L>(in + (q + tb) * channels);
        }
      }
      for (int q = 0; q < kPixels && j0 + q < w; ++q) std::memcpy(out + (j0 + q) * c + c0, &acc[q], lanes * sizeof(float));
    }
  }
}

// sums[a][b][c] += sum_j dy[j][c] * row[a][j + b][c] and sums[K*K][c] += sum_j dy[j][c] (the bias gradient), over
// one row; `dy` padded to `channels` per pixel.
template <int K, int L>
__attribute__((always_inline)) inline void WeightGradRowNhwc(const float *const *row, const float *dy, int64_t w,
                                                             int64_t channels, float *sums) {
  for (int64_t c0 = 0; c0 < channels; c0 += L) {
#pragma GCC unroll 7
    for (int a = 0; a < K; ++a) {
      for (int tb = 0; tb < K; ++tb) {
        Vec<L> s0{}, s1{};  // two chains: the FMA latency, not the loads, would bound one
        const float *in = row[a] + tb * channels + c0;
        int64_t j = 0;
        for (; j + 1 < w; j += 2) {
          s0 += Load<L>(dy + j * channels + c0) * Load<L>(in + j * channels);
          s1 += Load<L>(dy + (j + 1) * channels + c0) * Load<L>(in + (j + 1) * channels);
        }
        if (j < w) s0 += Load<L>(dy + j * channels + c0) * Load<L>(in + j * channels);
        float *sum = sums + (a * K + tb) * channels + c0;
        const Vec<L> total = Load<L>(sum) + s0 + s1;
        std::memcpy(sum, &total, sizeof(total));
      }
    }
    Vec<L> bias_sum = Load<L>(sums + K * K * channels + c0);
    for (int64_t j = 0; j < w; ++j) bias_sum += Load<L>(dy + j * channels + c0);
    std::memcpy(sums + K * K * channels + c0, &bias_sum, sizeof(bias_sum));
  }
}

template <int K>
MINDCV_AVX512 void ConvRowNhwcAvx512(const float *const *row, const float *taps, const float *bias, int64_t w,
                                     int64_t c, int64_t channels, float *out) {
  ConvRowNhwc<K, 16>(row, taps, bias, w, c, channels, out);
}
template <int K>
MINDCV_AVX2 void ConvRowNhwcAvx2(const float *const *row, const float *taps, const float *bias, int64_t w, int64_t c,
                                 int64_t channels, float *out) {
  ConvRowNhwc<K, 8>(row, taps, bias, w, c, channels, out);
}
template <int K>
void ConvRowNhwcBase(const float *const *row, const float *taps, const float *bias, int64_t w, int64_t c,
                     int64_t channels, float *out) {
  ConvRowNhwc<K, 4>(row, taps, bias, w, c, channels, out);
}
template <int K>
MINDCV_AVX512 void WeightGradRowNhwcAvx512(const float *const *row, const float *dy, int64_t w, int64_t channels,
                                           float *sums) {
  WeightGradRowNhwc<K, 16>(row, dy, w, channels, sums);
}
template <int K>
MINDCV_AVX2 void WeightGradRowNhwcAvx2(const float *const *row, const float *dy, int64_t w, int64_t channels,
                                       float *sums) {
  WeightGradRowNhwc<K, 8>(row, dy, w, channels, sums);
}
template <int K>
void WeightGradRowNhwcBase(const float *const *row, const float *dy, int64_t w, int64_t channels, float *sums) {
  WeightGradRowNhwc<K, 4>(row, dy, w, channels, sums);
}

template <int K>
void ConvRowNhwcAny(const float *const *row, const float *taps, const float *bias, int64_t w, int64_t c,
                    int64_t channels, float *out) {
  switch (kIsa) {
    case Isa::kAvx512: return ConvRowNhwcAvx512<K>(row, taps, bias, w, c, channels, out);
    case Isa::kAvx2: return ConvRowNhwcAvx2<K>(row, taps, bias, w, c, channels, out);
    default: return ConvRowNhwcBase<K>(row, taps, bias, w, c, channels, out);
  }
}

template <int K>
void WeightGradRowNhwcAny(const float *const *row, const float *dy, int64_t w, int64_t channels, float *sums) {
  switch (kIsa) {
    case Isa::kAvx512: return WeightGradRowNhwcAvx512<K>(row, dy, w, channels, sums);
    case Isa::kAvx2: return WeightGradRowNhwcAvx2<K>(row, dy, w, channels, sums);
    default: return WeightGradRowNhwcBase<K>(row, dy, w, channels, sums);
  }
}

struct DimsNhwc {
  int64_t n, h, w, c;
  int k;
};

bool ReadDimsNhwc(const int *ndims, int64_t **shapes, const char **dtypes, int n_tensors, int weight_index,
                  DimsNhwc *d) {
  if (!AllFloat32(n_tensors, dtypes) || ndims[0] != 4 || ndims[weight_index] != 4) return false;
  const int64_t *weight = shapes[weight_index];
  *d = {shapes[0][0], shapes[0][1], shapes[0][2], shapes[0][3], static_cast<int>(weight[3])};
  return weight[0] == d->c && weight[1] == 1 && weight[2] == d->k && d->k % 2 == 1;
}

// Runs thread_body(window, begin, end) in each thread: its contiguous range [begin, end) of output rows
// (n * H + i) and a window of its own over `x`.
template <typename ThreadBody>
void ForEachThreadRows(const DimsNhwc &d, const float *x, ThreadBody thread_body) {
#pragma omp parallel
  {
    RowWindow window(x, d.h, d.w, d.c, d.k, RoundUp(d.w, kPixels) + d.k - 1);
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t rows = d.n * d.h;
    thread_body(&window, rows * t / threads, rows * (t + 1) / threads);
  }
}

// The weight [C, 1, K, K] as taps [K*K][channels] (rotated by 180 degrees with `flip`) and the bias (if any) as
// [channels], zero in the padding channels.
template <int K>
void PackTaps(int64_t c, int64_t channels, const float *weight, const float *bias, bool flip, std::vector<float> *taps,
              std::vector<float> *padded_bias) {
  taps->assign(K * K * channels, 0.0f);
  padded_bias->assign(channels, 0.0f);
  for (int64_t ch = 0; ch < c; ++ch) {
    for (int q = 0; q < K * K; ++q) (*taps)[q * channels + ch] = weight[ch * K * K + (flip ? K * K - 1 - q : q)];
    if (bias) (*padded_bias)[ch] = bias[ch];
  }
}

// Forward (flip = false) or input gradient (flip = true, the kernel rotated by 180 degrees), channels-last.
template <int K>
void ConvAllNhwc(const DimsNhwc &d, const float *x, const float *weight, const float *bias, bool flip, float *y) {
  const int64_t channels = RoundUp(d.c, kMaxLanes);
  std::vector<float> taps, padded_bias;
  PackTaps<K>(d.c, channels, weight, bias, flip, &taps, &padded_bias);
  ForEachThreadRows(d, x, [&](RowWindow *window, int64_t begin, int64_t end) {
    const float *row[K];
    for (int64_t g = begin; g < end; ++g) {
      window->Move(g / d.h, g % d.h, row);
      ConvRowNhwcAny<K>(row, taps.data(), bias ? padded_bias.data() : nullptr, d.w, d.c, channels,
                        y + g * d.w * d.c);
    }
  });
}

// Eval-mode ConvNeXt block head: y = LayerNorm(dwconv(x)) over the channels, row by row, so that the conv's output
// row is normalised while in cache and never written to memory.
template <int K>
void ConvNormAllNhwc(const DimsNhwc &d, const float *x, const float *weight, const float *bias, const float *gamma,
                     const float *beta, float eps, float *y) {
  const int64_t channels = RoundUp(d.c, kMaxLanes);
  std::vector<float> taps, padded_bias;
  PackTaps<K>(d.c, channels, weight, bias, false, &taps, &padded_bias);
  ForEachThreadRows(d, x, [&](RowWindow *window, int64_t begin, int64_t end) {
    const float *row[K];
    std::vector<float> conv_row(d.w * d.c), mean(d.w), rstd(d.w);
    for (int64_t g = begin; g < end; ++g) {
      window->Move(g / d.h, g % d.h, row);
      ConvRowNhwcAny<K>(row, taps.data(), padded_bias.data(), d.w, d.c, channels, conv_row.data());
      layer_norm::ForwardAny(conv_row.data(), gamma, beta, eps, d.w, static_cast<int>(d.c), y + g * d.w * d.c,
                             mean.data(), rstd.data());
    }
  });
}

template <int K>
void WeightGradAllNhwc(const DimsNhwc &d, const float *dy, const float *x, float *dw, float *db) {
  const int64_t channels = RoundUp(d.c, kMaxLanes), sums_size = (K * K + 1) * channels;
  std::vector<double> total(sums_size, 0.0);
  ForEachThreadRows(d, x, [&](RowWindow *window, int64_t begin, int64_t end) {
    std::vector<float> sums(sums_size), dy_row(d.w * channels, 0.0f);
    std::vector<double> thread_total(sums_size, 0.0);
    const float *row[K];
    for (int64_t g = begin; g < end; ++g) {
      window->Move(g / d.h, g % d.h, row);
      for (int64_t j = 0; j < d.w; ++j)
        std::memcpy(&dy_row[j * channels], dy + (g * d.w + j) * d.c, d.c * sizeof(float));
      std::fill(sums.begin(), sums.end(), 0.0f);
      WeightGradRowNhwcAny<K>(row, dy_row.data(), d.w, channels, sums.data());
      for (int64_t q = 0; q < sums_size; ++q) thread_total[q] += sums[q];  // float within a row, double across
    }
#pragma omp critical
    for (int64_t q = 0; q < sums_size; ++q) total[q] += thread_total[q];
  });
  for (int64_t ch = 0; ch < d.c; ++ch) {
    for (int q = 0; q < K * K; ++q) dw[ch * K * K + q] = static_cast<float>(total[q * channels + ch]);
    db[ch] = static_cast<float>(total[K * K * channels + ch]);
  }
}

template <typename F3, typename F5, typename F7>
int DispatchK(int64_t k, F3 f3, F5 f5, F7 f7) {
  switch (k) {
    case 3: f3(); return 0;
    case 5: f5(); return 0;
    case 7: f7(); return 0;
    default: return 1;
  }
}

}  // namespace

extern "C" {

// inputs x [N, C, H, W], weight [C, 1, K, K], bias [C]; output y [N, C, H, W].
int DepthwiseConvForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                         void *extra) {
  Dims d;
  if (nparam != 4 || !ReadDims(ndims, shapes, dtypes, 4, &d)) return 1;
  auto x = static_cast<const float *>(params[0]);
  auto w = static_cast<const float *>(params[1]);
  auto b = static_cast<const float *>(params[2]);
  auto y = static_cast<float *>(params[3]);
  return DispatchK(d.k, [&] { ConvAll<3>(d, x, w, b, false, y); }, [&] { ConvAll<5>(d, x, w, b, false, y); },
                   [&] { ConvAll<7>(d, x, w, b, false, y); });
}

// inputs dy [N, C, H, W], weight [C, 1, K, K]; output dx [N, C, H, W].
int DepthwiseConvInputGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                           void *stream, void *extra) {
  Dims d;
  if (nparam != 3 || !ReadDims(ndims, shapes, dtypes, 3, &d)) return 1;
  auto dy = static_cast<const float *>(params[0]);
  auto w = static_cast<const float *>(params[1]);
  auto dx = static_cast<float *>(params[2]);
  return DispatchK(d.k, [&] { ConvAll<3>(d, dy, w, nullptr, true, dx); },
                   [&] { ConvAll<5>(d, dy, w, nullptr, true, dx); }, [&] { ConvAll<7>(d, dy, w, nullptr, true, dx); });
}

// inputs dy [N, C, H, W], x [N, C, H, W], weight [C, 1, K, K] (for its shape only);
// outputs dweight [C, 1, K, K], dbias [C].
int DepthwiseConvWeightGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream, void *extra) {
  Dims d;
  if (nparam != 5 || ndims[1] != 4) return 1;
  // ReadDims wants the weight as the second tensor.
  int dims2[2] = {ndims[0], ndims[2]};
  int64_t *shapes2[2] = {shapes[0], shapes[2]};
  if (!ReadDims(dims2, shapes2, dtypes, 5, &d)) return 1;
  auto dy = static_cast<const float *>(params[0]);
  auto x = static_cast<const float *>(params[1]);
  auto dw = static_cast<float *>(params[3]);
  auto db = static_cast<float *>(params[4]);
  return DispatchK(d.k, [&] { WeightGradAll<3>(d, dy, x, dw, db); }, [&] { WeightGradAll<5>(d, dy, x, dw, db); },
                   [&] { WeightGradAll<7>(d, dy, x, dw, db); });
}

// Channels-last: inputs x [N, H, W, C], weight [C, 1, K, K], bias [C]; output y [N, H, W, C].
int DepthwiseConvNhwcForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream, void *extra) {
  DimsNhwc d;
  if (nparam != 4 || !ReadDimsNhwc(ndims, shapes, dtypes, 4, 1, &d)) return 1;
  auto x = static_cast<const float *>(params[0]), w = static_cast<const float *>(params[1]);
  auto b = static_cast<const float *>(params[2]);
  auto y = static_cast<float *>(params[3]);
  return DispatchK(d.k, [&] { ConvAllNhwc<3>(d, x, w, b, false, y); }, [&] { ConvAllNhwc<5>(d, x, w, b, false, y); },
                   [&] { ConvAllNhwc<7>(d, x, w, b, false, y); });
}

// Channels-last: inputs dy [N, H, W, C], weight [C, 1, K, K]; output dx [N, H, W, C].
int DepthwiseConvNhwcInputGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                               void *stream, void *extra) {
  DimsNhwc d;
  if (nparam != 3 || !ReadDimsNhwc(ndims, shapes, dtypes, 3, 1, &d)) return 1;
  auto dy = static_cast<const float *>(params[0]), w = static_cast<const float *>(params[1]);
  auto dx = static_cast<float *>(params[2]);
  return DispatchK(d.k, [&] { ConvAllNhwc<3>(d, dy, w, nullptr, true, dx); },
                   [&] { ConvAllNhwc<5>(d, dy, w, nullptr, true, dx); },
                   [&] { ConvAllNhwc<7>(d, dy, w, nullptr, true, dx); });
}

// Channels-last, eval mode: inputs x [N, H, W, C], weight [C, 1, K, K], bias [C], gamma [C], beta [C], eps [1];
// output y [N, H, W, C] = LayerNorm(dwconv(x)) over C (no gradient: it keeps no statistics).
int DepthwiseConvNhwcNormForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                 void *stream, void *extra) {
  DimsNhwc d;
  if (nparam != 7 || !ReadDimsNhwc(ndims, shapes, dtypes, 7, 1, &d)) return 1;
  auto in = [&](int i) { return static_cast<const float *>(params[i]); };
  const float eps = *in(5);
  auto y = static_cast<float *>(params[6]);
  return DispatchK(d.k, [&] { ConvNormAllNhwc<3>(d, in(0), in(1), in(2), in(3), in(4), eps, y); },
                   [&] { ConvNormAllNhwc<5>(d, in(0), in(1), in(2), in(3), in(4), eps, y); },
                   [&] { ConvNormAllNhwc<7>(d, in(0), in(1), in(2), in(3), in(4), eps, y); });
}

// Channels-last: inputs dy [N, H, W, C], x [N, H, W, C], weight [C, 1, K, K] (for its shape only); outputs
// dweight [C, 1, K, K], dbias [C].
int DepthwiseConvNhwcWeightGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void *stream, void *extra) {
  DimsNhwc d;
  if (nparam != 5 || !ReadDimsNhwc(ndims, shapes, dtypes, 5, 2, &d)) return 1;
  auto dy = static_cast<const float *>(params[0]), x = static_cast<const float *>(params[1]);
  auto dw = static_cast<float *>(params[3]), db = static_cast<float *>(params[4]);
  return DispatchK(d.k, [&] { WeightGradAllNhwc<3>(d, dy, x, dw, db); },
                   [&] { WeightGradAllNhwc<5>(d, dy, x, dw, db); }, [&] { WeightGradAllNhwc<7>(d, dy, x, dw, db); });
}

}  // extern "C"
