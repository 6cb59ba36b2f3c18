// The pointwise MLP of a ConvNeXt block, y = gelu(x w1^T + b1) w2^T (pwconv2's bias is added later, by the
// residual kernel), forward and backward, for MindSpore's CPU back end through ops.Custom(func_type="aot")
// (signature: see depthwise_conv_cpu.cc).
//
// The rows (pixels) are cut into chunks, one chunk at a time per thread, so that the 4C-wide hidden activations
// of a chunk stay in that core's cache between the two matrix products and the GELU: run as separate operators
// they cross memory four times forward (~77 MB each way for one stage-1 block of ConvNeXt-T at batch 16) and
// seven times backward. The products are oneDNN's single-threaded sgemm (the libdnnl that MindSpore itself
// ships and links), one call per chunk, so the threads never wait on each other inside a block.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <memory>

#include "gelu.h"

extern "C" int dnnl_sgemm(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                          int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

namespace {

using namespace mindcv_ops;
using namespace mindcv_ops::gelu;

// Rows per chunk: 256 (128 for a hidden width above 1536), measured best on a 2-core AVX-512 machine: the
// hidden values of a chunk (a few hundred KB to 1.5 MB) stay in the core's L2 cache, and sgemm's packing of the
// weights, once per call, stays small against the products. The count of chunks is rounded up to a multiple of
// the threads, so that the last stages' few rows (784 for ConvNeXt-T at batch 16) are shared out evenly, but a
// chunk keeps at least 32 rows (on many cores some threads then have none, rather than all of them tiny chunks).
// `rows` > 0.
int64_t ChunkRows(int64_t rows, int64_t hidden) {
  const int64_t target = hidden > 1536 ? 128 : 256, threads = omp_get_max_threads();
  const int64_t chunks = ((rows + target - 1) / target + threads - 1) / threads * threads;
  return std::max(std::min<int64_t>(32, rows), (rows + chunks - 1) / chunks);
}

// Row-major sgemm: C[m x n] = A[m x k] B[k x n] (+ C when accumulate), op(A), op(B) transposed where asked.
// MindSpore's libdnnl is built without a threading runtime of its own (sequential), so each call runs on the
// calling thread. False if oneDNN reports an error.
bool Gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, const float *a, const float *b,
          float *c, bool accumulate) {
  return dnnl_sgemm(transpose_a ? 'T' : 'N', transpose_b ? 'T' : 'N', m, n, k, 1.0f, a, transpose_a ? m : k, b,
                    transpose_b ? k : n, accumulate ? 1.0f : 0.0f, c, n) == 0;
}

struct Shapes {
  int64_t rows, channels, hidden;
};

Shapes MlpShapes(int *ndims, int64_t **shapes) {
  const int64_t channels = shapes[0][ndims[0] - 1];
  return {channels > 0 ? Elements(ndims[0], shapes[0]) / channels : 0, channels, shapes[1][0]};
}

bool Empty(const Shapes &s) { return s.rows == 0 || s.channels == 0 || s.hidden == 0; }

// The chunks [begin, begin + rows) of `total` rows, shared out among the threads of the enclosing parallel region.
template <typename Body>
void ForEachChunk(int64_t total, int64_t chunk, Body body) {
#pragma omp for schedule(static)
  for (int64_t begin = 0; begin < total; begin += chunk) body(begin, std::min(chunk, total - begin));
}

// The eval-mode tail of a ConvNeXt block, applied to rows of y in place: y = shortcut + gamma * (y + b2).
struct Residual {
  const float *b2, *gamma, *shortcut;
};

// y = gelu(x w1^T + b1) w2^T; with `pre` and `act` not null also the pre-activation x w1^T (no bias) and the
// activation, for the backward pass (training); otherwise the hidden values never leave the chunk buffer. With
// `residual` not null, the residual tail too, while the chunk's output is in cache. False if a product failed.
bool Forward(const Shapes &s, const float *x, const float *w1, const float *b1, const float *w2, float *y, float *pre,
             float *act, const Residual *residual = nullptr) {
  if (Empty(s)) return true;
  const int64_t chunk = ChunkRows(s.rows, s.hidden);
  bool failed = false;
#pragma omp parallel
  {
    // (two buffers: the GELU in place, h into h, made the whole forward pass 1.8x slower)
    std::unique_ptr<float[]> buffer(pre ? nullptr : new float[2 * chunk * s.hidden]);
    ForEachChunk(s.rows, chunk, [&](int64_t begin, int64_t rows) {
      float *h = pre ? pre + begin * s.hidden : buffer.get();
      float *a = act ? act + begin * s.hidden : buffer.get() + chunk * s.hidden;
      bool ok = Gemm(false, true, rows, s.hidden, s.channels, x + begin * s.channels, w1, h, false);
      for (int64_t r = 0; r < rows; ++r) Gelu(h + r * s.hidden, b1, a + r * s.hidden, s.hidden);
      ok = Gemm(false, true, rows, s.channels, s.hidden, a, w2, y + begin * s.channels, false) && ok;
      if (!ok) {
#pragma omp atomic write
        failed = true;
      }
      if (residual)
        for (int64_t r = begin; r < begin + rows; ++r) {
          float *out = y + r * s.channels;
          const float *shortcut = residual->shortcut + r * s.channels;
          for (int64_t c = 0; c < s.channels; ++c) out[c] = shortcut[c] + residual->gamma[c] * (out[c] + residual->b2[c]);
        }
    });
  }
  return !failed;
}

}  // namespace

