// Exact (erf) GELU and its gradient for MindSpore's CPU back end, called through
// ops.Custom(func_type="aot") with the AOT signature described in depthwise_conv_cpu.cc.
// MindSpore's CPU GELU runs as separate Erf, Mul, Div, ... kernels (about 6 ns per element forward);
// this is one vectorised pass over memory for the forward and one for the backward.
//
//   gelu(x)  = x * Phi(x),             Phi(x) = (1 + erf(x / sqrt 2)) / 2
//   gelu'(x) = Phi(x) + x * phi(x),    phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
//
// Phi comes from erfc(z) = t * exp(-z^2 + P(t)), t = 1 / (1 + z / 2), z = |x| / sqrt 2, with P the degree-9
// Chebyshev fit of Numerical Recipes ("erfcc"), whose relative error is below 1.2e-7 for all z >= 0;
// Phi(x) = erfc(z) / 2 for x < 0 and 1 - erfc(z) / 2 otherwise, so both tails keep float precision.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "simd.h"

namespace {

using namespace mindcv_ops;

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

template <int L>
__attribute__((always_inline)) inline void GeluSpan(const float *x, float *y, int64_t n) {
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const Vec<L> v = Load<L>(x + i);
    const Vec<L> out = v * NormalCdf<L>(v, nullptr);
    std::memcpy(y + i, &out, sizeof(out));
  }
  if (i < n) {  // tail: through a zero-filled vector
    float buffer[L] = {};
    std::memcpy(buffer, x + i, (n - i) * sizeof(float));
    const Vec<L> v = Load<L>(buffer);
    const Vec<L> out = v * NormalCdf<L>(v, nullptr);
    std::memcpy(y + i, &out, (n - i) * sizeof(float));
  }
}

template <int L>
__attribute__((always_inline)) inline void GeluGradSpan(const float *dy, const float *x, float *dx, int64_t n) {
  auto grad = [](Vec<L> g, Vec<L> v) {
    Vec<L> density;
    const Vec<L> cdf = NormalCdf<L>(v, &density);
    return g * (cdf + v * density);
  };
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const Vec<L> out = grad(Load<L>(dy + i), Load<L>(x + i));
    std::memcpy(dx + i, &out, sizeof(out));
  }
  if (i < n) {
    float g[L] = {}, v[L] = {};
    std::memcpy(g, dy + i, (n - i) * sizeof(float));
    std::memcpy(v, x + i, (n - i) * sizeof(float));
    const Vec<L> out = grad(Load<L>(g), Load<L>(v));
    std::memcpy(dx + i, &out, (n - i) * sizeof(float));
  }
}

MINDCV_AVX512 void GeluAvx512(const float *x, float *y, int64_t n) { GeluSpan<16>(x, y, n); }
MINDCV_AVX2 void GeluAvx2(const float *x, float *y, int64_t n) { GeluSpan<8>(x, y, n); }
void GeluBase(const float *x, float *y, int64_t n) { GeluSpan<4>(x, y, n); }
MINDCV_AVX512 void GeluGradAvx512(const float *dy, const float *x, float *dx, int64_t n) {
  GeluGradSpan<16>(dy, x, dx, n);
}
MINDCV_AVX2 void GeluGradAvx2(const float *dy, const float *x, float *dx, int64_t n) { GeluGradSpan<8>(dy, x, dx, n); }
void GeluGradBase(const float *dy, const float *x, float *dx, int64_t n) { GeluGradSpan<4>(dy, x, dx, n); }

const Isa kIsa = DetectIsa();

int64_t Elements(int ndims, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndims; ++i) n *= shape[i];
  return n;
}

// Runs body(begin, end) over [0, n) split into chunks of whole cache lines, one range per thread.
template <typename Body>
void ParallelChunks(int64_t n, Body body) {
  constexpr int64_t kChunk = 1 << 14;  // floats; small enough to balance, large enough to amortise
#pragma omp parallel for schedule(static)
  for (int64_t begin = 0; begin < n; begin += kChunk) body(begin, std::min(n, begin + kChunk));
}

}  // namespace

extern "C" {

// input x (any shape); output y = gelu(x), same shape.
int GeluForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                void *extra) {
  if (nparam != 2 || std::strcmp(dtypes[0], "float32") != 0) return 1;
  auto x = static_cast<const float *>(params[0]);
  auto y = static_cast<float *>(params[1]);
  ParallelChunks(Elements(ndims[0], shapes[0]), [&](int64_t begin, int64_t end) {
    switch (kIsa) {
      case Isa::kAvx512: return GeluAvx512(x + begin, y + begin, end - begin);
      case Isa::kAvx2: return GeluAvx2(x + begin, y + begin, end - begin);
      default: return GeluBase(x + begin, y + begin, end - begin);
    }
  });
  return 0;
}

// inputs dy, x (same shape); output dx = dy * gelu'(x).
int GeluBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                 void *extra) {
  if (nparam != 3 || std::strcmp(dtypes[0], "float32") != 0 || std::strcmp(dtypes[1], "float32") != 0) return 1;
  auto dy = static_cast<const float *>(params[0]);
  auto x = static_cast<const float *>(params[1]);
  auto dx = static_cast<float *>(params[2]);
  ParallelChunks(Elements(ndims[0], shapes[0]), [&](int64_t begin, int64_t end) {
    switch (kIsa) {
      case Isa::kAvx512: return GeluGradAvx512(dy + begin, x + begin, dx + begin, end - begin);
      case Isa::kAvx2: return GeluGradAvx2(dy + begin, x + begin, dx + begin, end - begin);
      default: return GeluGradBase(dy + begin, x + begin, dx + begin, end - begin);
    }
  });
  return 0;
}

}  // extern "C"
