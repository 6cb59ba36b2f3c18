// Whether every element of many float32 tensors is finite, in one kernel launch for MindSpore's CPU back end
// (ops.Custom(func_type="aot"), signature in depthwise_conv_cpu.cc): the training step's overflow check of all
// the gradients, which as one reduction per gradient costs ~180 kernel launches per step for ConvNeXt-T.
#include <omp.h>

#include <cstdint>

#include "simd.h"

namespace {

using namespace mindcv_ops;

// 0 for finite x, NaN for an infinite or NaN x: x * 0 summed over the span stays 0 only if all are finite.
template <int L>
__attribute__((always_inline)) inline bool SpanFinite(const float *x, int64_t n) {
  Vec<L> acc{};
  int64_t i = 0;
  for (; i + L <= n; i += L) acc += Load<L>(x + i) * 0.0f;
  float tail = 0.0f;
  for (; i < n; ++i) tail += x[i] * 0.0f;
  for (int k = 0; k < L; ++k) tail += acc[k];
  return tail == 0.0f;
}

MINDCV_AVX512 bool SpanFiniteAvx512(const float *x, int64_t n) { return SpanFinite<16>(x, n); }
MINDCV_AVX2 bool SpanFiniteAvx2(const float *x, int64_t n) { return SpanFinite<8>(x, n); }
bool SpanFiniteBase(const float *x, int64_t n) { return SpanFinite<4>(x, n); }

const Isa kIsa = DetectIsa();

bool Finite(const float *x, int64_t n) {
  switch (kIsa) {
    case Isa::kAvx512: return SpanFiniteAvx512(x, n);
    case Isa::kAvx2: return SpanFiniteAvx2(x, n);
    default: return SpanFiniteBase(x, n);
  }
}

}  // namespace

extern "C" {

// inputs: any number of float32 tensors; output: float32 [1], 1 when all their elements are finite, else 0.
int AllFinite(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
              void *extra) {
  const int inputs = nparam - 1;
  if (inputs < 1 || !AllFloat32(nparam, dtypes)) return 1;
  int all_finite = 1;
#pragma omp parallel for schedule(dynamic, 1) reduction(&& : all_finite)
  for (int t = 0; t < inputs; ++t)
    all_finite = all_finite && Finite(static_cast<const float *>(params[t]), Elements(ndims[t], shapes[t]));
  *static_cast<float *>(params[inputs]) = all_finite ? 1.0f : 0.0f;
  return 0;
}

}  // extern "C"
