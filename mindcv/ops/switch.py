"""One switch for every fast CPU kernel of mindcv.ops.

The kernels serve MindSpore's CPU back end only, and are on by default there. Turn them off for a whole
process with the environment variable MINDCV_FAST_CPU_OPS=0, or for the models built inside
`with fast_cpu_ops(False):` — for exporting a graph that MindSpore Lite, serving or ONNX must run (a kernel
is an `ops.Custom` pointing at a library built on this machine), or to compare against the stock operators.
"""
import contextlib
import os

import mindspore as ms

_enabled = os.environ.get("MINDCV_FAST_CPU_OPS", "1") != "0"


@contextlib.contextmanager
def fast_cpu_ops(enabled: bool):
    """Models built inside the block use (True) or do not use (False) the fast kernels."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def fast_cpu_ops_enabled() -> bool:
    """True when models built now use the fast kernels: switched on and running on the CPU back end."""
    return _enabled and ms.get_context("device_target") == "CPU"