extern "C" {

// inputs x [..., C], w1 [4C, C], b1 [4C], w2 [C, 4C]; output y [..., C] = gelu(x w1^T + b1) w2^T.
int MlpForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
               void *extra) {
  if (nparam != 5 || !AllFloat32(5, dtypes)) return 1;
  return Forward(MlpShapes(ndims, shapes), static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                 static_cast<const float *>(params[2]), static_cast<const float *>(params[3]),
                 static_cast<float *>(params[4]), nullptr, nullptr) ? 0 : 1;
}

// Eval mode, with the block's tail: inputs x, w1, b1, w2 (as MlpForward), b2 [C], gamma [C], shortcut [..., C];
// output shortcut + gamma * (gelu(x w1^T + b1) w2^T + b2) (the residual kernel's arithmetic at drop-path scale 1).
int MlpResidualForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                       void *extra) {
  if (nparam != 8 || !AllFloat32(8, dtypes)) return 1;
  auto in = [&](int i) { return static_cast<const float *>(params[i]); };
  const Residual residual{in(4), in(5), in(6)};
  return Forward(MlpShapes(ndims, shapes), in(0), in(1), in(2), in(3), static_cast<float *>(params[7]), nullptr,
                 nullptr, &residual) ? 0 : 1;
}

// As MlpForward, with two more outputs for the backward pass: pre [rows, 4C] = x w1^T and act = gelu(pre + b1).
int MlpTrainForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                    void *extra) {
  if (nparam != 7 || !AllFloat32(7, dtypes)) return 1;
  return Forward(MlpShapes(ndims, shapes), static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                 static_cast<const float *>(params[2]), static_cast<const float *>(params[3]),
                 static_cast<float *>(params[4]), static_cast<float *>(params[5]), static_cast<float *>(params[6]))
             ? 0 : 1;
}

// inputs dy [..., C], x [..., C], w1, b1, w2, pre, act (as MlpTrainForward); outputs dx [..., C], dw1 [4C, C],
// db1 [4C], dw2 [C, 4C]. Per chunk: dw2 += dy^T act, dh = (dy w2) * gelu'(pre + b1), db1 += sum dh,
// dx = dh w1, dw1 += dh^T x; each thread sums its chunks' weight gradients, the threads' sums are added last.
int MlpBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                void *extra) {
  if (nparam != 11 || !AllFloat32(11, dtypes)) return 1;
  auto in = [&](int i) { return static_cast<const float *>(params[i]); };
  auto out = [&](int i) { return static_cast<float *>(params[i]); };
  const float *dy = in(0), *x = in(1), *w1 = in(2), *b1 = in(3), *w2 = in(4), *pre = in(5), *act = in(6);
  float *dx = out(7), *dw1 = out(8), *db1 = out(9), *dw2 = out(10);
  const Shapes s = MlpShapes(ndims + 1, shapes + 1);
  const int64_t weights = s.hidden * s.channels;
  std::fill(dw1, dw1 + weights, 0.0f);
  std::fill(dw2, dw2 + weights, 0.0f);
  ChannelSums bias_sums(s.hidden);
  bool failed = false;
  if (!Empty(s)) {
    const int64_t chunk = ChunkRows(s.rows, s.hidden);
#pragma omp parallel
    {
      // allocated at a thread's first chunk, uninitialised: its first products overwrite the weight-gradient sums
      std::unique_ptr<float[]> dh, thread_dw1, thread_dw2;
      ChannelSums thread_bias_sums(s.hidden);
      ForEachChunk(s.rows, chunk, [&](int64_t begin, int64_t rows) {
        const bool any = dh != nullptr;
        if (!any) {
          dh.reset(new float[chunk * s.hidden]);
          thread_dw1.reset(new float[weights]);
          thread_dw2.reset(new float[weights]);
        }
        const float *dy_rows = dy + begin * s.channels, *x_rows = x + begin * s.channels;
        bool ok = Gemm(true, false, s.channels, s.hidden, rows, dy_rows, act + begin * s.hidden, thread_dw2.get(), any);
        ok = Gemm(false, false, rows, s.hidden, s.channels, dy_rows, w2, dh.get(), false) && ok;
        for (int64_t r = 0; r < rows; ++r)
          GeluGrad(dh.get() + r * s.hidden, pre + (begin + r) * s.hidden, b1, dh.get() + r * s.hidden,
                   thread_bias_sums.chunk(), s.hidden);
        thread_bias_sums.Flush();
        ok = Gemm(false, false, rows, s.channels, s.hidden, dh.get(), w1, dx + begin * s.channels, false) && ok;
        ok = Gemm(true, false, s.hidden, s.channels, rows, dh.get(), x_rows, thread_dw1.get(), any) && ok;
        if (!ok) {
#pragma omp atomic write
          failed = true;
        }
      });
      thread_bias_sums.MergeInto(&bias_sums);
      if (dh != nullptr) {
#pragma omp critical
        for (int64_t i = 0; i < weights; ++i) {
          dw1[i] += thread_dw1[i];
          dw2[i] += thread_dw2[i];
        }
      }
    }
  }
  bias_sums.Write(db1);
  return failed ? 1 : 0;
}

}  // extern "C"
