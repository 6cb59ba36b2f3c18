"""The tail of a channels-last ConvNeXt block, `shortcut + scale[n] * gamma * (x + bias)`, as one C++ kernel forward
and one backward on MindSpore's CPU back end (float32), run through `ops.Custom(func_type="aot")` with a custom
bprop; see residual_cpu.cc."""
import os
from typing import Optional

from mindspore import ops

from ..native.build import op_from_library
from .switch import fast_cpu_ops_enabled

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "residual_cpu.cc")


@op_from_library(SOURCE)
def _residual_op(library: str) -> ops.Custom:
    backward = ops.Custom(f"{library}:ResidualBackward",
                          out_shape=lambda dout, x, bias, gamma, scale: (x, bias, gamma),
                          out_dtype=lambda dout, x, bias, gamma, scale: (x, x, x), func_type="aot")

    def bprop(x, bias, gamma, shortcut, scale, out, dout):
        dx, dbias, dgamma = backward(dout, x, bias, gamma, scale)
        return dx, dbias, dgamma, dout, ops.zeros_like(scale)

    return ops.Custom(f"{library}:ResidualForward",
                      out_shape=lambda x, bias, gamma, shortcut, scale: shortcut,
                      out_dtype=lambda x, bias, gamma, shortcut, scale: shortcut, func_type="aot", bprop=bprop)


def residual_op() -> Optional[ops.Custom]:
    """The fast operator `op(x [N, H, W, C], bias [C], gamma [C], shortcut [N, H, W, C], scale [N]) -> [N, H, W, C]`
    (float32), built once per process; None on back ends other than CPU, with the fast kernels switched off, or
    when the kernel cannot be compiled (a warning says why)."""
    return _residual_op() if fast_cpu_ops_enabled() else None
