// Exact (erf) GELU and its gradient over spans of floats, vectorised for the instruction set of this CPU;
// shared by gelu_cpu.cc (the standalone kernels) and mlp_cpu.cc (inside the fused pointwise MLP).
//
//   gelu(x)  = x * Phi(x),             Phi(x) = (1 + erf(x / sqrt 2)) / 2
//   gelu'(x) = Phi(x) + x * phi(x),    phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
//
// Phi comes from erfc(z) = t * exp(-z^2 + P(t)), t = 1 / (1 + z / 2), z = |x| / sqrt 2, with P the degree-9
// Chebyshev fit of Numerical Recipes ("erfcc"), whose relative error is below 1.2e-7 for all z >= 0;
// Phi(x) = erfc(z) / 2 for x < 0 and 1 - erfc(z) / 2 otherwise, so both tails keep float precision.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "simd.h"

namespace mindcv_ops {
namespace gelu {

// exp(a) for a in [-87, 88]: a = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two parts so n ln2 is exact),
// e^r by its degree-7 Taylor polynomial (relative error < 1e-8 there), 2^n assembled in the exponent bits.
template <int L>
__attribute__((always_inline)) inline Vec<L> Exp(Vec<L> a) {
  typedef int __attribute__((vector_size(L * sizeof(int)))) IVec;
  const Vec<L> v = a * 1.44269504f + 0.5f;
  Vec<L> n = __builtin_convertvector(__builtin_convertvector(v, IVec), Vec<L>);  // truncation towards 0
  n = n > v ? n - 1.0f : n;                                                        // so n = floor(v)
  const Vec<L> r = (a - n * 0.693145752f) - n * 1.42860677e-6f;
  Vec<L> p = 1.0f / 5040 + r * (1.0f / 40320);
  p = 1.0f / 720 + r * p;
  p = 1.0f / 120 + r * p;
  p = 1.0f / 24 + r * p;
  p = 1.0f / 6 + r * p;
  p = 0.5f + r * p;
  p = 1.0f + r * p;
  p = 1.0f + r * p;
  const IVec bits = (__builtin_convertvector(n, IVec) + 127) << 23;
  Vec<L> scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// Phi(x) and, when `density` is not null, phi(x).
template <int L>
__attribute__((always_inline)) inline Vec<L> NormalCdf(Vec<L> x, Vec<L> *density) {
  const Vec<L> z = (x < 0.0f ? -x : x) * 0.707106781f;
  const Vec<L> t = 1.0f / (1.0f + 0.5f * z);
  Vec<L> p = -0.82215223f + t * 0.17087277f;
  p = 1.48851587f + t * p;
  p = -1.13520398f + t * p;
  p = 0.27886807f + t * p;
  p = -0.18628806f + t * p;
  p = 0.09678418f + t * p;
  p = 0.37409196f + t * p;
  p = 1.00002368f + t * p;
  p = -1.26551223f + t * p;
  Vec<L> e = -z * z + p;
  e = e < -87.0f ? Vec<L>{} - 87.0f : e;  // erfc below 1e-38 is 0 in float anyway; keeps Exp in range
  const Vec<L> half_erfc = 0.5f * t * Exp<L>(e);
  if (density) {
    Vec<L> s = -0.5f * x * x;
    s = s < -87.0f ? Vec<L>{} - 87.0f : s;
    *density = 0.398942280f * Exp<L>(s);
  }
  return x < 0.0f ? half_erfc : 1.0f - half_erfc;
}

// The span's inputs x (+ bias, when not null: bias[i] belongs to x[i]) through a zero-filled vector at the tail.
template <int L>
__attribute__((always_inline)) inline Vec<L> LoadInput(const float *x, const float *bias, int64_t i, int64_t n) {
  if (i + L <= n) return bias ? Load<L>(x + i) + Load<L>(bias + i) : Load<L>(x + i);
  float v[L] = {};
  for (int64_t k = i; k < n; ++k) v[k - i] = bias ? x[k] + bias[k] : x[k];
  return Load<L>(v);
}

template <int L>
__attribute__((always_inline)) inline void Store(float *y, Vec<L> v, int64_t i, int64_t n) {
  std::memcpy(y + i, &v, std::min<int64_t>(L, n - i) * sizeof(float));
}

template <int L>
__attribute__((always_inline)) inline void GeluSpan(const float *x, const float *bias, float *y, int64_t n) {
  for (int64_t i = 0; i < n; i += L) {
    const Vec<L> v = LoadInput<L>(x, bias, i, n);
    Store<L>(y, v * NormalCdf<L>(v, nullptr), i, n);
  }
}

// dx = dy * gelu'(x + bias); with dbias not null, dx is also added to dbias (same layout as bias).
template <int L>
__attribute__((always_inline)) inline void GeluGradSpan(const float *dy, const float *x, const float *bias,
                                                        float *dx, float *dbias, int64_t n) {
  for (int64_t i = 0; i < n; i += L) {
    const Vec<L> v = LoadInput<L>(x, bias, i, n);
    Vec<L> density;
    const Vec<L> cdf = NormalCdf<L>(v, &density);
    const Vec<L> out = LoadInput<L>(dy, nullptr, i, n) * (cdf + v * density);
    Store<L>(dx, out, i, n);
    if (dbias) Store<L>(dbias, LoadInput<L>(dbias, nullptr, i, n) + out, i, n);
  }
}

inline MINDCV_AVX512 void GeluAvx512(const float *x, const float *bias, float *y, int64_t n) { GeluSpan<16>(x, bias, y, n); }
inline MINDCV_AVX2 void GeluAvx2(const float *x, const float *bias, float *y, int64_t n) { GeluSpan<8>(x, bias, y, n); }
inline void GeluBase(const float *x, const float *bias, float *y, int64_t n) { GeluSpan<4>(x, bias, y, n); }
inline MINDCV_AVX512 void GeluGradAvx512(const float *dy, const float *x, const float *bias, float *dx, float *dbias,
                                  int64_t n) {
  GeluGradSpan<16>(dy, x, bias, dx, dbias, n);
}
inline MINDCV_AVX2 void GeluGradAvx2(const float *dy, const float *x, const float *bias, float *dx, float *dbias,
                              int64_t n) {
  GeluGradSpan<8>(dy, x, bias, dx, dbias, n);
}
inline void GeluGradBase(const float *dy, const float *x, const float *bias, float *dx, float *dbias, int64_t n) {
  GeluGradSpan<4>(dy, x, bias, dx, dbias, n);
}

inline const Isa kIsa = DetectIsa();

inline void Gelu(const float *x, const float *bias, float *y, int64_t n) {
  switch (kIsa) {
    case Isa::kAvx512: return GeluAvx512(x, bias, y, n);
    case Isa::kAvx2: return GeluAvx2(x, bias, y, n);
    default: return GeluBase(x, bias, y, n);
  }
}

inline void GeluGrad(const float *dy, const float *x, const float *bias, float *dx, float *dbias, int64_t n) {
  switch (kIsa) {
    case Isa::kAvx512: return GeluGradAvx512(dy, x, bias, dx, dbias, n);
    case Isa::kAvx2: return GeluGradAvx2(dy, x, bias, dx, dbias, n);
    default: return GeluGradBase(dy, x, bias, dx, dbias, n);
  }
}

}  // namespace gelu
}  // namespace mindcv_ops
