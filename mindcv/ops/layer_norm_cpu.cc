// LayerNorm over the last axis (channels-last ConvNeXt norms) and its gradient for MindSpore's CPU back end,
// called through ops.Custom(func_type="aot") with the AOT signature described in depthwise_conv_cpu.cc.
// MindSpore's CPU LayerNormGrad takes ~57 ms per call in a ConvNeXt-T training step at batch 16 (a fifth of
// the step); this is one pass over x and dy per row, threads over rows. The Nchw variants read an NCHW
// input (and write its gradient) through 16-pixel tiles, so that the transpose to channels-last before the
// norm costs no pass of its own.
//
//   forward:  mean, rstd = 1 / sqrt(var + eps) per row; y = (x - mean) * rstd * gamma + beta
//   backward: xhat = (x - mean) * rstd, g = dy * gamma,
//             dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), dgamma = sum_rows dy * xhat, dbeta = sum_rows dy
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "simd.h"

namespace {

using namespace mindcv_ops;

template <int L>
__attribute__((always_inline)) inline float HorizontalSum(Vec<L> v) {
  float lanes[L];
  std::memcpy(lanes, &v, sizeof(v));
  float sum = 0.0f;
  for (int i = 0; i < L; ++i) sum += lanes[i];
  return sum;
}

// sum_i a[i] * b[i] (b == nullptr: sum_i a[i])
template <int L>
__attribute__((always_inline)) inline float Dot(const float *a, const float *b, int n) {
  Vec<L> acc{};
  int i = 0;
  for (; i + L <= n; i += L) acc += b ? Load<L>(a + i) * Load<L>(b + i) : Load<L>(a + i);
  float sum = HorizontalSum<L>(acc);
  for (; i < n; ++i) sum += b ? a[i] * b[i] : a[i];
  return sum;
}

template <int L>
__attribute__((always_inline)) inline void ForwardRows(const float *x, const float *gamma, const float *beta,
                                                       float eps, int64_t rows, int c, float *y, float *mean_out,
                                                       float *rstd_out) {
  std::vector<float> centred(c);
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * c;
    float *yr = y + r * c;
    const float mean = Dot<L>(xr, nullptr, c) / c;
    for (int i = 0; i < c; ++i) centred[i] = xr[i] - mean;
    const float rstd = 1.0f / std::sqrt(Dot<L>(centred.data(), centred.data(), c) / c + eps);
    for (int i = 0; i < c; ++i) yr[i] = centred[i] * rstd * gamma[i] + beta[i];
    mean_out[r] = mean;
    rstd_out[r] = rstd;
  }
}

// dx for `rows` rows; dy * xhat and dy added over them into dgamma, dbeta (float: one chunk of rows).
template <int L>
__attribute__((always_inline)) inline void BackwardRows(const float *dy, const float *x, const float *gamma,
                                                        const float *mean, const float *rstd, int64_t rows, int c,
                                                        float *dx, float *dgamma, float *dbeta) {
  std::vector<float> xhat(c), g(c);
  for (int64_t r = 0; r < rows; ++r) {
    const float *dyr = dy + r * c, *xr = x + r * c;
    float *dxr = dx + r * c;
    for (int i = 0; i < c; ++i) {
      xhat[i] = (xr[i] - mean[r]) * rstd[r];
      g[i] = dyr[i] * gamma[i];
      dgamma[i] += dyr[i] * xhat[i];
      dbeta[i] += dyr[i];
    }
    const float g_mean = Dot<L>(g.data(), nullptr, c) / c, gx_mean = Dot<L>(g.data(), xhat.data(), c) / c;
    for (int i = 0; i < c; ++i) dxr[i] = rstd[r] * (g[i] - g_mean - xhat[i] * gx_mean);
  }
}

MINDCV_AVX512 void ForwardAvx512(const float *x, const float *gamma, const float *beta, float eps, int64_t rows, int c,
                                 float *y, float *mean, float *rstd) {
  ForwardRows<16>(x, gamma, beta, eps, rows, c, y, mean, rstd);
}
MINDCV_AVX2 void ForwardAvx2(const float *x, const float *gamma, const float *beta, float eps, int64_t rows, int c,
                             float *y, float *mean, float *rstd) {
  ForwardRows<8>(x, gamma, beta, eps, rows, c, y, mean, rstd);
}
void ForwardBase(const float *x, const float *gamma, const float *beta, float eps, int64_t rows, int c, float *y,
                 float *mean, float *rstd) {
  ForwardRows<4>(x, gamma, beta, eps, rows, c, y, mean, rstd);
}
MINDCV_AVX512 void BackwardAvx512(const float *dy, const float *x, const float *gamma, const float *mean,
                                  const float *rstd, int64_t rows, int c, float *dx, float *dgamma, float *dbeta) {
  BackwardRows<16>(dy, x, gamma, mean, rstd, rows, c, dx, dgamma, dbeta);
}
MINDCV_AVX2 void BackwardAvx2(const float *dy, const float *x, const float *gamma, const float *mean,
                              const float *rstd, int64_t rows, int c, float *dx, float *dgamma, float *dbeta) {
  BackwardRows<8>(dy, x, gamma, mean, rstd, rows, c, dx, dgamma, dbeta);
}
void BackwardBase(const float *dy, const float *x, const float *gamma, const float *mean, const float *rstd,
                  int64_t rows, int c, float *dx, float *dgamma, float *dbeta) {
  BackwardRows<4>(dy, x, gamma, mean, rstd, rows, c, dx, dgamma, dbeta);
}

