"""Cross entropy (softmax) and binary cross entropy (per-class sigmoid) with integer labels or dense targets."""
from mindspore import Tensor, ops
from mindspore import dtype as mstype

from .base import ClassificationLoss, dense_targets, reduce_loss, smooth_targets


class CrossEntropySmooth(ClassificationLoss):
    """Softmax cross entropy, equal to PyTorch's `CrossEntropyLoss(weight, reduction=..., label_smoothing=...)`.

    - Integer labels y [B]: per sample (1 - s) * w_y * (-log p_y) + s / C * sum_c w_c * (-log p_c); "mean" divides
      the sum over the batch by the sum of w_y (by B without weight), as PyTorch does.
    - Dense targets t [B, C] (one-hot, or mixup/cutmix soft targets): smoothed as t * (1 - s) + s / C, then per
      sample -sum_c w_c * t_c * log p_c; "mean" divides by B.

    Args:
        smoothing: label smoothing s in [0, 1). Default 0.0.
        aux_factor: weight of auxiliary logits when the network returns a tuple. Default 0.0.
        reduction: "mean", "sum" or "none" (per sample). Default "mean".
        weight: per-class weight w [C], or None (all 1). Default None.
    """

    def single(self, logits: Tensor, labels: Tensor) -> Tensor:
        log_probs = ops.log_softmax(logits.astype(mstype.float32), -1)
        if labels.ndim == 1:
            labels = labels.astype(mstype.int32)
            weighted_log_probs = self.weighted(log_probs)
            per_sample = -ops.gather_elements(weighted_log_probs, 1, labels.reshape(-1, 1)).reshape(-1)
            if self.smoothing > 0:
                per_sample = (1.0 - self.smoothing) * per_sample - self.smoothing * weighted_log_probs.mean(-1)
            total_weight = None if self.weight is None else ops.gather(self.weight, labels, 0).sum()
            return reduce_loss(per_sample, self.reduction, total_weight)
        targets = smooth_targets(labels.astype(mstype.float32), self.smoothing)
        return reduce_loss(-self.weighted(targets * log_probs).sum(-1), self.reduction)


class BinaryCrossEntropySmooth(ClassificationLoss):
    """Per-class sigmoid binary cross entropy (one-vs-all), as PyTorch's `BCEWithLogitsLoss(weight)` on the targets.

    Targets: integer labels become one-hot; dense targets [B, C] are used as given; then both are smoothed as
    t * (1 - s) + s / C (for integer labels the same targets as smoothed cross entropy). Each element's loss
    -w_c * (t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))) is averaged over classes per sample.

    Args:
        smoothing: label smoothing s in [0, 1). Default 0.0.
        aux_factor: weight of auxiliary logits when the network returns a tuple. Default 0.0.
        reduction: "mean" (over batch and classes), "sum" (over batch and classes) or "none" (per sample, mean
            over classes). Default "mean".
        weight: per-class weight w [C], or None (all 1). Default None.
    """

    def single(self, logits: Tensor, labels: Tensor) -> Tensor:
        logits = logits.astype(mstype.float32)
        targets = smooth_targets(dense_targets(labels, logits.shape[-1]), self.smoothing)
        # softplus(x) - t * x, with softplus written as relu(x) + log(1 + exp(-|x|)) to stay finite for large |x|
        elementwise = self.weighted(ops.relu(logits) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits))))
        if self.reduction == "none":
            return elementwise.mean(-1)
        return reduce_loss(elementwise, self.reduction)
