"""Fast depthwise KxK convolution (K in 3, 5, 7; stride 1; padding K // 2; float32; NCHW or channels-last NHWC)
on MindSpore's CPU back end: C++ kernels for the forward pass, the input gradient and the weight and bias gradients, run
through `ops.Custom(func_type="aot")` with a custom bprop. Numerically the same operator as
`nn.Conv2d(C, C, K, pad_mode="pad", padding=K // 2, group=C, has_bias=True)` (up to float rounding order)."""
import os
from mindspore import ops

from ..native.build import op_from_library, same_as_first
from .layer_norm import layer_norm_op
from .switch import fast_cpu_ops_enabled

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "depthwise_conv_cpu.cc")
SUPPORTED_KERNEL_SIZES = (3, 5, 7)


def _make_op(library: str, layout: str) -> ops.Custom:
    input_grad = ops.Custom(f"{library}:DepthwiseConv{layout}InputGrad", out_shape=same_as_first,
                            out_dtype=same_as_first, func_type="aot")
    weight_grad = ops.Custom(f"{library}:DepthwiseConv{layout}WeightGrad",
                             out_shape=lambda dy, x, w: (w, (w[0],)), out_dtype=lambda dy, x, w: (w, w),
                             func_type="aot")

    def bprop(x, weight, bias, out, dout):
        dweight, dbias = weight_grad(dout, x, weight)
        return input_grad(dout, weight), dweight, dbias

    return ops.Custom(f"{library}:DepthwiseConv{layout}Forward", out_shape=same_as_first, out_dtype=same_as_first,
                      func_type="aot", bprop=bprop)


@op_from_library(SOURCE)
def depthwise_conv_op(library: str) -> ops.Custom:
    """The fast operator `op(x [N, C, H, W], weight [C, 1, K, K], bias [C]) -> [N, C, H, W]`, built once per
    process; None when the kernels cannot be compiled (a warning says why)."""
    return _make_op(library, "")


@op_from_library(SOURCE)
def depthwise_conv_nhwc_op(library: str) -> ops.Custom:
    """As `depthwise_conv_op`, channels-last: `op(x [N, H, W, C], weight [C, 1, K, K], bias [C]) -> [N, H, W, C]`."""
    return _make_op(library, "Nhwc")


@op_from_library(SOURCE)
def depthwise_conv_norm_op(library: str) -> ops.Custom:
    """Eval mode, channels-last: `op(x [N, H, W, C], weight [C, 1, K, K], bias [C], gamma [C], beta [C], eps [1])
    -> LayerNorm(dwconv(x))` over C, [N, H, W, C] (a ConvNeXt block's conv and norm in one pass). It keeps no
    statistics: a gradient (rare in eval mode) runs the two separate operators again, then their gradients. None
    where the LayerNorm kernel is not built."""
    conv, norm = depthwise_conv_nhwc_op(), layer_norm_op(False)
    if norm is None:  # (the norm kernel did not build: warned) its gradient is needed
        return None
    conv_bprop, norm_bprop = conv.bprop, norm.bprop

    def bprop(x, weight, bias, gamma, beta, eps, out, dout):
        conv_out = conv(x, weight, bias)
        norm_out = norm(conv_out, gamma, beta, eps)
        dconv, dgamma, dbeta, deps = norm_bprop(conv_out, gamma, beta, eps, norm_out,
                                                (dout, ops.zeros_like(norm_out[1]), ops.zeros_like(norm_out[2])))
        dx, dweight, dbias = conv_bprop(x, weight, bias, conv_out, dconv)
        return dx, dweight, dbias, dgamma, dbeta, deps

    return ops.Custom(f"{library}:DepthwiseConvNhwcNormForward", out_shape=same_as_first, out_dtype=same_as_first,
                      func_type="aot", bprop=bprop)


def fast_depthwise_available(kernel_size: int) -> bool:
    """Whether the fast operator serves a stride-1, padding `kernel_size // 2` depthwise convolution here:
    CPU back end with the fast kernels switched on, a supported kernel size and a compilable kernel (the caller
    checks for float32)."""
    if not fast_cpu_ops_enabled() or kernel_size not in SUPPORTED_KERNEL_SIZES:
        return False
    return depthwise_conv_op() is not None
