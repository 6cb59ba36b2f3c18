"""Building blocks shared by the model families."""
from typing import Optional

import mindspore as ms
from mindspore import Parameter, Tensor, mint, nn, ops
from mindspore.common.initializer import initializer

from ..ops.depthwise_conv import depthwise_conv_nhwc_op, depthwise_conv_op, fast_depthwise_available
from ..ops.gelu import bias_gelu_op, gelu_op
from ..ops.layer_norm import layer_norm_op
from ..ops.mlp import mlp_ops
from ..ops.residual import residual_op
from ..ops.switch import fast_cpu_ops_enabled


# The counter-based draw: 31-bit integers in int64 (products stay below 2^62, so no operator overflows on any back
# end), mixed by two multiply-xorshift rounds; the constants are odd and below 2^30.
_HASH_MASK = 2 ** 31
_HASH_MULTIPLIERS = (0x2C1B3C6D, 0x297A2D39)
_STEP_STRIDE, _SAMPLE_STRIDE = 0x3C6EF372, 0x1B873593


def _mix(h: Tensor) -> Tensor:
    for multiplier in _HASH_MULTIPLIERS:
        h = (ops.bitwise_xor(h, h // 2 ** 15) * multiplier) % _HASH_MASK
    return ops.bitwise_xor(h, h // 2 ** 16)


def counter_uniform(key: int, step: Tensor, count: int) -> Tensor:
    """`count` float32 numbers in [0, 1), a pure function of (`key`, `step`, position): the same arguments give the
    same numbers on every back end, whatever ran before (no generator state)."""
    h = _mix((key + step.astype(ms.int64) * _STEP_STRIDE) % _HASH_MASK)
    h = _mix((h + ops.arange(count, dtype=ms.int64) * _SAMPLE_STRIDE) % _HASH_MASK)
    return (h // 2 ** 7).astype(ms.float32) / 2 ** 24


class DropPath(nn.Cell):
    """Stochastic depth: in training, zero the whole residual branch of a sample with probability
    `drop_prob` and scale survivors by 1 / (1 - drop_prob) so the expectation is unchanged.
    Identity in eval mode.

    The masks come from MindSpore's random generator (`ops.rand`), or, once `bind_drop_path` gave the layer a step
    counter, from `counter_uniform`: a function of (seed, rank, step, layer, sample), so each rank draws its own
    masks on every back end and a resumed run draws the masks the uninterrupted one drew."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.keep_prob = 1.0 - drop_prob
        self.key = 0
        object.__setattr__(self, "step", None)  # the train step's counter: read here, owned (and saved) there

    def construct(self, x: Tensor) -> Tensor:
        if not self.training or self.keep_prob == 1.0:
            return x
        return x * self.sample_scale(x).reshape((x.shape[0],) + (1,) * (x.ndim - 1))

    def sample_scale(self, x: Tensor) -> Tensor:
        """The factor of each sample of the batch `x` [N, ...]: 0 (dropped) or 1 / keep_prob; 1 in eval mode."""
        if not self.training or self.keep_prob == 1.0:
            return ops.ones((x.shape[0],), x.dtype)
        if self.step is None:
            uniform = ops.rand((x.shape[0],), dtype=x.dtype)
        else:
            uniform = counter_uniform(self.key, self.step, x.shape[0]).astype(x.dtype)
        return ops.floor(uniform + self.keep_prob) / self.keep_prob


def bind_drop_path(network: nn.Cell, step: Parameter, seed: int, rank: int = 0) -> int:
    """Make every DropPath of `network` draw its masks from (seed, rank, `step`, its position in the network,
    sample) instead of MindSpore's generator. `step` is an int32 Parameter that advances once per training call and
    is saved with the run (the train step's `current_iterator_step`); the layers read it without holding it, so
    the network's parameters and their names do not change. Returns the number of DropPath layers bound."""
    layers = [cell for _, cell in network.cells_and_names() if isinstance(cell, DropPath)]
    for index, layer in enumerate(layers):
        layer.key = (seed * 0x9E3779B1 + rank * 0x85EBCA77 + index * 0xC2B2AE3D) % _HASH_MASK
        object.__setattr__(layer, "step", step)
    return len(layers)


class LayerScaleResidual(nn.Cell):
    """The tail of a ConvNeXt block: `shortcut + drop_path(to_nchw(gamma * (x + bias)))`, with `x` the
    channels-last output of the second pointwise layer before its bias and `gamma` the layer scale (None:
    none); with `channels_last` the shortcut and the result are channels-last too (no transpose), and on the CPU
    back end in float32 one fused kernel (mindcv.ops.residual) replaces the bias add, layer scale, drop path and
    residual add, three or four passes over memory."""

    def __init__(self, drop_path_rate: float = 0.0, channels_last: bool = False):
        super().__init__()
        self.drop_path = DropPath(drop_path_rate)
        self.channels_last = channels_last
        self.fast_op = residual_op() if channels_last else None
        self.uses_fast_kernel = self.fast_op is not None

    def construct(self, shortcut: Tensor, x: Tensor, bias: Tensor, gamma: Optional[Tensor]) -> Tensor:
        if self.uses_fast_kernel and gamma is not None and x.dtype == ms.float32 and shortcut.dtype == ms.float32 \
                and bias.dtype == ms.float32 and gamma.dtype == ms.float32:
            return self.fast_op(x, bias, gamma, shortcut, self.drop_path.sample_scale(x))
        x = x + bias
        if gamma is not None:
            x = gamma * x
        return shortcut + self.drop_path(x if self.channels_last else ops.transpose(x, (0, 3, 1, 2)))


class LayerNorm(nn.LayerNorm):
    """`nn.LayerNorm((num_channels,), epsilon=epsilon)` over the channels, same parameters (`gamma`, `beta`) and
    results, that runs mindcv.ops' fused C++ kernels on the CPU back end for float32 (MindSpore's CPU
    LayerNormGrad is ~10x slower) and the stock operator everywhere else. Input channels-last [..., C], or with
    `nchw_input` an NCHW tensor, normalized over C and returned channels-last [N, H, W, C] (on the fast path
    the transpose costs no pass of its own)."""

    def __init__(self, num_channels: int, epsilon: float = 1e-6, nchw_input: bool = False):
        super().__init__((num_channels,), epsilon=epsilon)
        self.nchw_input = nchw_input
        self.fast_op = layer_norm_op(nchw_input)
        self.uses_fast_kernel = self.fast_op is not None
        self.epsilon_tensor = Tensor([epsilon], ms.float32)

    def construct(self, x: Tensor) -> Tensor:
        return self.channels_last_norm(x)

    def channels_last_norm(self, x: Tensor) -> Tensor:
        # (not construct through super(): graph mode resolves super() from the instance's class, which recurses
        # for a subclass)
        if self.uses_fast_kernel and x.dtype == ms.float32 and self.gamma.dtype == ms.float32:
            return self.fast_op(x, self.gamma, self.beta, self.epsilon_tensor)[0]
        if self.nchw_input:
            x = ops.transpose(x, (0, 2, 3, 1))
        return self.layer_norm(x, self.gamma.astype(x.dtype), self.beta.astype(x.dtype))[0]


class LayerNorm2d(LayerNorm):
    """LayerNorm over the channel axis of an NCHW tensor, NCHW out (stem and downsampling layers).
    Parameters keep nn.LayerNorm's names (`gamma`, `beta`) so checkpoints match MindCV's. With
    `channels_last_input` / `channels_last_output` the input / output is [N, H, W, C] instead, which spares a
    transpose next to a `PatchifyConv2d` with the matching option (the CPU back end's layout)."""

    def __init__(self, num_channels: int, epsilon: float = 1e-6, channels_last_input: bool = False,
                 channels_last_output: bool = False):
        super().__init__(num_channels, epsilon, nchw_input=not channels_last_input)
        self.channels_last_output = channels_last_output

    def construct(self, x: Tensor) -> Tensor:
        x = self.channels_last_norm(x)
        return x if self.channels_last_output else ops.transpose(x, (0, 3, 1, 2))


class GRN(nn.Cell):
    """Global Response Normalization (ConvNeXt V2) on channels-last input [N, H, W, C]:
    each channel's spatial L2 norm, divided by the mean norm over channels, re-weights the features.
    `gamma` and `beta` start at zero so the layer starts as the identity."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.gamma = Parameter(initializer("zeros", (1, 1, 1, dim)), name="gamma")
        self.beta = Parameter(initializer("zeros", (1, 1, 1, dim)), name="beta")
        self.eps = eps

    def construct(self, x: Tensor) -> Tensor:
        spatial_norm = ops.sqrt(ops.sum(x * x, dim=(1, 2), keepdim=True))
        relative = spatial_norm / (ops.mean(spatial_norm, axis=-1, keep_dims=True) + self.eps)
        return self.gamma * (x * relative) + self.beta + x


class DepthwiseConv2d(nn.Conv2d):
    """`nn.Conv2d(dim, dim, kernel_size, pad_mode="pad", padding=kernel_size // 2, group=dim, has_bias=True)`
    with the same parameters (`weight` [dim, 1, k, k], `bias` [dim]) and results, that runs mindcv.ops' fast
    C++ kernels on the CPU back end for float32 (MindSpore's CPU kernel is ~50x slower there) and the stock
    operator everywhere else. `uses_fast_kernel` says which one this layer chose when it was built. With
    `channels_last` the input and output are [N, H, W, C] (the weight keeps its shape)."""

    def __init__(self, dim: int, kernel_size: int = 7, channels_last: bool = False):
        super().__init__(dim, dim, kernel_size, pad_mode="pad", padding=kernel_size // 2, group=dim, has_bias=True)
        self.channels_last = channels_last
        self.uses_fast_kernel = fast_depthwise_available(kernel_size)
        self.fast_op = None
        if self.uses_fast_kernel:
            self.fast_op = depthwise_conv_nhwc_op() if channels_last else depthwise_conv_op()

    def construct(self, x: Tensor) -> Tensor:
        # dtypes are compile-time constants in graph mode, so this branch costs nothing at run time;
        # mixed precision (float16) takes the stock path.
        if self.uses_fast_kernel and x.dtype == ms.float32 and self.weight.dtype == ms.float32:
            return self.fast_op(x, self.weight, self.bias)
        if self.channels_last:
            x = ops.transpose(x, (0, 3, 1, 2))
        y = self.bias_add(self.conv2d(x, self.weight), self.bias)
        return ops.transpose(y, (0, 2, 3, 1)) if self.channels_last else y


class RowBiasAdd(nn.Cell):
    """`ops.bias_add` of a 2-D float32 [rows, channels] tensor whose bias gradient is a ReduceSum over the rows:
    MindSpore's CPU BiasAddGrad is about 5x slower (73 vs 15 ms for 50176 x 384). Float32 only: under mixed
    precision the parameter's gradient needs the cast that only the stock operator's gradient gets."""

    def construct(self, x: Tensor, bias: Tensor) -> Tensor:
        return ops.bias_add(x, bias)

    def bprop(self, x, bias, out, dout):
        return dout, dout.sum(0)


class Linear(nn.Dense):
    """`nn.Dense` (same parameters and results) whose bias gradient on the CPU back end, in float32, is a
    ReduceSum (`RowBiasAdd`) instead of MindSpore's slow BiasAddGrad kernel."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels)
        self.row_bias_add = RowBiasAdd() if fast_cpu_ops_enabled() else None

    def construct(self, x: Tensor) -> Tensor:
        y = self.matmul(x.reshape(-1, x.shape[-1]), self.weight)
        if self.row_bias_add is not None and y.dtype == ms.float32 and self.bias.dtype == ms.float32:
            y = self.row_bias_add(y, self.bias)
        else:
            y = self.bias_add(y, self.bias)
        return y.reshape(x.shape[:-1] + (y.shape[-1],))


class PatchifyConv2d(nn.Conv2d):
    """`nn.Conv2d(in_channels, out_channels, kernel_size, stride=kernel_size, has_bias=True)` (the ConvNeXt stem
    and downsampling layers), same parameters and results. The patches do not overlap, so on the CPU back end
    it runs as a reshape into patches and one MatMul: MindSpore's CPU Conv2D and its input gradient take
    seconds for these shapes (5-7 s each for the ConvNeXt-T downsampling layers at batch 16), the MatMul
    tens of milliseconds. Inputs whose sides are not multiples of `kernel_size` (where "same" padding
    would pad) and other back ends use the stock operator. With `channels_last_input` / `channels_last_output`
    the input / output is [N, H, W, C] instead of NCHW: the patches of a channels-last input are runs of C
    contiguous values, and the MatMul's output is channels-last already."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, channels_last_input: bool = False,
                 channels_last_output: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride=kernel_size, has_bias=True)
        self.channels_last_input = channels_last_input
        self.channels_last_output = channels_last_output
        self.uses_matmul = fast_cpu_ops_enabled()
        self.matmul = ops.MatMul(transpose_b=True)
        self.row_bias_add = RowBiasAdd() if self.uses_matmul else None

    def construct(self, x: Tensor) -> Tensor:
        if self.channels_last_input:
            n, h, w, c = x.shape
        else:
            n, c, h, w = x.shape
        k = self.kernel_size[0]
        if not self.uses_matmul or h % k != 0 or w % k != 0:
            if self.channels_last_input:
                x = ops.transpose(x, (0, 3, 1, 2))
            y = self.bias_add(self.conv2d(x, self.weight), self.bias)
            return ops.transpose(y, (0, 2, 3, 1)) if self.channels_last_output else y
        if self.channels_last_input:  # patch features ordered (ky, kx, c): the weight is permuted to match
            patches = x.reshape(n, h // k, k, w // k, k, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, k * k * c)
            weight = self.weight.transpose(0, 2, 3, 1).reshape(self.out_channels, -1)
        else:
            patches = x.reshape(n, c, h // k, k, w // k, k).transpose(0, 2, 4, 1, 3, 5).reshape(-1, c * k * k)
            weight = self.weight.reshape(self.out_channels, -1)
        y = self.matmul(patches, weight.astype(patches.dtype))  # (mixed precision casts no permuted parameter)
        y = self.row_bias_add(y, self.bias) if y.dtype == ms.float32 else self.bias_add(y, self.bias)
        y = y.reshape(n, h // k, w // k, self.out_channels)
        return y if self.channels_last_output else y.transpose(0, 3, 1, 2)


class GELU(nn.Cell):
    """Exact (erf) GELU, `x * (1 + erf(x / sqrt 2)) / 2`, as nn.GELU(approximate=False) and timm's GELU. Each back
    end gets its fastest form, chosen when the layer is built: on the CPU back end float32 runs through
    mindcv.ops' one-pass kernels (MindSpore's CPU GELU and its gradient are chains of elementwise kernels, several
    times slower); on Ascend, MindSpore's `mint.nn.functional.gelu`, one operator forward and one backward (its
    documentation lists Ascend only; `ops.gelu(approximate="none")` is six elementwise operators there, see
    mindspore/ops/function/nn_func.py); elsewhere, and for float16 on the CPU, `ops.gelu(approximate="none")`."""

    def __init__(self):
        super().__init__()
        self.fast_op = gelu_op()
        self.uses_fast_kernel = self.fast_op is not None
        self.uses_single_operator = ms.get_context("device_target") == "Ascend"

    def construct(self, x: Tensor) -> Tensor:
        if self.uses_fast_kernel and x.dtype == ms.float32:
            return self.fast_op(x)
        if self.uses_single_operator:
            return mint.nn.functional.gelu(x, approximate="none")
        return ops.gelu(x, approximate="none")


class ConvNeXtMlp(nn.Cell):
    """A ConvNeXt block's pointwise MLP over channels-last x [..., C]: `pwconv1 -> GELU [-> GRN] -> pwconv2`, less
    pwconv2's bias (the block's tail, `LayerScaleResidual`, adds it in the same pass as the layer scale and the
    residual). It picks its own path when built: on the CPU back end in float32 and without GRN one fused kernel
    (mindcv.ops.mlp: the 4C-wide hidden values stay in cache, and in eval mode are never written to memory); else
    two MatMuls around the GELU (on the CPU in float32 pwconv1's bias is added inside the GELU kernel); elsewhere
    and for float16 the stock operators.

    The layers are the block's: it owns them under MindCV's checkpoint names (`pwconv1.weight`, ...), registered
    before this layer so that those names are the ones a parameter gets; this layer only runs them."""

    def __init__(self, pwconv1: Linear, pwconv2: Linear, grn: Optional[GRN] = None):
        super().__init__()
        self.pwconv1, self.pwconv2, self.grn = pwconv1, pwconv2, grn
        self.act = GELU()
        kernels = mlp_ops() if grn is None else None
        self.train_op, self.infer_op = kernels if kernels is not None else (None, None)
        self.uses_fused_kernel = kernels is not None
        self.bias_gelu_op = bias_gelu_op()
        self.matmul = ops.MatMul(transpose_b=True)

    def update_parameters_name(self, prefix: str = "", recurse: bool = True) -> None:
        """Leaves the names as they are: they are the owning block's (MindSpore calls this when the block stores
        the layer, and would rename pwconv1.weight to mlp.pwconv1.weight)."""

    def construct(self, x: Tensor) -> Tensor:
        w1, b1, w2 = self.pwconv1.weight, self.pwconv1.bias, self.pwconv2.weight
        float32 = x.dtype == ms.float32 and w1.dtype == ms.float32
        if self.uses_fused_kernel and float32:
            return self.train_op(x, w1, b1, w2)[0] if self.training else self.infer_op(x, w1, b1, w2)
        x = self._project(x, w1)
        x = self.bias_gelu_op(x, b1) if self.bias_gelu_op is not None and float32 else self.act(x + b1)
        if self.grn is not None:
            x = self.grn(x)
        return self._project(x, w2)

    def _project(self, x: Tensor, weight: Tensor) -> Tensor:
        """x [..., in] @ weight.T, weight [out, in]: [..., out]."""
        y = self.matmul(x.reshape(-1, x.shape[-1]), weight)
        return y.reshape(x.shape[:-1] + (y.shape[-1],))
