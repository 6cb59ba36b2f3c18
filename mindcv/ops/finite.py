"""`all_finite(*tensors)`: whether every element of many float32 tensors is finite, as one C++ kernel on
MindSpore's CPU back end (the training step's gradient overflow check); see finite_cpu.cc."""
import os
from typing import Optional

from mindspore import ops

from ..native.build import op_from_library
from .switch import fast_cpu_ops_enabled

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "finite_cpu.cc")


@op_from_library(SOURCE)
def _all_finite_op(library: str) -> ops.Custom:
    return ops.Custom(f"{library}:AllFinite", out_shape=lambda *shapes: (1,), out_dtype=lambda *dtypes: dtypes[0],
                      func_type="aot")


def all_finite_op() -> Optional[ops.Custom]:
    """The fast operator `op(*tensors) -> float32 [1]`, 1.0 when every element of the (float32) tensors is finite,
    else 0.0; built once per process; None on back ends other than CPU, with the fast kernels switched off, or when
    the kernel cannot be compiled (a warning says why). Not differentiable."""
    return _all_finite_op() if fast_cpu_ops_enabled() else None
