// The tail of a ConvNeXt block in one pass, for MindSpore's CPU back end, called through
// ops.Custom(func_type="aot") with the AOT signature described in depthwise_conv_cpu.cc:
//
//   out[n, c, p] = shortcut[n, c, p] + scale[n] * (gamma[c] * (x[n, p, c] + bias[c]))
//
// x is the channels-last output of the second pointwise layer (before its bias), p a pixel, scale the
// per-sample drop-path factor (1 without drop path). Stock, this is BiasAdd, Mul, Transpose, (drop path) and
// Add: four or five passes over memory, and the transpose alone ~4 ms per call at batch 16. Tiles of 16
// pixels x 16 channels go through a small buffer, so both x and out are read and written in runs.
//
// backward: dx[n, p, c] = dout[n, c, p] * scale[n] * gamma[c], dbias[c] = sum dx[., ., c],
//           dgamma[c] = sum_n,p dout[n, c, p] * scale[n] * (x[n, p, c] + bias[c]); dshortcut = dout.
//
// The Nhwc variants serve a block that is channels-last throughout: shortcut and out [N, H, W, C] like x, no
// transpose.
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "simd.h"

namespace {

using mindcv_ops::AllFloat32;
using mindcv_ops::ChannelSums;

constexpr int kTile = 16;  // pixels x channels of a tile

}  // namespace

extern "C" {

// inputs x [N, H, W, C], bias [C], gamma [C], shortcut [N, C, H, W], scale [N]; output [N, C, H, W].
int ResidualForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                    void *extra) {
  if (nparam != 6 || !AllFloat32(6, dtypes) || ndims[0] != 4) return 1;
  auto x = static_cast<const float *>(params[0]);
  auto bias = static_cast<const float *>(params[1]), gamma = static_cast<const float *>(params[2]);
  auto shortcut = static_cast<const float *>(params[3]), scale = static_cast<const float *>(params[4]);
  auto out = static_cast<float *>(params[5]);
  const int64_t batch = shapes[0][0], pixels = shapes[0][1] * shapes[0][2], channels = shapes[0][3];
  const int64_t tiles = (pixels + kTile - 1) / kTile;
#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < batch * tiles; ++task) {
    const int64_t n = task / tiles, p0 = (task % tiles) * kTile, np = std::min<int64_t>(kTile, pixels - p0);
    float tile[kTile][kTile];  // [channel][pixel]
    for (int64_t c0 = 0; c0 < channels; c0 += kTile) {
      const int64_t nc = std::min<int64_t>(kTile, channels - c0);
      for (int64_t p = 0; p < np; ++p) {
        const float *row = x + ((n * pixels) + p0 + p) * channels + c0;
        for (int64_t c = 0; c < nc; ++c) tile[c][p] = scale[n] * (gamma[c0 + c] * (row[c] + bias[c0 + c]));
      }
      for (int64_t c = 0; c < nc; ++c) {
        const int64_t at = (n * channels + c0 + c) * pixels + p0;
        for (int64_t p = 0; p < np; ++p) out[at + p] = shortcut[at + p] + tile[c][p];
      }
    }
  }
  return 0;
}

// inputs dout [N, C, H, W], x [N, H, W, C], bias [C], gamma [C], scale [N]; outputs dx [N, H, W, C],
// dbias [C], dgamma [C] (summed in float per tile of 16 pixels, in double across tiles).
int ResidualBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                     void *extra) {
  if (nparam != 8 || !AllFloat32(8, dtypes) || ndims[1] != 4) return 1;
  auto dout = static_cast<const float *>(params[0]), x = static_cast<const float *>(params[1]);
  auto bias = static_cast<const float *>(params[2]), gamma = static_cast<const float *>(params[3]);
  auto scale = static_cast<const float *>(params[4]);
  auto dx = static_cast<float *>(params[5]);
  auto dbias = static_cast<float *>(params[6]), dgamma = static_cast<float *>(params[7]);
  const int64_t batch = shapes[1][0], pixels = shapes[1][1] * shapes[1][2], channels = shapes[1][3];
  const int64_t tiles = (pixels + kTile - 1) / kTile;
  ChannelSums dbias_sums(channels), dgamma_sums(channels);
#pragma omp parallel
  {
    ChannelSums dbias_thread(channels), dgamma_thread(channels);
    float *dbias_chunk = dbias_thread.chunk(), *dgamma_chunk = dgamma_thread.chunk();
#pragma omp for schedule(static)
    for (int64_t task = 0; task < batch * tiles; ++task) {
      const int64_t n = task / tiles, p0 = (task % tiles) * kTile, np = std::min<int64_t>(kTile, pixels - p0);
      float tile[kTile][kTile];  // [channel][pixel]: dout * scale
      for (int64_t c0 = 0; c0 < channels; c0 += kTile) {
        const int64_t nc = std::min<int64_t>(kTile, channels - c0);
        for (int64_t c = 0; c < nc; ++c) {
          const float *src = dout + (n * channels + c0 + c) * pixels + p0;
          for (int64_t p = 0; p < np; ++p) tile[c][p] = src[p] * scale[n];
        }
        for (int64_t p = 0; p < np; ++p) {
          const int64_t at = ((n * pixels) + p0 + p) * channels + c0;
          for (int64_t c = 0; c < nc; ++c) {
            const float g = tile[c][p];
            dx[at + c] = g * gamma[c0 + c];
            dbias_chunk[c0 + c] += g * gamma[c0 + c];
            dgamma_chunk[c0 + c] += g * (x[at + c] + bias[c0 + c]);
          }
        }
      }
      dbias_thread.Flush();
      dgamma_thread.Flush();
    }
    dbias_thread.MergeInto(&dbias_sums);
    dgamma_thread.MergeInto(&dgamma_sums);
  }
  dbias_sums.Write(dbias);
  dgamma_sums.Write(dgamma);
  return 0;
}

