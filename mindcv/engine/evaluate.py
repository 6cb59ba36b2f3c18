"""Top-1 / top-5 accuracy and cross-entropy loss of a classifier over a loader."""
from typing import Dict

import numpy as np
from mindspore import Tensor, nn, ops
from mindspore import dtype as mstype


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log softmax of [N, C] logits, computed stably."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def batch_counts(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[top-1 hits, top-5 hits, summed cross entropy, samples] of one batch (float64)."""
    logits = logits.astype(np.float64)
    ranked = np.argsort(-logits, axis=1)[:, :5]
    hits = ranked == labels[:, None]
    loss = -log_softmax(logits)[np.arange(len(labels)), labels].sum()
    return np.array([hits[:, 0].sum(), hits.any(axis=1).sum(), loss, len(labels)], np.float64)


def evaluate(network: nn.Cell, loader, distribute: bool = False) -> Dict[str, float]:
    """Run `network` in eval mode over `loader` (images, integer labels). Returns top1 and top5 in percent,
    loss (mean cross entropy) and num_samples, summed over all ranks when `distribute`."""
    was_training = network.training
    network.set_train(False)
    totals = np.zeros(4, np.float64)
    for images, labels in loader.create_tuple_iterator(num_epochs=1):
        logits = network(images)
        totals += batch_counts(logits.asnumpy(), labels.asnumpy().astype(np.int64))
    network.set_train(was_training)
    if distribute:
        totals = ops.AllReduce()(Tensor(totals, mstype.float32)).asnumpy().astype(np.float64)  # float32 only on CPU
    count = max(totals[3], 1.0)
    return {"top1": 100.0 * totals[0] / count, "top5": 100.0 * totals[1] / count, "loss": totals[2] / count,
            "num_samples": int(totals[3])}
