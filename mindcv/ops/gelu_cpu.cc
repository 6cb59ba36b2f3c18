// Exact (erf) GELU and its gradient for MindSpore's CPU back end, called through
// ops.Custom(func_type="aot") with the AOT signature described in depthwise_conv_cpu.cc; the Bias variants
// add a per-channel bias first (the preceding pointwise layer's, fused) and return its gradient too.
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
#include <vector>

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

MINDCV_AVX512 void GeluAvx512(const float *x, const float *bias, float *y, int64_t n) { GeluSpan<16>(x, bias, y, n); }
MINDCV_AVX2 void GeluAvx2(const float *x, const float *bias, float *y, int64_t n) { GeluSpan<8>(x, bias, y, n); }
void GeluBase(const float *x, const float *bias, float *y, int64_t n) { GeluSpan<4>(x, bias, y, n); }
MINDCV_AVX512 void GeluGradAvx512(const float *dy, const float *x, const float *bias, float *dx, float *dbias,
                                  int64_t n) {
  GeluGradSpan<16>(dy, x, bias, dx, dbias, n);
}
MINDCV_AVX2 void GeluGradAvx2(const float *dy, const float *x, const float *bias, float *dx, float *dbias,
                              int64_t n) {
  GeluGradSpan<8>(dy, x, bias, dx, dbias, n);
}
void GeluGradBase(const float *dy, const float *x, const float *bias, float *dx, float *dbias, int64_t n) {
  GeluGradSpan<4>(dy, x, bias, dx, dbias, n);
}

const Isa kIsa = DetectIsa();

// Runs body(begin, end) over [0, n) split into chunks of whole cache lines, one range per thread.
template <typename Body>
void ParallelChunks(int64_t n, Body body) {
  constexpr int64_t kChunk = 1 << 14;  // floats; small enough to balance, large enough to amortise
#pragma omp parallel for schedule(static)
  for (int64_t begin = 0; begin < n; begin += kChunk) body(begin, std::min(n, begin + kChunk));
}

void Gelu(const float *x, const float *bias, float *y, int64_t n) {
  switch (kIsa) {
    case Isa::kAvx512: return GeluAvx512(x, bias, y, n);
    case Isa::kAvx2: return GeluAvx2(x, bias, y, n);
    default: return GeluBase(x, bias, y, n);
  }
}

void GeluGrad(const float *dy, const float *x, const float *bias, float *dx, float *dbias, int64_t n) {
  switch (kIsa) {
    case Isa::kAvx512: return GeluGradAvx512(dy, x, bias, dx, dbias, n);
    case Isa::kAvx2: return GeluGradAvx2(dy, x, bias, dx, dbias, n);
    default: return GeluGradBase(dy, x, bias, dx, dbias, n);
  }
}


constexpr int64_t kRowsPerChunk = 64;  // rows per task of the bias variants

}  // namespace

extern "C" {

// input x (any shape); output y = gelu(x), same shape.
int GeluForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                void *extra) {
  if (nparam != 2 || !AllFloat32(2, dtypes)) return 1;
  auto x = static_cast<const float *>(params[0]);
  auto y = static_cast<float *>(params[1]);
  ParallelChunks(Elements(ndims[0], shapes[0]),
                 [&](int64_t begin, int64_t end) { Gelu(x + begin, nullptr, y + begin, end - begin); });
  return 0;
}

// inputs dy, x (same shape); output dx = dy * gelu'(x).
int GeluBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                 void *extra) {
  if (nparam != 3 || !AllFloat32(3, dtypes)) return 1;
  auto dy = static_cast<const float *>(params[0]), x = static_cast<const float *>(params[1]);
  auto dx = static_cast<float *>(params[2]);
  ParallelChunks(Elements(ndims[0], shapes[0]), [&](int64_t begin, int64_t end) {
    GeluGrad(dy + begin, x + begin, nullptr, dx + begin, nullptr, end - begin);
  });
  return 0;
}

// inputs x [..., C], bias [C]; output y = gelu(x + bias) (the bias add of the layer before, fused).
int BiasGeluForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                    void *extra) {
  if (nparam != 3 || !AllFloat32(3, dtypes)) return 1;
  auto x = static_cast<const float *>(params[0]), bias = static_cast<const float *>(params[1]);
  auto y = static_cast<float *>(params[2]);
  const int64_t channels = shapes[0][ndims[0] - 1], rows = Elements(ndims[0], shapes[0]) / channels;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) Gelu(x + r * channels, bias, y + r * channels, channels);
  return 0;
}

// inputs dy, x [..., C], bias [C]; outputs dx = dy * gelu'(x + bias) and dbias [C] = dx summed over rows
// (in float per chunk of rows, in double across chunks).
int BiasGeluBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                     void *extra) {
  if (nparam != 5 || !AllFloat32(5, dtypes)) return 1;
  auto dy = static_cast<const float *>(params[0]), x = static_cast<const float *>(params[1]);
  auto bias = static_cast<const float *>(params[2]);
  auto dx = static_cast<float *>(params[3]), dbias = static_cast<float *>(params[4]);
  const int64_t channels = shapes[1][ndims[1] - 1], rows = Elements(ndims[1], shapes[1]) / channels;
  ChannelSums sums(channels);
#pragma omp parallel
  {
    ChannelSums thread_sums(channels);
#pragma omp for schedule(static)
    for (int64_t begin = 0; begin < rows; begin += kRowsPerChunk) {
      for (int64_t r = begin; r < std::min(rows, begin + kRowsPerChunk); ++r)
        GeluGrad(dy + r * channels, x + r * channels, bias, dx + r * channels, thread_sums.chunk(), channels);
      thread_sums.Flush();
    }
    thread_sums.MergeInto(&sums);
  }
  sums.Write(dbias);
  return 0;
}

}  // extern "C"
