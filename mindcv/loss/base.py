"""What every loss here shares: argument checks, per-class weights, target handling, reductions, auxiliary logits."""
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore import dtype as mstype

REDUCTIONS = ("mean", "sum", "none")


def class_weight(weight) -> Tensor:
    """A per-class weight (Tensor, array or list of C numbers) as a float32 [C] Tensor; None stays None."""
    if weight is None:
        return None
    values = weight.asnumpy() if isinstance(weight, Tensor) else np.asarray(weight)
    if values.ndim != 1:
        raise ValueError(f"weight must be a 1-D per-class weight [num_classes], got shape {values.shape}")
    return Tensor(values.astype(np.float32))


def dense_targets(labels: Tensor, num_classes: int) -> Tensor:
    """Integer labels [B] as one-hot float32 [B, C]; dense targets [B, C] (one-hot, multi-hot or soft) as float32."""
    if labels.ndim == 1:
        return ops.one_hot(labels.astype(mstype.int32), num_classes, Tensor(1.0, mstype.float32),
                           Tensor(0.0, mstype.float32))
    return labels.astype(mstype.float32)


def smooth_targets(targets: Tensor, smoothing: float) -> Tensor:
    """PyTorch's label smoothing of probability targets: target * (1 - smoothing) + smoothing / C."""
    if smoothing > 0:
        return targets * (1.0 - smoothing) + smoothing / targets.shape[-1]
    return targets


def reduce_loss(per_sample: Tensor, reduction: str, total_weight: Tensor = None) -> Tensor:
    """"mean" (divided by `total_weight` when given, else by the batch size), "sum", or "none" (as is)."""
    if reduction == "mean":
        return per_sample.sum() / total_weight if total_weight is not None else per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


class ClassificationLoss(nn.Cell):
    """Base of the losses: checks the shared arguments and adds auxiliary logits.

    Called as loss(logits, labels) with logits [B, C] (any float dtype; every loss computes in float32) or a tuple
    (logits, aux_logits, ...) as networks with auxiliary heads return in training (Inception): the total is then
    loss(logits) + aux_factor * sum of loss(aux_logits), and auxiliary logits are ignored while aux_factor is 0.
    Subclasses implement `single(logits, labels)`.

    Args:
        smoothing: label smoothing in [0, 1). Default 0.0.
        aux_factor: weight of the auxiliary logits' losses (>= 0). Default 0.0.
        reduction: "mean", "sum" or "none". Default "mean".
        weight: per-class weight [C] (Tensor, array or list) or None. Default None.
    """

    def __init__(self, smoothing: float = 0.0, aux_factor: float = 0.0, reduction: str = "mean", weight=None):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {smoothing}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if aux_factor < 0:
            raise ValueError(f"aux_factor must be >= 0, got {aux_factor}")
        self.smoothing = float(smoothing)
        self.aux_factor = float(aux_factor)
        self.reduction = reduction
        self.weight = class_weight(weight)

    def construct(self, logits, labels: Tensor) -> Tensor:
        if isinstance(logits, (tuple, list)):
            loss = self.single(logits[0], labels)
            if self.aux_factor > 0:
                for aux_logits in logits[1:]:
                    loss = loss + self.aux_factor * self.single(aux_logits, labels)
            return loss
        return self.single(logits, labels)

    def single(self, logits: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def weighted(self, per_class: Tensor) -> Tensor:
        """per_class [B, C] times the per-class weight (unchanged without one)."""
        return per_class if self.weight is None else per_class * self.weight
