"""The pointwise MLP of a ConvNeXt block, `gelu(x @ w1.T + b1) @ w2.T`, as one C++ kernel forward and one backward
on MindSpore's CPU back end (float32), run through `ops.Custom(func_type="aot")` with a custom bprop; see
mlp_cpu.cc. The matrix products are oneDNN's sgemm from the libdnnl that ships inside MindSpore's wheel."""
import glob
import os
from typing import Optional, Tuple

import mindspore as ms
from mindspore import ops

from ..native.build import op_from_library
from .residual import residual_op
from .switch import fast_cpu_ops_enabled

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mlp_cpu.cc")


def _dnnl_link_args() -> Optional[Tuple[str, ...]]:
    """Linker arguments for MindSpore's own libdnnl (found at run time through an rpath), or None if it has none."""
    lib_dir = os.path.join(os.path.dirname(os.path.abspath(ms.__file__)), "lib")
    found = sorted(glob.glob(os.path.join(lib_dir, "libdnnl.so*")))
    if not found:
        return None
    return (f"-L{lib_dir}", f"-l:{os.path.basename(found[0])}", f"-Wl,-rpath,{lib_dir}")


@op_from_library(SOURCE, link=_dnnl_link_args, fallback="separate MatMul and GELU kernels")
def _mlp_kernels(library: str):
    """(train, infer, infer_residual or None)."""
    backward = ops.Custom(f"{library}:MlpBackward",
                          out_shape=lambda dy, x, w1, b1, w2, pre, act: (x, w1, b1, w2),
                          out_dtype=lambda dy, x, w1, b1, w2, pre, act: (x, x, x, x), func_type="aot")

    def bprop(x, w1, b1, w2, out, dout):
        _, pre, act = out
        return backward(dout[0], x, w1, b1, w2, pre, act)

    def hidden_shape(x, w1):
        return list(x[:-1]) + [w1[0]]

    train = ops.Custom(f"{library}:MlpTrainForward",
                       out_shape=lambda x, w1, b1, w2: (x, hidden_shape(x, w1), hidden_shape(x, w1)),
                       out_dtype=lambda x, w1, b1, w2: (x, x, x), func_type="aot", bprop=bprop)

    def infer_bprop(x, w1, b1, w2, out, dout):  # a gradient in eval mode: recompute the hidden values
        _, pre, act = train(x, w1, b1, w2)
        return backward(dout, x, w1, b1, w2, pre, act)

    infer = ops.Custom(f"{library}:MlpForward", out_shape=lambda x, w1, b1, w2: x,
                       out_dtype=lambda x, w1, b1, w2: x, func_type="aot", bprop=infer_bprop)
    residual = residual_op()
    if residual is None:  # (its kernel did not build: warned) the eval-mode tail kernel needs its gradient
        return train, infer, None
    residual_bprop = residual.bprop

    def infer_residual_bprop(x, w1, b1, w2, b2, gamma, shortcut, out, dout):  # the training operators' gradients
        y, pre, act = train(x, w1, b1, w2)
        dy, db2, dgamma, dshortcut, _ = residual_bprop(y, b2, gamma, shortcut, ops.ones((x.shape[0],), x.dtype), out,
                                                       dout)
        dx, dw1, db1, dw2 = backward(dy, x, w1, b1, w2, pre, act)
        return dx, dw1, db1, dw2, db2, dgamma, dshortcut

    infer_residual = ops.Custom(f"{library}:MlpResidualForward", out_shape=lambda x, *rest: x,
                                out_dtype=lambda x, *rest: x, func_type="aot", bprop=infer_residual_bprop)
    return train, infer, infer_residual


def mlp_ops() -> Optional[Tuple[ops.Custom, ops.Custom]]:
    """The fast operators `(train, infer)` for x [..., C], w1 [4C, C], b1 [4C], w2 [C, 4C] (float32):
    `train(x, w1, b1, w2) -> (y, pre, act)`, differentiable, with y = gelu(x @ w1.T + b1) @ w2.T and the hidden
    values its gradient needs; `infer(x, w1, b1, w2) -> y`, which keeps no hidden values (its gradient computes
    them again). Built once per process; None on back ends other than CPU, with the fast kernels switched off, or
    where MindSpore ships no libdnnl or the kernel cannot be compiled (a warning says why)."""
    kernels = _mlp_kernels() if fast_cpu_ops_enabled() else None
    return kernels[:2] if kernels is not None else None


def mlp_residual_op() -> Optional[ops.Custom]:
    """Eval mode, the whole tail of a channels-last ConvNeXt block: `op(x [N, H, W, C], w1, b1, w2, b2 [C], gamma [C],
    shortcut [N, H, W, C]) -> shortcut + gamma * (gelu(x @ w1.T + b1) @ w2.T + b2)` (float32; its gradient, rare in
    eval mode, runs the training operators' forward and backward). None where `mlp_ops()` is, or where the
    residual kernel is not built."""
    kernels = _mlp_kernels() if fast_cpu_ops_enabled() else None
    return kernels[2] if kernels is not None else None
