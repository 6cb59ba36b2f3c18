// The tail of a channels-last ConvNeXt block in one pass, for MindSpore's CPU back end, called through
// ops.Custom(func_type="aot") with the AOT signature described in depthwise_conv_cpu.cc:
//
//   out[n, p, c] = shortcut[n, p, c] + scale[n] * (gamma[c] * (x[n, p, c] + bias[c]))
//
// x is the output of the second pointwise layer (before its bias), p a pixel, scale the per-sample drop-path
// factor (1 without drop path). Stock, this is BiasAdd, Mul, (drop path) and Add: three or four passes over memory.
//
// backward: dx[n, p, c] = dout[n, p, c] * scale[n] * gamma[c], dbias[c] = sum dx[., ., c],
//           dgamma[c] = sum_n,p dout[n, p, c] * scale[n] * (x[n, p, c] + bias[c]); dshortcut = dout.
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "simd.h"

namespace {

using mindcv_ops::AllFloat32;
using mindcv_ops::ParallelChannelSums;

constexpr int64_t kRowsPerChunk = 16;  // rows per task; the parameter-gradient sums are flushed per chunk

}  // namespace

extern "C" {

// inputs x [N, H, W, C], bias [C], gamma [C], shortcut [N, H, W, C], scale [N]; output [N, H, W, C].
int ResidualForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
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
int ResidualBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                     void *extra) {
  if (nparam != 8 || !AllFloat32(8, dtypes) || ndims[1] != 4) return 1;
  auto dout = static_cast<const float *>(params[0]), x = static_cast<const float *>(params[1]);
  auto bias = static_cast<const float *>(params[2]), gamma = static_cast<const float *>(params[3]);
  auto scale = static_cast<const float *>(params[4]);
  auto dx = static_cast<float *>(params[5]);
  auto dbias = static_cast<float *>(params[6]), dgamma = static_cast<float *>(params[7]);
  const int64_t batch = shapes[1][0], pixels = shapes[1][1] * shapes[1][2], channels = shapes[1][3];
  const int64_t rows = batch * pixels;
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  ParallelChannelSums(chunks, channels, {dbias, dgamma}, [&](int64_t chunk, float *const *sums) {
    const int64_t begin = chunk * kRowsPerChunk;
    float *dbias_sum = sums[0], *dgamma_sum = sums[1];
    for (int64_t row = begin; row < std::min(rows, begin + kRowsPerChunk); ++row) {
      const float s = scale[row / pixels];
      const int64_t at = row * channels;
      for (int64_t c = 0; c < channels; ++c) {
        const float g = dout[at + c] * s;
        dx[at + c] = g * gamma[c];
        dbias_sum[c] += g * gamma[c];
        dgamma_sum[c] += g * (x[at + c] + bias[c]);
      }
    }
  });
  return 0;
}

}  // extern "C"