// inputs x [N, H, W, C], bias [C], gamma [C], shortcut [N, H, W, C], scale [N]; output [N, H, W, C].
int ResidualNhwcForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                        void *extra) {
  if (nparam != 6 || !AllFloat32(6, dtypes) || ndims[0] != 4) return 1;
  auto x = static_cast<const float *>(params[0]);
  auto bias = static_cast<const float *>(params[1]), gamma = static_cast<const float *>(params[2]);
  auto shortcut = static_cast<const float *>(params[3]), scale = static_cast<const float *>(params[4]);
  auto out = static_cast<float *>(params[5]);
  const int64_t batch = shapes[0][0], pixels = shapes[0][1] * shapes[0][2], channels = shapes[0][3];
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < batch * pixels; ++row) {
    const float s = scale[row / pixels];
    const int64_t at = row * channels;
    for (int64_t c = 0; c < channels; ++c) out[at + c] = shortcut[at + c] + s * (gamma[c] * (x[at + c] + bias[c]));
  }
  return 0;
}

// inputs dout [N, H, W, C], x [N, H, W, C], bias [C], gamma [C], scale [N]; outputs dx [N, H, W, C], dbias [C],
// dgamma [C] (summed in float per chunk of rows, in double across chunks).
int ResidualNhwcBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                         void *extra) {
  if (nparam != 8 || !AllFloat32(8, dtypes) || ndims[1] != 4) return 1;
  auto dout = static_cast<const float *>(params[0]), x = static_cast<const float *>(params[1]);
  auto bias = static_cast<const float *>(params[2]), gamma = static_cast<const float *>(params[3]);
  auto scale = static_cast<const float *>(params[4]);
  auto dx = static_cast<float *>(params[5]);
  auto dbias = static_cast<float *>(params[6]), dgamma = static_cast<float *>(params[7]);
  const int64_t batch = shapes[1][0], pixels = shapes[1][1] * shapes[1][2], channels = shapes[1][3];
  const int64_t rows = batch * pixels;
  ChannelSums dbias_sums(channels), dgamma_sums(channels);
#pragma omp parallel
  {
    ChannelSums dbias_thread(channels), dgamma_thread(channels);
    float *dbias_chunk = dbias_thread.chunk(), *dgamma_chunk = dgamma_thread.chunk();
#pragma omp for schedule(static)
    for (int64_t begin = 0; begin < rows; begin += kTile) {
      for (int64_t row = begin; row < std::min(rows, begin + kTile); ++row) {
        const float s = scale[row / pixels];
        const int64_t at = row * channels;
        for (int64_t c = 0; c < channels; ++c) {
          const float g = dout[at + c] * s;
          dx[at + c] = g * gamma[c];
          dbias_chunk[c] += g * gamma[c];
          dgamma_chunk[c] += g * (x[at + c] + bias[c]);
        }
      }
      dbias_thread.Flush();
      dgamma_thread.Flush();
    }
    dbias_thread.MergeInto(&dbias_sums);
    dgamma_thread.MergeInto(&dgamma_sums);
  }
  dbias_sums.Write(dbias);
  dgamma_sums.Write(dgamma);
  return 0;
}

}  // extern "C"
