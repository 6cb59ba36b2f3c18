// Exact (erf) GELU and its gradient for MindSpore's CPU back end, called through
// ops.Custom(func_type="aot") with the AOT signature described in depthwise_conv_cpu.cc; the Bias variants
// add a per-channel bias first (the preceding pointwise layer's, fused) and return its gradient too.
// MindSpore's CPU GELU runs as separate Erf, Mul, Div, ... kernels (about 6 ns per element forward);
// this is one vectorised pass over memory for the forward and one for the backward (the math: gelu.h).
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "gelu.h"

namespace {

using namespace mindcv_ops;
using namespace mindcv_ops::gelu;

// Runs body(begin, end) over [0, n) split into chunks of whole cache lines, one range per thread.
template <typename Body>
void ParallelChunks(int64_t n, Body body) {
  constexpr int64_t kChunk = 1 << 14;  // floats; small enough to balance, large enough to amortise
#pragma omp parallel for schedule(static)
  for (int64_t begin = 0; begin < n; begin += kChunk) body(begin, std::min(n, begin + kChunk));
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
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  ParallelChannelSums(chunks, channels, {dbias}, [&](int64_t chunk, float *const *sums) {
    const int64_t begin = chunk * kRowsPerChunk;
    for (int64_t r = begin; r < std::min(rows, begin + kRowsPerChunk); ++r)
      GeluGrad(dy + r * channels, x + r * channels, bias, dx + r * channels, sums[0], channels);
  });
  return 0;
}

}  // extern "C"
