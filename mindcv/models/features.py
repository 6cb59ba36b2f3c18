"""MindCV's `FeatureExtractWrapper`: the feature maps of a network that declares `feature_info`."""
from typing import List, Optional, Sequence, Tuple

from mindspore import Tensor, nn, ops


def _cells_in_order(net: nn.Cell, flatten_sequential: bool) -> List[Tuple[str, nn.Cell]]:
    """(name, cell) of the network's direct cells in registration order; with `flatten_sequential`, a
    SequentialCell among them gives its own cells instead, named "<parent>.<child>"."""
    cells = []
    for name, cell in net.name_cells().items():
        if flatten_sequential and isinstance(cell, nn.SequentialCell):
            cells.extend((f"{name}.{child}", inner) for child, inner in cell.name_cells().items())
        else:
            cells.append((name, cell))
    return cells


class FeatureExtractWrapper(nn.Cell):
    """The feature maps `out_indices` of `net` (indices into `net.feature_info`), as a tuple, by MindCV's rules.

    `net.feature_info` lists one dict per feature map: "chs" (channels), "reduction" (stride) and "name", the
    name of the cell that outputs it. The wrapper runs the network's direct cells in the order they were
    registered (assigned in `__init__`), feeding each the previous one's output, and stops after the last
    selected cell; so a network qualifies when its construct is exactly that chain (each cell used once, in
    registration order), as MindCV requires. With `net.flatten_sequential` True, the cells inside a direct
    SequentialCell count one by one, named "<parent>.<index>" (e.g. "feature.3"); when the network does not say,
    it is True exactly when a feature_info name has that form. A network with `is_rewritten` True returns all its
    feature maps itself: the wrapper picks `out_indices` from its outputs. A network with `channels_last` True
    (mindcv's ConvNeXt on the CPU kernels) has its maps returned NCHW.

    The wrapper runs the network's own cells, so it shares their parameters, names unchanged: weights load before
    or after wrapping. `create_model(name, features_only=True, out_indices=...)` builds the same ConvNeXt
    backbone without a head.

    Args:
        net: a network with `feature_info`.
        out_indices: the feature maps to return, increasing indices into feature_info. Default None: all.

    Raises ValueError for a network without feature_info, an index outside it, or a name that is no cell.
    """

    def __init__(self, net: nn.Cell, out_indices: Optional[Sequence[int]] = None):
        super().__init__(auto_prefix=False)
        info = getattr(net, "feature_info", None)
        if not info or not all(isinstance(entry, dict) and {"chs", "name"} <= set(entry) for entry in info):
            raise ValueError(f"{type(net).__name__} has no feature_info (a list of dicts with chs, reduction and "
                             "name) to extract features by")
        out_indices = tuple(range(len(info))) if out_indices is None else tuple(int(i) for i in out_indices)
        if not out_indices or list(out_indices) != sorted(set(out_indices)) or \
                not all(0 <= i < len(info) for i in out_indices):
            raise ValueError(f"out_indices must be increasing stage indices in 0..{len(info) - 1} (feature_info "
                             f"entries), got {out_indices}")
        self.out_indices = out_indices
        self._out_channels = [info[i]["chs"] for i in out_indices]
        self.channels_last = bool(getattr(net, "channels_last", False))
        self.is_rewritten = bool(getattr(net, "is_rewritten", False))
        if self.is_rewritten:
            self.net = net
            return
        wanted = [info[i]["name"] for i in out_indices]
        flatten = getattr(net, "flatten_sequential", None)
        if flatten is None:
            direct = net.name_cells()
            flatten = any("." in name and isinstance(direct.get(name.split(".")[0]), nn.SequentialCell)
                          for name in wanted)
        cells = _cells_in_order(net, bool(flatten))
        names = [name for name, _ in cells]
        missing = [name for name in wanted if name not in names]
        if missing:
            hint = "" if flatten else "; set flatten_sequential = True to name cells inside a SequentialCell"
            raise ValueError(f"feature_info names {missing} of {type(net).__name__} are none of its cells "
                             f"({', '.join(names)}){hint}")
        last = max(names.index(name) for name in wanted)
        self.chain = nn.CellList([cell for _, cell in cells[:last + 1]], auto_prefix=False)
        self.positions = tuple(names.index(name) for name in wanted)

    @property
    def out_channels(self):
        """Channels of each returned feature map."""
        return self._out_channels

    def _nchw(self, x: Tensor) -> Tensor:
        return ops.transpose(x, (0, 3, 1, 2)) if self.channels_last else x

    def construct(self, x: Tensor) -> Tuple[Tensor, ...]:
        outputs = ()
        if self.is_rewritten:
            maps = self.net(x)
            for index in self.out_indices:
                outputs += (maps[index],)
            return outputs
        for position, cell in enumerate(self.chain):
            x = cell(x)
            if position in self.positions:
                outputs += (self._nchw(x),)
        return outputs
