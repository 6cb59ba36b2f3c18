"""The tail of a ConvNeXt block, `shortcut + scale[n] * transpose(gamma * (x + bias))` with x channels-last (or
without the transpose, for a channels-last block),
as one C++ kernel forward and one backward on MindSpore's CPU back end (float32), run through
`ops.Custom(func_type="aot")` with a custom bprop; see residual_cpu.cc."""
from typing import Optional

from mindspore import ops

from ._build import op_from_library
from .switch import fast_cpu_ops_enabled

SOURCE = "residual_cpu.cc"


def _make_op(library: str, layout: str) -> ops.Custom:
    backward = ops.Custom(f"{library}:Residual{layout}Backward",
                          out_shape=lambda dout, x, bias, gamma, scale: (x, bias, gamma),
                          out_dtype=lambda dout, x, bias, gamma, scale: (x, x, x), func_type="aot")

    def bprop(x, bias, gamma, shortcut, scale, out, dout):
        dx, dbias, dgamma = backward(dout, x, bias, gamma, scale)
        return dx, dbias, dgamma, dout, ops.zeros_like(scale)

    return ops.Custom(f"{library}:Residual{layout}Forward",
                      out_shape=lambda x, bias, gamma, shortcut, scale: shortcut,
                      out_dtype=lambda x, bias, gamma, shortcut, scale: shortcut, func_type="aot", bprop=bprop)


@op_from_library(SOURCE)
def _residual_op(library: str) -> ops.Custom:
    return _make_op(library, "")


@op_from_library(SOURCE)
def _residual_nhwc_op(library: str) -> ops.Custom:
    return _make_op(library, "Nhwc")


def residual_op(channels_last: bool = False) -> Optional[ops.Custom]:
    """The fast operator `op(x [N, H, W, C], bias [C], gamma [C], shortcut [N, C, H, W], scale [N]) -> [N, C, H, W]`
    (float32), or with `channels_last` shortcut and result [N, H, W, C] like x; built once per process; None on
    back ends other than CPU, with the fast kernels switched off, or when the kernel cannot be compiled (a warning
    says why)."""
    if not fast_cpu_ops_enabled():
        return None
    return _residual_nhwc_op() if channels_last else _residual_op()
