"""Building the C++ kernels of mindcv.ops and mindcv.data: a checked, sealed cache of compiled libraries."""
