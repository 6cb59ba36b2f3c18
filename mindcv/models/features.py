"""MindCV's `FeatureExtractWrapper`: the feature maps of a classification network's stages."""
from typing import Sequence, Tuple

from mindspore import Tensor, nn, ops


class FeatureExtractWrapper(nn.Cell):
    """The outputs of the stages `out_indices` of `net` (indices into `net.feature_info`; ConvNeXt: strides 4, 8,
    16, 32), NCHW, as a tuple; the head is not run.

    The wrapper runs the network's own cells, so it shares their parameters (names unchanged: weights load
    before or after wrapping) and stops after the last selected stage. `create_model(name,
    features_only=True, out_indices=...)` builds the same backbone without a head.

    Args:
        net: a network with `feature` (a SequentialCell of stem, stages and downsampling layers) and
            `feature_info` (one dict per stage: "chs" channels, "reduction" stride, "name" "feature.<position>").
        out_indices: the stages to return, in increasing order. Default (0, 1, 2, 3).

    Raises ValueError for a network without these attributes or an index outside its stages.
    """

    def __init__(self, net: nn.Cell, out_indices: Sequence[int] = (0, 1, 2, 3)):
        super().__init__(auto_prefix=False)
        info = getattr(net, "feature_info", None)
        if info is None or not isinstance(getattr(net, "feature", None), nn.SequentialCell):
            raise ValueError(f"{type(net).__name__} has no feature_info and feature cells to extract features from")
        out_indices = tuple(out_indices)
        if not out_indices or list(out_indices) != sorted(set(out_indices)) or \
                not all(0 <= i < len(info) for i in out_indices):
            raise ValueError(f"out_indices must be increasing stage indices in 0..{len(info) - 1}, got {out_indices}")
        self.feature = net.feature
        self.positions = tuple(int(info[i]["name"].split(".")[-1]) for i in out_indices)
        self.channels_last = getattr(net, "channels_last", False)  # the CPU kernels' layout inside ConvNeXt
        self._out_channels = [info[i]["chs"] for i in out_indices]

    @property
    def out_channels(self):
        """Channels of each returned feature map."""
        return self._out_channels

    def construct(self, x: Tensor) -> Tuple[Tensor, ...]:
        outputs = ()
        for position, layer in enumerate(self.feature):
            if position <= self.positions[-1]:
                x = layer(x)
                if position in self.positions:
                    outputs += (ops.transpose(x, (0, 3, 1, 2)) if self.channels_last else x,)
        return outputs
