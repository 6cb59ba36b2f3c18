"""Building blocks shared by the model families."""
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import initializer


class DropPath(nn.Cell):
    """Stochastic depth: in training, zero the whole residual branch of a sample with probability
    `drop_prob` and scale survivors by 1 / (1 - drop_prob) so the expectation is unchanged.
    Identity in eval mode."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.keep_prob = 1.0 - drop_prob

    def construct(self, x: Tensor) -> Tensor:
        if not self.training or self.keep_prob == 1.0:
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = ops.floor(ops.rand(shape, dtype=x.dtype) + self.keep_prob)
        return x / self.keep_prob * mask


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of an NCHW tensor (stem and downsampling layers).
    Parameters keep nn.LayerNorm's names (`gamma`, `beta`) so checkpoints match MindCV's."""

    def __init__(self, num_channels: int, epsilon: float = 1e-6):
        super().__init__((num_channels,), epsilon=epsilon)

    def construct(self, x: Tensor) -> Tensor:
        x = ops.transpose(x, (0, 2, 3, 1))
        x = super().construct(x)
        return ops.transpose(x, (0, 3, 1, 2))


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
