// LayerNorm over rows of C floats (forward and backward), vectorised for the instruction set of this CPU; shared
// by layer_norm_cpu.cc (the norm kernels) and depthwise_conv_cpu.cc (the norm fused after the depthwise conv).
//
//   forward:  mean, rstd = 1 / sqrt(var + eps) per row; y = (x - mean) * rstd * gamma + beta
//   backward: xhat = (x - mean) * rstd, g = dy * gamma,
//             dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), dgamma = sum_rows dy * xhat, dbeta = sum_rows dy
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "simd.h"

namespace mindcv_ops {
namespace layer_norm {

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

inline MINDCV_AVX512 void ForwardAvx512(const float *x, const float *gamma, const float *beta, float eps, int64_t rows, int c,
                                 float *y, float *mean, float *rstd) {
  ForwardRows<16>(x, gamma, beta, eps, rows, c, y, mean, rstd);
}
inline MINDCV_AVX2 void ForwardAvx2(const float *x, const float *gamma, const float *beta, float eps, int64_t rows, int c,
                             float *y, float *mean, float *rstd) {
  ForwardRows<8>(x, gamma, beta, eps, rows, c, y, mean, rstd);
}
inline void ForwardBase(const float *x, const float *gamma, const float *beta, float eps, int64_t rows, int c, float *y,
                 float *mean, float *rstd) {
  ForwardRows<4>(x, gamma, beta, eps, rows, c, y, mean, rstd);
}
inline MINDCV_AVX512 void BackwardAvx512(const float *dy, const float *x, const float *gamma, const float *mean,
                                  const float *rstd, int64_t rows, int c, float *dx, float *dgamma, float *dbeta) {
  BackwardRows<16>(dy, x, gamma, mean, rstd, rows, c, dx, dgamma, dbeta);
}
inline MINDCV_AVX2 void BackwardAvx2(const float *dy, const float *x, const float *gamma, const float *mean,
                              const float *rstd, int64_t rows, int c, float *dx, float *dgamma, float *dbeta) {
  BackwardRows<8>(dy, x, gamma, mean, rstd, rows, c, dx, dgamma, dbeta);
}
inline void BackwardBase(const float *dy, const float *x, const float *gamma, const float *mean, const float *rstd,
                  int64_t rows, int c, float *dx, float *dgamma, float *dbeta) {
  BackwardRows<4>(dy, x, gamma, mean, rstd, rows, c, dx, dgamma, dbeta);
}

inline const Isa kIsa = DetectIsa();

inline void ForwardAny(const float *x, const float *gamma, const float *beta, float eps, int64_t rows, int c, float *y,
                float *mean, float *rstd) {
  switch (kIsa) {
    case Isa::kAvx512: return ForwardAvx512(x, gamma, beta, eps, rows, c, y, mean, rstd);
    case Isa::kAvx2: return ForwardAvx2(x, gamma, beta, eps, rows, c, y, mean, rstd);
    default: return ForwardBase(x, gamma, beta, eps, rows, c, y, mean, rstd);
  }
}

inline void BackwardAny(const float *dy, const float *x, const float *gamma, const float *mean, const float *rstd,
                 int64_t rows, int c, float *dx, float *dgamma, float *dbeta) {
  switch (kIsa) {
    case Isa::kAvx512: return BackwardAvx512(dy, x, gamma, mean, rstd, rows, c, dx, dgamma, dbeta);
    case Isa::kAvx2: return BackwardAvx2(dy, x, gamma, mean, rstd, rows, c, dx, dgamma, dbeta);
    default: return BackwardBase(dy, x, gamma, mean, rstd, rows, c, dx, dgamma, dbeta);
  }
}

}  // namespace layer_norm
}  // namespace mindcv_ops