const Isa kIsa = DetectIsa();
constexpr int64_t kRowsPerChunk = 256;  // rows per task; the parameter-gradient partial sums are flushed per chunk



void ForwardAny(const float *x, const float *gamma, const float *beta, float eps, int64_t rows, int c, float *y,
                float *mean, float *rstd) {
  switch (kIsa) {
    case Isa::kAvx512: return ForwardAvx512(x, gamma, beta, eps, rows, c, y, mean, rstd);
    case Isa::kAvx2: return ForwardAvx2(x, gamma, beta, eps, rows, c, y, mean, rstd);
    default: return ForwardBase(x, gamma, beta, eps, rows, c, y, mean, rstd);
  }
}

void BackwardAny(const float *dy, const float *x, const float *gamma, const float *mean, const float *rstd,
                 int64_t rows, int c, float *dx, float *dgamma, float *dbeta) {
  switch (kIsa) {
    case Isa::kAvx512: return BackwardAvx512(dy, x, gamma, mean, rstd, rows, c, dx, dgamma, dbeta);
    case Isa::kAvx2: return BackwardAvx2(dy, x, gamma, mean, rstd, rows, c, dx, dgamma, dbeta);
    default: return BackwardBase(dy, x, gamma, mean, rstd, rows, c, dx, dgamma, dbeta);
  }
}

constexpr int64_t kTile = 16;  // pixels per task of the NCHW variants

// rows[p][ch] = image[ch][p0 + p] for p < np: an NCHW image's pixels p0.. as channels-last rows.
void GatherRows(const float *image, int64_t pixels, int64_t p0, int64_t np, int c, float *rows) {
  for (int ch = 0; ch < c; ++ch) {
    const float *src = image + ch * pixels + p0;
    for (int64_t p = 0; p < np; ++p) rows[p * c + ch] = src[p];
  }
}

// The inverse: image[ch][p0 + p] = rows[p][ch].
void ScatterRows(const float *rows, int64_t np, int c, int64_t pixels, int64_t p0, float *image) {
  for (int ch = 0; ch < c; ++ch) {
    float *dst = image + ch * pixels + p0;
    for (int64_t p = 0; p < np; ++p) dst[p] = rows[p * c + ch];
  }
}

}  // namespace

extern "C" {

// inputs x [..., C], gamma [C], beta [C], eps [1]; outputs y (shaped like x), mean and rstd [...] (float32).
int LayerNormForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                     void *extra) {
  if (nparam != 7 || !AllFloat32(7, dtypes)) return 1;
  auto x = static_cast<const float *>(params[0]);
  auto gamma = static_cast<const float *>(params[1]), beta = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  auto y = static_cast<float *>(params[4]);
  auto mean = static_cast<float *>(params[5]), rstd = static_cast<float *>(params[6]);
  const int c = static_cast<int>(shapes[0][ndims[0] - 1]);
  const int64_t rows = Elements(ndims[0] - 1, shapes[0]);
#pragma omp parallel for schedule(static)
  for (int64_t begin = 0; begin < rows; begin += kRowsPerChunk) {
    const int64_t n = std::min(kRowsPerChunk, rows - begin);
    ForwardAny(x + begin * c, gamma, beta, eps, n, c, y + begin * c, mean + begin, rstd + begin);
  }
  return 0;
}

