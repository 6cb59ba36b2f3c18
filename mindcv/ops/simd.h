// Helpers shared by the CPU kernels: a GCC vector type of L floats, unaligned loads, and the
// instruction set picked at run time. Kernels are written once over Vec<L> and instantiated inside
// functions compiled for AVX-512 (L = 16), AVX2 + FMA (L = 8) and baseline SSE2 (L = 4), so the
// libraries need no -march flag. A vector wider than the target's registers would be split by GCC very
// inefficiently, hence one width per instruction set.
#pragma once

#include <cstring>

namespace mindcv_ops {

// The vector types never cross a call boundary (the helpers are always inlined), so the ABI note
// that GCC emits for them does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
template <int L>
struct VecOf {
  typedef float type __attribute__((vector_size(L * sizeof(float))));
};
template <int L>
using Vec = typename VecOf<L>::type;

template <int L>
__attribute__((always_inline)) inline Vec<L> Load(const float *p) {
  Vec<L> v;
  std::memcpy(&v, p, sizeof(v));  // an unaligned vector load
  return v;
}

// x86-64-v4 is AVX-512 (F, BW, DQ, VL), x86-64-v3 is AVX2 + FMA.
#define MINDCV_AVX512 __attribute__((target("arch=x86-64-v4")))
#define MINDCV_AVX2 __attribute__((target("arch=x86-64-v3")))
#define MINDCV_AVX512_VBMI __attribute__((target("arch=x86-64-v4,avx512vbmi")))

enum class Isa { kBase, kAvx2, kAvx512 };

inline Isa DetectIsa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
  return Isa::kBase;
}

inline bool HasAvx512Vbmi() {
  __builtin_cpu_init();
  return DetectIsa() == Isa::kAvx512 && __builtin_cpu_supports("avx512vbmi");
}

}  // namespace mindcv_ops
