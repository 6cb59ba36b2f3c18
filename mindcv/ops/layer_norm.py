"""LayerNorm over the last axis (float32) on MindSpore's CPU back end: one C++ kernel for the forward pass and one
for the input and parameter gradients, run through `ops.Custom(func_type="aot")` with a custom bprop. The same
operator as `nn.LayerNorm((C,), epsilon=eps)` up to float rounding order."""
from typing import Optional

from mindspore import ops

from ._build import op_from_library
from .switch import fast_cpu_ops_enabled

SOURCE = "layer_norm_cpu.cc"


@op_from_library(SOURCE)
def _layer_norm_op(library: str) -> ops.Custom:
    backward = ops.Custom(f"{library}:LayerNormBackward",
                          out_shape=lambda dy, x, gamma, mean, rstd: (x, gamma, gamma),
                          out_dtype=lambda dy, x, gamma, mean, rstd: (x, x, x), func_type="aot")

    def bprop(x, gamma, beta, eps, out, dout):
        _, mean, rstd = out
        dx, dgamma, dbeta = backward(dout[0], x, gamma, mean, rstd)
        return dx, dgamma, dbeta, ops.zeros_like(eps)

    return ops.Custom(f"{library}:LayerNormForward",
                      out_shape=lambda x, gamma, beta, eps: (x, x[:-1], x[:-1]),
                      out_dtype=lambda x, gamma, beta, eps: (x, x, x), func_type="aot", bprop=bprop)


def layer_norm_op() -> Optional[ops.Custom]:
    """The fast operator `op(x [..., C], gamma [C], beta [C], eps [1]) -> (y, mean [...], rstd [...])` (float32),
    built once per process; None on back ends other than CPU, with the fast kernels switched off, or when the
    kernel cannot be compiled (a warning says why)."""
    return _layer_norm_op() if fast_cpu_ops_enabled() else None
