"""Cross entropy for classification with integer labels or soft targets."""
from mindspore import Tensor, nn, ops

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


class _AuxLoss(nn.Cell):
    """Base for losses that accept either logits [B, C] or a tuple (main logits, aux logits, ...):
    the total is loss(main) + aux_factor * sum(loss(aux)) (auxiliary heads, as in Inception)."""

    def __init__(self, label_smoothing: float, reduction: str, aux_factor: float):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.label_smoothing = label_smoothing
        self.reduction = reduction
        self.aux_factor = aux_factor

    def construct(self, logits, labels: Tensor) -> Tensor:
        if isinstance(logits, (tuple, list)):
            loss = self.single(logits[0], labels)
            for aux_logits in logits[1:]:
                loss = loss + self.aux_factor * self.single(aux_logits, labels)
            return loss
        return self.single(logits, labels)

    def single(self, logits: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError


class CrossEntropySmooth(_AuxLoss):
    """Softmax cross entropy, equal to PyTorch's `CrossEntropyLoss(label_smoothing=...)`.

    Args:
        label_smoothing: ε; with integer labels the target is (1 - ε) on the label plus ε / C on every class,
            i.e. loss = (1 - ε) * (-log p_label) + ε * mean_c(-log p_c). Soft targets are used as given
            (mixup/cutmix loaders fold smoothing into them already). Default 0.0.
        reduction: "mean" (over the batch), "sum" or "none" (per sample). Default "mean".
        aux_factor: weight of auxiliary logits when the network returns a tuple. Default 0.0.

    Inputs: logits [B, C] (any float dtype; computed in float32), labels: int [B] or float soft targets [B, C].
    """

    def __init__(self, label_smoothing: float = 0.0, reduction: str = "mean", aux_factor: float = 0.0):
        super().__init__(label_smoothing, reduction, aux_factor)

    def single(self, logits: Tensor, labels: Tensor) -> Tensor:
        log_probs = ops.log_softmax(logits.astype("float32"), -1)
        if labels.ndim == 1:
            label_log_prob = ops.gather_elements(log_probs, 1, labels.astype("int32").reshape(-1, 1)).reshape(-1)
            per_sample = -label_log_prob
            if self.label_smoothing > 0:
                per_sample = ((1.0 - self.label_smoothing) * per_sample
                              - self.label_smoothing * log_probs.mean(-1))
        else:
            per_sample = -(labels.astype("float32") * log_probs).sum(-1)
        return _reduce(per_sample, self.reduction)


class BinaryCrossEntropySmooth(_AuxLoss):
    """Per-class sigmoid binary cross entropy (one-vs-all), averaged over classes.

    Args:
        label_smoothing: ε; integer labels become targets 1 - ε + ε / C on the label and ε / C elsewhere
            (the same targets as smoothed cross entropy). Soft targets are used as given. Default 0.0.
        reduction: "mean" (over batch and classes), "sum" or "none" (per sample, mean over classes).
        aux_factor: weight of auxiliary logits when the network returns a tuple. Default 0.0.
    """

    def __init__(self, label_smoothing: float = 0.0, reduction: str = "mean", aux_factor: float = 0.0):
        super().__init__(label_smoothing, reduction, aux_factor)

    def single(self, logits: Tensor, labels: Tensor) -> Tensor:
        logits = logits.astype("float32")
        if labels.ndim == 1:
            num_classes = logits.shape[-1]
            off_value = self.label_smoothing / num_classes
            targets = ops.one_hot(labels.astype("int32"), num_classes, Tensor(1.0 - self.label_smoothing + off_value),
                                  Tensor(off_value))
        else:
            targets = labels.astype("float32")
        # log(1 + exp(-|x|)) keeps the logistic loss finite for large |x|
        elementwise = ops.relu(logits) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))
        per_sample = elementwise.mean(-1)
        if self.reduction == "sum":
            return elementwise.sum()
        return _reduce(per_sample, self.reduction)
