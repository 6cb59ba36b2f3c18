"""LayerNorm over the last axis (float32) on MindSpore's CPU back end: one C++ kernel for the forward pass and one
for the input and parameter gradients, run through `ops.Custom(func_type="aot")` with a custom bprop. The same
operator as `nn.LayerNorm((C,), epsilon=eps)` up to float rounding order."""
import os
from typing import Optional

from mindspore import ops

from ..native.build import op_from_library
from .switch import fast_cpu_ops_enabled

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "layer_norm_cpu.cc")


def _make_op(library: str, layout: str) -> ops.Custom:
    backward = ops.Custom(f"{library}:LayerNorm{layout}Backward",
                          out_shape=lambda dy, x, gamma, mean, rstd: (x, gamma, gamma),
                          out_dtype=lambda dy, x, gamma, mean, rstd: (x, x, x), func_type="aot")

    def bprop(x, gamma, beta, eps, out, dout):
        _, mean, rstd = out
        dx, dgamma, dbeta = backward(dout[0], x, gamma, mean, rstd)
        return dx, dgamma, dbeta, ops.zeros_like(eps)

    def out_shape(x, gamma, beta, eps):
        if layout == "Nchw":  # [N, C, H, W] in, [N, H, W, C] out
            return [x[0], x[2], x[3], x[1]], [x[0], x[2], x[3]], [x[0], x[2], x[3]]
        return x, x[:-1], x[:-1]

    return ops.Custom(f"{library}:LayerNorm{layout}Forward", out_shape=out_shape,
                      out_dtype=lambda x, gamma, beta, eps: (x, x, x), func_type="aot", bprop=bprop)


@op_from_library(SOURCE)
def _layer_norm_op(library: str) -> ops.Custom:
    return _make_op(library, "")


@op_from_library(SOURCE)
def _layer_norm_nchw_op(library: str) -> ops.Custom:
    return _make_op(library, "Nchw")


def layer_norm_op(nchw_input: bool = False) -> Optional[ops.Custom]:
    """The fast operator `op(x, gamma [C], beta [C], eps [1]) -> (y, mean, rstd)` (float32): x [..., C] and y
    shaped like it, or with `nchw_input` x [N, C, H, W] and y channels-last [N, H, W, C] (a fused transpose);
    built once per process; None on back ends other than CPU, with the fast kernels switched off, or when the
    kernel cannot be compiled (a warning says why)."""
    if not fast_cpu_ops_enabled():
        return None
    return _layer_norm_nchw_op() if nchw_input else _layer_norm_op()
