"""Asymmetric loss (ASL; Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021).

ASL down-weights easy examples as focal loss does, with separate focusing exponents for the positive (target) and
the negative classes: gamma_neg > gamma_pos discounts the many easy negatives more. The defaults are timm's.
"""
from mindspore import Tensor, ops
from mindspore import dtype as mstype

from .base import ClassificationLoss, dense_targets, reduce_loss, smooth_targets


def _focusing_weight(positive_prob: Tensor, negative_prob: Tensor, targets: Tensor, gamma_pos: float,
                     gamma_neg: float) -> Tensor:
    """(1 - p_t) ** gamma_t with p_t = t * positive_prob + (1 - t) * negative_prob and gamma_t the exponent mix
    t * gamma_pos + (1 - t) * gamma_neg: (1 - p)^gamma_pos on targets, (1 - q)^gamma_neg on the other classes."""
    not_targets = 1.0 - targets
    hardness = 1.0 - (targets * positive_prob + not_targets * negative_prob)
    gamma = targets * gamma_pos + not_targets * gamma_neg
    # where gamma is 0 the weight is 1, but pow's gradient gamma * hardness ** (gamma - 1) would be 0 * inf = nan
    # at hardness 0 (a saturated probability): raise 1 instead of hardness there
    return ops.pow(ops.where(gamma == 0, ops.ones_like(hardness), hardness), gamma)


class AsymmetricLossSingleLabel(ClassificationLoss):
    """ASL for single-label (softmax) classification, as timm's AsymmetricLossSingleLabel.

    With p = softmax(logits) and one-hot targets t (from integer labels; dense targets [B, C] are used as given),
    per sample: -sum_c w_c * t'_c * f_c * log p_c, where f = (1 - p)^gamma_pos on the target class and
    p^gamma_neg on the others, and t' = t * (1 - s) + s / C is the smoothed target. "mean" divides by B.

    Args:
        gamma_pos: focusing exponent of the target class. Default 1.0 (timm).
        gamma_neg: focusing exponent of the other classes. Default 4.0 (timm).
        smoothing: label smoothing s in [0, 1) (timm calls it eps). Default 0.1 (timm); `create_loss` passes its
            label_smoothing instead.
        aux_factor: weight of auxiliary logits when the network returns a tuple. Default 0.0.
        reduction: "mean", "sum" or "none" (per sample). Default "mean".
        weight: per-class weight w [C], or None (all 1). Default None.
    """

    def __init__(self, gamma_pos: float = 1.0, gamma_neg: float = 4.0, smoothing: float = 0.1,
                 aux_factor: float = 0.0, reduction: str = "mean", weight=None):
        super().__init__(smoothing, aux_factor, reduction, weight)
        self.gamma_pos = float(gamma_pos)
        self.gamma_neg = float(gamma_neg)

    def single(self, logits: Tensor, labels: Tensor) -> Tensor:
        log_probs = ops.log_softmax(logits.astype(mstype.float32), -1)
        probs = ops.exp(log_probs)
        targets = dense_targets(labels, logits.shape[-1])
        # negatives are "easy" when their probability is low: their easiness is 1 - p
        focus = _focusing_weight(probs, 1.0 - probs, targets, self.gamma_pos, self.gamma_neg)
        per_class = smooth_targets(targets, self.smoothing) * focus * log_probs
        return reduce_loss(-self.weighted(per_class).sum(-1), self.reduction)


class AsymmetricLossMultiLabel(ClassificationLoss):
    """ASL for multi-label (per-class sigmoid) classification, as timm's AsymmetricLossMultiLabel.

    With p = sigmoid(logits), multi-hot targets y [B, C] (integer labels [B] become one-hot) and the shifted
    negative probability q = min(1 - p + clip, 1) (easy negatives below `clip` add nothing), each element is
    -w_c * (y * (1 - p)^gamma_pos * log max(p, eps) + (1 - y) * (1 - q)^gamma_neg * log max(q, eps));
    per sample the sum over classes. "mean" averages those sums over the batch, "sum" adds them (timm's value).

    Args:
        gamma_neg: focusing exponent of negatives. Default 4.0 (timm).
        gamma_pos: focusing exponent of positives. Default 1.0 (timm).
        clip: probability margin of negatives (0 disables the shift). Default 0.05 (timm).
        eps: lower clamp of probabilities inside the logarithms. Default 1e-8 (timm).
        aux_factor: weight of auxiliary logits when the network returns a tuple. Default 0.0.
        reduction: "mean", "sum" or "none" (per sample). Default "mean".
        weight: per-class weight w [C], or None (all 1). Default None.
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 1.0, clip: float = 0.05, eps: float = 1e-8,
                 aux_factor: float = 0.0, reduction: str = "mean", weight=None):
        super().__init__(0.0, aux_factor, reduction, weight)
        if clip < 0:
            raise ValueError(f"clip must be >= 0, got {clip}")
        self.gamma_neg = float(gamma_neg)
        self.gamma_pos = float(gamma_pos)
        self.clip = float(clip)
        self.eps = float(eps)

    def single(self, logits: Tensor, labels: Tensor) -> Tensor:
        probs = ops.sigmoid(logits.astype(mstype.float32))
        targets = dense_targets(labels, logits.shape[-1])
        negative_probs = ops.clamp(1.0 - probs + self.clip, max=1.0)
        log_likelihood = (targets * ops.log(ops.clamp(probs, min=self.eps))
                          + (1.0 - targets) * ops.log(ops.clamp(negative_probs, min=self.eps)))
        focus = _focusing_weight(probs, negative_probs, targets, self.gamma_pos, self.gamma_neg)
        return reduce_loss(-self.weighted(log_likelihood * focus).sum(-1), self.reduction)
