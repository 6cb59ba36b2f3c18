"""Losses: `create_loss` builds cross entropy (softmax or sigmoid) that takes integer labels or soft targets."""
from .cross_entropy import BinaryCrossEntropySmooth, CrossEntropySmooth

__all__ = ["BinaryCrossEntropySmooth", "CrossEntropySmooth", "create_loss"]

_LOSSES = {"ce": CrossEntropySmooth, "bce": BinaryCrossEntropySmooth}


def create_loss(name: str = "ce", label_smoothing: float = 0.0, reduction: str = "mean", aux_factor: float = 0.0):
    """Build a classification loss.

    Args:
        name: "ce" (softmax cross entropy) or "bce" (per-class sigmoid binary cross entropy). Default "ce".
        label_smoothing: smoothing ε applied to integer labels only; soft targets from mixup/cutmix carry
            their smoothing already. Default 0.0.
        reduction: "mean", "sum" or "none". Default "mean".
        aux_factor: weight of auxiliary logits when the network returns (logits, aux_logits, ...). Default 0.0.

    Returns: an nn.Cell called as loss(logits, labels) with labels int [B] or soft targets [B, C].
    """
    key = name.lower()
    if key not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(_LOSSES)}")
    return _LOSSES[key](label_smoothing=label_smoothing, reduction=reduction, aux_factor=aux_factor)
