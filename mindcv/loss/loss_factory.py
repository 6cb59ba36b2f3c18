"""`create_loss`: a loss by MindCV's name with MindCV's arguments."""
import logging

from .asymmetric import AsymmetricLossMultiLabel, AsymmetricLossSingleLabel
from .cross_entropy import BinaryCrossEntropySmooth, CrossEntropySmooth
from .jsd import JSDCrossEntropy

_SMOOTHED_LOSSES = {"ce": CrossEntropySmooth, "bce": BinaryCrossEntropySmooth,
                    "asl_single_label": AsymmetricLossSingleLabel, "jsd": JSDCrossEntropy}
LOSSES = tuple(_SMOOTHED_LOSSES) + ("asl_multi_label",)
_logger = logging.getLogger(__name__)


def create_loss(name: str = "CE", weight=None, reduction: str = "mean", label_smoothing: float = 0.0,
                aux_factor: float = 0.0):
    """Build a classification loss by name (case-insensitive), with MindCV's argument names, order and defaults.

    Args:
        name: "ce" (softmax cross entropy), "bce" (per-class sigmoid binary cross entropy), "asl_single_label" /
            "asl_multi_label" (asymmetric loss, timm's gammas and clip), "jsd" (AugMix cross entropy + Jensen-Shannon
            consistency, 3 splits, alpha 12). Default "CE".
        weight: per-class weight [num_classes] (Tensor, array or list), as PyTorch's CrossEntropyLoss weight.
            Default None.
        reduction: "mean", "sum" or "none" (per sample). Default "mean".
        label_smoothing: smoothing s in [0, 1), applied to integer labels and to dense (one-hot or mixup/cutmix)
            targets alike: target * (1 - s) + s / C. The data pipeline must then not smooth the targets too.
            "asl_multi_label" (multi-hot targets) ignores it, with a warning, as MindCV's does. Default 0.0.
        aux_factor: weight of auxiliary logits when the network returns (logits, aux_logits, ...). Default 0.0.

    Returns: an nn.Cell called as loss(logits, labels) -> float32 loss, labels int [B] or dense targets [B, C].
    """
    key = name.lower()
    common = dict(aux_factor=aux_factor, reduction=reduction, weight=weight)
    if key == "asl_multi_label":
        if label_smoothing:
            _logger.warning("asl_multi_label ignores label_smoothing %s (as MindCV's: its targets are multi-hot)",
                            label_smoothing)
        return AsymmetricLossMultiLabel(**common)
    if key not in _SMOOTHED_LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")
    return _SMOOTHED_LOSSES[key](smoothing=label_smoothing, **common)
