"""Which parameters get weight decay, and layer-wise learning-rate scales for fine-tuning."""
import math
import re
from typing import Dict, List, Sequence, Tuple

from mindspore import Parameter

WEIGHT_DECAY_FILTERS = ("disable", "auto", "norm_and_bias")


def weight_decay_mask(params: Sequence[Parameter], weight_decay_filter: str = "disable") -> List[bool]:
    """True for each parameter that receives weight decay.

    Args:
        params: the parameters, in optimizer order.
        weight_decay_filter: MindCV's meaning of each value:
            "disable": decay every parameter (no filter);
            "auto": MindSpore's default filter, decay unless the name contains "beta" or "gamma"
                (spares LayerNorm/BatchNorm scale and shift and layer-scale `gamma_`, decays biases);
            "norm_and_bias": decay only parameters with two or more dimensions, sparing every 1-D parameter
                (norm scales/shifts, biases, layer-scale `gamma_`) and GRN `gamma`/`beta` of ConvNeXt V2,
                whose shape is (1, 1, 1, C); the ConvNeXt papers' choice.
    """
    if weight_decay_filter == "disable":
        return [True] * len(params)
    if weight_decay_filter == "auto":
        return ["beta" not in p.name and "gamma" not in p.name for p in params]
    if weight_decay_filter == "norm_and_bias":
        return [len(p.shape) > 1 and not _is_grn(p.name) for p in params]
    raise ValueError(f"weight_decay_filter must be one of {WEIGHT_DECAY_FILTERS}, got {weight_decay_filter!r}")


def _is_grn(name: str) -> bool:
    return re.search(r"(^|\.)grn\.(gamma|beta)$", name) is not None


# Our ConvNeXt names: feature.0 = stem, feature.{2s+1}.{b} = block b of stage s, feature.{2s} (s >= 1) =
# downsampling layer in front of stage s; norm.* and classifier.* form the head.
_FEATURE = re.compile(r"^feature\.(\d+)\.(\d+)\.")
BLOCKS_PER_GROUP_IN_STAGE_2 = 3


def convnext_layer_ids(names: Sequence[str]) -> Tuple[Dict[str, int], int]:
    """Stage-wise layer id of every ConvNeXt parameter, for layer-wise lr decay; returns (ids by name, head id).

    The assignment follows the official ConvNeXt fine-tuning scheme, generalised to any depth:
    stem -> 0; stage 0 -> 1; stage 1 (with its downsampling layer) -> 2; stage 2's downsampling layer -> 3 and its
    block b -> 3 + b // 3 (blocks grouped by three); stage 3 (with its downsampling layer) -> 3 + G, where G is the
    number of stage-2 groups; head (final norm and classifier) -> 4 + G. For depths (3, 3, 27, 3) this gives the
    official ids: stage 2 spans 3..11, stage 3 is 12, the head 13.

    Raises ValueError for a name outside that layout (another architecture).
    """
    stage2_blocks = {int(m[2]) for m in map(_FEATURE.match, names) if m and int(m[1]) == 5}
    groups = math.ceil((max(stage2_blocks) + 1) / BLOCKS_PER_GROUP_IN_STAGE_2) if stage2_blocks else 1
    head_id = 4 + groups
    ids = {}
    for name in names:
        index = name.split(".")
        if index[0] in ("norm", "classifier"):
            ids[name] = head_id
            continue
        if index[0] != "feature" or not index[1].isdigit() or int(index[1]) > 7:
            raise ValueError(f"layer_decay needs a ConvNeXt (feature.0..7, norm, classifier); "
                             f"cannot place parameter {name!r}")
        layer = int(index[1])
        stage = (layer - 1) // 2 if layer % 2 else layer // 2  # downsampling layer 2s sits in front of stage s
        if layer == 0:
            ids[name] = 0
        elif stage < 2:
            ids[name] = stage + 1
        elif stage == 2:
            ids[name] = 3 + (int(index[2]) // BLOCKS_PER_GROUP_IN_STAGE_2 if layer == 5 else 0)
        else:
            ids[name] = 3 + groups
    return ids, head_id


def layer_decay_scales(params: Sequence[Parameter], layer_decay: float) -> List[float]:
    """Learning-rate multiplier of each ConvNeXt parameter: layer_decay ** (head_id - layer_id),
    so the head gets 1.0, the last stage layer_decay, ... and the stem layer_decay ** head_id."""
    ids, head_id = convnext_layer_ids([p.name for p in params])
    return [layer_decay ** (head_id - ids[p.name]) for p in params]
