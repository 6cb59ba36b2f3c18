// Helpers shared by the CPU kernels: a GCC vector type of L floats, unaligned loads, and the
// instruction set picked at run time. Kernels are written once over Vec<L> and instantiated inside
// functions compiled for AVX-512 (L = 16), AVX2 + FMA (L = 8) and baseline SSE2 (L = 4), so the
// libraries need no -march flag (on other CPUs only the generic instantiation is used). A vector wider than the target's registers would be split by GCC very
// inefficiently, hence one width per instruction set.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

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

enum class Isa { kBase, kAvx2, kAvx512 };

#if defined(__x86_64__)
#define MINDCV_X86 1
// x86-64-v4 is AVX-512 (F, BW, DQ, VL), x86-64-v3 is AVX2 + FMA.
#define MINDCV_AVX512 __attribute__((target("arch=x86-64-v4")))
#define MINDCV_AVX2 __attribute__((target("arch=x86-64-v3")))
#define MINDCV_AVX512_VBMI __attribute__((target("arch=x86-64-v4,avx512vbmi")))
// For loops left to the auto-vectoriser, which otherwise keeps to 256-bit vectors on AVX-512 CPUs.
#define MINDCV_AVX512_WIDE __attribute__((target("arch=x86-64-v4,prefer-vector-width=512")))
#else  // other CPUs (the Arm hosts of Ascend machines): the generic code, vectorised by the compiler
#define MINDCV_AVX512
#define MINDCV_AVX2
#define MINDCV_AVX512_VBMI
#define MINDCV_AVX512_WIDE
#endif

// The best instruction set of this CPU; MINDCV_CPU_ISA=base or avx2 caps it (to test the other paths).
inline Isa DetectIsa() {
#ifdef MINDCV_X86
  __builtin_cpu_init();
  Isa best = Isa::kBase;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    best = Isa::kAvx512;
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    best = Isa::kAvx2;
  const char *cap = std::getenv("MINDCV_CPU_ISA");
  if (cap && std::strcmp(cap, "base") == 0) return Isa::kBase;
  if (cap && std::strcmp(cap, "avx2") == 0 && best == Isa::kAvx512) return Isa::kAvx2;
  return best;
#else
  return Isa::kBase;
#endif
}

// The AOT entry points take only float32 tensors: true when the first n dtypes say so.
inline bool AllFloat32(int n, const char **dtypes) {
  for (int i = 0; i < n; ++i)
    if (std::strcmp(dtypes[i], "float32") != 0) return false;
  return true;
}

// Number of elements of a tensor whose first `ndims` dimensions are `shape` (its rows: ndims - 1).
inline int64_t Elements(int ndims, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndims; ++i) n *= shape[i];
  return n;
}

// Per-channel sums over many rows (bias / scale gradients), in float within a chunk of rows and in double
// beyond, so that sums over ~1e5 rows keep float precision. A thread adds into chunk(), calls Flush() after
// each chunk and MergeInto() the shared sums at the end (inside the parallel region).
class ChannelSums {
 public:
  explicit ChannelSums(int64_t channels) : chunk_(channels, 0.0f), total_(channels, 0.0) {}
  float *chunk() { return chunk_.data(); }
  void Flush() {
    for (size_t i = 0; i < chunk_.size(); ++i) {
      total_[i] += chunk_[i];
      chunk_[i] = 0.0f;
    }
  }
  void MergeInto(ChannelSums *shared) const {
#pragma omp critical
    for (size_t i = 0; i < total_.size(); ++i) shared->total_[i] += total_[i];
  }
  void Write(float *out) const {
    for (size_t i = 0; i < total_.size(); ++i) out[i] = static_cast<float>(total_[i]);
  }

 private:
  std::vector<float> chunk_;
  std::vector<double> total_;
};

// Runs body(task, sums) for every task in [0, tasks) over the OpenMP threads, where sums[k] (k < outs.size())
// is the calling thread's float array of `channels` partial sums for output k, flushed to double after each
// task; writes the totals over all tasks to outs[k]. The parameter-gradient sums of the backward kernels.
template <typename Body>
void ParallelChannelSums(int64_t tasks, int64_t channels, const std::vector<float *> &outs, Body body) {
  std::vector<ChannelSums> totals(outs.size(), ChannelSums(channels));
#pragma omp parallel
  {
    std::vector<ChannelSums> thread_sums(outs.size(), ChannelSums(channels));
    std::vector<float *> chunks;
    for (ChannelSums &sums : thread_sums) chunks.push_back(sums.chunk());
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      body(task, chunks.data());
      for (ChannelSums &sums : thread_sums) sums.Flush();
    }
    for (size_t k = 0; k < outs.size(); ++k) thread_sums[k].MergeInto(&totals[k]);
  }
  for (size_t k = 0; k < outs.size(); ++k) totals[k].Write(outs[k]);
}

inline bool HasAvx512Vbmi() {
#ifdef MINDCV_X86
  __builtin_cpu_init();
  return DetectIsa() == Isa::kAvx512 && __builtin_cpu_supports("avx512vbmi");
#else
  return false;
#endif
}

}  // namespace mindcv_ops
