"""Exact (erf) GELU, forward and gradient, as one C++ kernel each on MindSpore's CPU back end (float32),
run through `ops.Custom(func_type="aot")` with a custom bprop. Matches `ops.gelu(x, approximate="none")`
to float rounding (absolute error < 4e-7 against a float64 reference)."""
import os
from typing import Optional

from mindspore import ops

from ..native.build import op_from_library, same_as_first
from .switch import fast_cpu_ops_enabled

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gelu_cpu.cc")


@op_from_library(SOURCE)
def _gelu_op(library: str) -> ops.Custom:
    backward = ops.Custom(f"{library}:GeluBackward", out_shape=same_as_first, out_dtype=same_as_first,
                          func_type="aot")

    def bprop(x, out, dout):
        return (backward(dout, x),)

    return ops.Custom(f"{library}:GeluForward", out_shape=same_as_first, out_dtype=same_as_first, func_type="aot",
                      bprop=bprop)


@op_from_library(SOURCE)
def _bias_gelu_op(library: str) -> ops.Custom:
    backward = ops.Custom(f"{library}:BiasGeluBackward", out_shape=lambda dy, x, bias: (x, bias),
                          out_dtype=lambda dy, x, bias: (x, x), func_type="aot")

    def bprop(x, bias, out, dout):
        return backward(dout, x, bias)

    return ops.Custom(f"{library}:BiasGeluForward", out_shape=same_as_first, out_dtype=same_as_first,
                      func_type="aot", bprop=bprop)


def gelu_op() -> Optional[ops.Custom]:
    """The fast operator `op(x) -> gelu(x)` (any shape, float32), built once per process; None on back ends
    other than CPU, with the fast kernels switched off, or when the kernel cannot be compiled (a warning says
    why)."""
    return _gelu_op() if fast_cpu_ops_enabled() else None


def bias_gelu_op() -> Optional[ops.Custom]:
    """The fast operator `op(x [..., C], bias [C]) -> gelu(x + bias)` (float32), built once per process; None
    where `gelu_op()` is None."""
    return _bias_gelu_op() if fast_cpu_ops_enabled() else None