// inputs dy [..., C], x [..., C], gamma [C], mean [...], rstd [...]; outputs dx [..., C], dgamma [C], dbeta [C].
int LayerNormBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                      void *extra) {
  if (nparam != 8 || !AllFloat32(8, dtypes)) return 1;
  auto dy = static_cast<const float *>(params[0]), x = static_cast<const float *>(params[1]);
  auto gamma = static_cast<const float *>(params[2]);
  auto mean = static_cast<const float *>(params[3]), rstd = static_cast<const float *>(params[4]);
  auto dx = static_cast<float *>(params[5]);
  auto dgamma = static_cast<float *>(params[6]), dbeta = static_cast<float *>(params[7]);
  const int c = static_cast<int>(shapes[0][ndims[0] - 1]);
  const int64_t rows = Elements(ndims[0] - 1, shapes[0]);
  ChannelSums dgamma_sums(c), dbeta_sums(c);
#pragma omp parallel
  {
    ChannelSums dgamma_thread(c), dbeta_thread(c);
#pragma omp for schedule(static)
    for (int64_t begin = 0; begin < rows; begin += kRowsPerChunk) {
      const int64_t n = std::min(kRowsPerChunk, rows - begin), at = begin * c;
      BackwardAny(dy + at, x + at, gamma, mean + begin, rstd + begin, n, c, dx + at, dgamma_thread.chunk(),
                  dbeta_thread.chunk());
      dgamma_thread.Flush();
      dbeta_thread.Flush();
    }
    dgamma_thread.MergeInto(&dgamma_sums);
    dbeta_thread.MergeInto(&dbeta_sums);
  }
  dgamma_sums.Write(dgamma);
  dbeta_sums.Write(dbeta);
  return 0;
}

// The same operator on an NCHW input x [N, C, H, W], normalizing over C; y is channels-last [N, H, W, C] (the
// transpose that precedes the norm in a ConvNeXt block, fused), mean and rstd [N, H, W].
int LayerNormNchwForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                         void *extra) {
  if (nparam != 7 || !AllFloat32(7, dtypes) || ndims[0] != 4) return 1;
  auto x = static_cast<const float *>(params[0]);
  auto gamma = static_cast<const float *>(params[1]), beta = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  auto y = static_cast<float *>(params[4]);
  auto mean = static_cast<float *>(params[5]), rstd = static_cast<float *>(params[6]);
  const int c = static_cast<int>(shapes[0][1]);
  const int64_t batch = shapes[0][0], pixels = shapes[0][2] * shapes[0][3], tiles = (pixels + kTile - 1) / kTile;
#pragma omp parallel
  {
    std::vector<float> rows(static_cast<size_t>(kTile) * c);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < batch * tiles; ++task) {
      const int64_t n = task / tiles, p0 = (task % tiles) * kTile, np = std::min<int64_t>(kTile, pixels - p0);
      GatherRows(x + n * c * pixels, pixels, p0, np, c, rows.data());
      const int64_t row0 = n * pixels + p0;
      ForwardAny(rows.data(), gamma, beta, eps, np, c, y + row0 * c, mean + row0, rstd + row0);
    }
  }
  return 0;
}

// inputs dy [N, H, W, C], x [N, C, H, W], gamma, mean, rstd; outputs dx [N, C, H, W], dgamma, dbeta.
int LayerNormNchwBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                          void *extra) {
  if (nparam != 8 || !AllFloat32(8, dtypes) || ndims[1] != 4) return 1;
  auto dy = static_cast<const float *>(params[0]), x = static_cast<const float *>(params[1]);
  auto gamma = static_cast<const float *>(params[2]);
  auto mean = static_cast<const float *>(params[3]), rstd = static_cast<const float *>(params[4]);
  auto dx = static_cast<float *>(params[5]);
  auto dgamma = static_cast<float *>(params[6]), dbeta = static_cast<float *>(params[7]);
  const int c = static_cast<int>(shapes[1][1]);
  const int64_t batch = shapes[1][0], pixels = shapes[1][2] * shapes[1][3], tiles = (pixels + kTile - 1) / kTile;
  ChannelSums dgamma_sums(c), dbeta_sums(c);
#pragma omp parallel
  {
    std::vector<float> rows(static_cast<size_t>(kTile) * c), dx_rows(static_cast<size_t>(kTile) * c);
    ChannelSums dgamma_thread(c), dbeta_thread(c);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < batch * tiles; ++task) {
      const int64_t n = task / tiles, p0 = (task % tiles) * kTile, np = std::min<int64_t>(kTile, pixels - p0);
      GatherRows(x + n * c * pixels, pixels, p0, np, c, rows.data());
      const int64_t row0 = n * pixels + p0;
      BackwardAny(dy + row0 * c, rows.data(), gamma, mean + row0, rstd + row0, np, c, dx_rows.data(),
                  dgamma_thread.chunk(), dbeta_thread.chunk());
      dgamma_thread.Flush();
      dbeta_thread.Flush();
      ScatterRows(dx_rows.data(), np, c, pixels, p0, dx + n * c * pixels);
    }
    dgamma_thread.MergeInto(&dgamma_sums);
    dbeta_thread.MergeInto(&dbeta_sums);
  }
  dgamma_sums.Write(dgamma);
  dbeta_sums.Write(dbeta);
  return 0;
}

}  // extern "C"
