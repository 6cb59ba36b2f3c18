"""Fast CPU kernels for operators whose stock MindSpore CPU implementation is slow, compiled from the C++
sources in this package at first use (cached under ~/.cache/mindcv/ops, or $MINDCV_OPS_CACHE)."""
from .depthwise_conv import depthwise_conv_op, fast_depthwise_available
from .gelu import gelu_op
from .layer_norm import layer_norm_op
from .switch import fast_cpu_ops, fast_cpu_ops_enabled

__all__ = ["depthwise_conv_op", "fast_cpu_ops_enabled", "fast_depthwise_available", "fast_cpu_ops", "gelu_op", "layer_norm_op"]
