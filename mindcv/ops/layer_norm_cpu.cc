// LayerNorm over the last axis (channels-last ConvNeXt norms) and its gradient for MindSpore's CPU back end,
// called through ops.Custom(func_type="aot") with the AOT signature described in depthwise_conv_cpu.cc.
// MindSpore's CPU LayerNormGrad takes ~57 ms per call in a ConvNeXt-T training step at batch 16 (a fifth of
// the step); this is one pass over x and dy per row, threads over rows. The Nchw variants read an NCHW
// input (and write its gradient) through 16-pixel tiles, so that the transpose to channels-last before the
// norm costs no pass of its own.
// The math: layer_norm.h.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "layer_norm.h"

namespace {

using namespace mindcv_ops;
using namespace mindcv_ops::layer_norm;

constexpr int64_t kRowsPerChunk = 256;  // rows per task; the parameter-gradient partial sums are flushed per chunk

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
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  ParallelChannelSums(chunks, c, {dgamma, dbeta}, [&](int64_t chunk, float *const *sums) {
    const int64_t begin = chunk * kRowsPerChunk, n = std::min(kRowsPerChunk, rows - begin), at = begin * c;
    BackwardAny(dy + at, x + at, gamma, mean + begin, rstd + begin, n, c, dx + at, sums[0], sums[1]);
  });
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
  ParallelChannelSums(batch * tiles, c, {dgamma, dbeta}, [&](int64_t task, float *const *sums) {
    std::vector<float> rows(static_cast<size_t>(kTile) * c), dx_rows(static_cast<size_t>(kTile) * c);
    const int64_t n = task / tiles, p0 = (task % tiles) * kTile, np = std::min<int64_t>(kTile, pixels - p0);
    GatherRows(x + n * c * pixels, pixels, p0, np, c, rows.data());
    const int64_t row0 = n * pixels + p0;
    BackwardAny(dy + row0 * c, rows.data(), gamma, mean + row0, rstd + row0, np, c, dx_rows.data(), sums[0],
                sums[1]);
    ScatterRows(dx_rows.data(), np, c, pixels, p0, dx + n * c * pixels);
  });
  return 0;
}

}  // extern "C"
