"""Jensen-Shannon divergence consistency loss for AugMix (Hendrycks et al., ICLR 2020), as timm's JsdCrossEntropy."""
from mindspore import Tensor, ops
from mindspore import dtype as mstype

from .base import reduce_loss
from .cross_entropy import CrossEntropySmooth


class JSDCrossEntropy(CrossEntropySmooth):
    """Cross entropy on the clean images plus alpha times the Jensen-Shannon divergence of all augmented views.

    In training mode (`set_train(True)`, as the train step sets it) the batch is num_splits equal splits
    [clean; augmented 1; ...] of the same images (AugMix "split" batches). With p_k = softmax of split k and the
    mixture M = clamp(mean_k p_k, 1e-7, 1) (the clamp keeps log M finite), per clean sample:
    CE(split 0, label) + alpha * (1 / num_splits) * sum_k KL(p_k || M), KL(p || M) = sum_c p_c (log p_c - log M_c).
    The cross entropy term is `CrossEntropySmooth`'s (smoothing, weight, reduction); the divergence term is reduced
    with the same reduction. Labels may hold the clean split's rows only or the whole batch (the first rows are used).
    Outside training mode the loss is plain cross entropy over the whole batch (evaluation batches are not split).

    Args:
        num_splits: views per image in a batch (clean + augmented). Default 3 (timm).
        alpha: weight of the divergence term. Default 12.0 (timm).
        smoothing: label smoothing of the cross entropy term. Default 0.1 (timm); `create_loss` passes its
            label_smoothing instead.
        weight: per-class weight [C] of the cross entropy term, or None. Default None.
        reduction: "mean", "sum" or "none" (per clean sample). Default "mean".
        aux_factor: weight of auxiliary logits when the network returns a tuple. Default 0.0.
    """

    def __init__(self, num_splits: int = 3, alpha: float = 12.0, smoothing: float = 0.1, weight=None,
                 reduction: str = "mean", aux_factor: float = 0.0):
        super().__init__(smoothing, aux_factor, reduction, weight)
        if num_splits < 2:
            raise ValueError(f"num_splits must be >= 2 (clean + augmented views), got {num_splits}")
        self.num_splits = int(num_splits)
        self.alpha = float(alpha)

    def single(self, logits: Tensor, labels: Tensor) -> Tensor:
        if not self.training:
            return super().single(logits, labels)
        batch = logits.shape[0]
        if batch % self.num_splits != 0:
            raise ValueError(f"JSD: batch of {batch} rows is not {self.num_splits} equal splits")
        split_size = batch // self.num_splits
        log_probs = ops.split(ops.log_softmax(logits.astype(mstype.float32), -1), split_size, 0)
        probs = [ops.exp(split) for split in log_probs]
        log_mixture = ops.log(ops.clamp(sum(probs) / self.num_splits, 1e-7, 1.0))
        divergence = sum((p * (log_p - log_mixture)).sum(-1) for p, log_p in zip(probs, log_probs)) / self.num_splits
        cross_entropy = super().single(logits[:split_size], labels[:split_size])
        return cross_entropy + self.alpha * reduce_loss(divergence, self.reduction)
