"""Which parameters get weight decay, and layer-wise learning-rate scales for fine-tuning."""
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
BLOCKS_PER_GROUP_IN_STAGE_2 = 3
LAST_STAGE_ID = 12  # the official code's fixed id of stage 3


def convnext_layer_ids(names: Sequence[str]) -> Tuple[Dict[str, int], int]:
    """Stage-wise layer id of every ConvNeXt parameter, for layer-wise lr decay; returns (ids by name, head id).

    The official ConvNeXt fine-tuning scheme, whatever the depths, so that a recipe's layer_decay means what it
    means in the official code: stem -> 0; stage 0 -> 1; stage 1 (with its downsampling layer) -> 2; stage 2's
    downsampling layer -> 3 and its block b -> 3 + b // 3 (blocks grouped by three); stage 3 (with its
    downsampling layer) -> 12; head (final norm and classifier) -> 13. With 9 blocks in stage 2 (tiny) its ids
    stop at 5 and stage 3 still gets 12, as in the official code.

    Raises ValueError for a name outside that layout (another architecture).
    """
    head_id = LAST_STAGE_ID + 1
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
            ids[name] = LAST_STAGE_ID
    return ids, head_id


def layer_decay_scales(params: Sequence[Parameter], layer_decay: float) -> List[float]:
    """Learning-rate multiplier of each ConvNeXt parameter: layer_decay ** (head_id - layer_id),
    so the head gets 1.0, the last stage layer_decay, ... and the stem layer_decay ** head_id."""
    ids, head_id = convnext_layer_ids([p.name for p in params])
    return [layer_decay ** (head_id - ids[p.name]) for p in params]
