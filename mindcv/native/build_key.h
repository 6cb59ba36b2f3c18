// Force-included into every kernel library by mindcv/native/build.py (-include), which also defines
// MINDCV_OPS_BUILD_KEY: the first 64 bits of the hash that names the library (sources, flags, compiler, CPU
// architecture). Before a library is used, _build.py loads it and checks that this function returns the key
// of the name it was found under: a library that does not load, or that was built for other sources or
// another compiler, is rebuilt instead of run.
#pragma once

#ifndef MINDCV_OPS_BUILD_KEY
#define MINDCV_OPS_BUILD_KEY 0ULL
#endif

extern "C" __attribute__((visibility("default"), used)) unsigned long long mindcv_ops_build_key() {
  return MINDCV_OPS_BUILD_KEY;
}
