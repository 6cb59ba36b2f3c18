"""create_loss: smoothed cross entropy (PyTorch's formula), soft targets, BCE, reductions, aux logits."""
import mindspore as ms
import numpy as np
import pytest

from mindcv.loss import create_loss

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(4, 10)).astype(np.float32) * 3
LABELS = np.array([1, 2, 3, 9], np.int32)


@pytest.fixture(autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)


def log_softmax(x):
    x = x.astype(np.float64)
    return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))


def run(loss_fn, logits, labels):
    return loss_fn(ms.Tensor(logits), ms.Tensor(labels)).asnumpy()


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_int_labels_match_pytorch_label_smoothing(smoothing):
    # PyTorch CrossEntropyLoss(label_smoothing=e): (1 - e) * NLL(label) + e * mean over classes of -log p
    log_p = log_softmax(LOGITS)
    nll = -log_p[np.arange(4), LABELS]
    expected = ((1 - smoothing) * nll - smoothing * log_p.mean(-1)).mean()
    np.testing.assert_allclose(run(create_loss("ce", label_smoothing=smoothing), LOGITS, LABELS), expected, rtol=1e-6)


def test_soft_targets_are_used_as_given():
    targets = RNG.dirichlet(np.ones(10), size=4).astype(np.float32)
    expected = -(targets * log_softmax(LOGITS)).sum(-1).mean()
    # smoothing applies to integer labels only: mixup/cutmix targets already carry it
    np.testing.assert_allclose(run(create_loss("ce", label_smoothing=0.1), LOGITS, targets), expected, rtol=1e-6)


def test_one_hot_smoothed_targets_equal_smoothed_int_labels():
    smoothed = (np.eye(10)[LABELS] * 0.9 + 0.1 / 10).astype(np.float32)
    np.testing.assert_allclose(run(create_loss("ce"), LOGITS, smoothed),
                               run(create_loss("ce", label_smoothing=0.1), LOGITS, LABELS), rtol=1e-6)


def test_reductions():
    per_sample = -log_softmax(LOGITS)[np.arange(4), LABELS]
    np.testing.assert_allclose(run(create_loss(reduction="none"), LOGITS, LABELS), per_sample, atol=1e-5)
    np.testing.assert_allclose(run(create_loss(reduction="sum"), LOGITS, LABELS), per_sample.sum(), rtol=1e-6)


def test_bce_matches_hand_computation():
    smoothing = 0.1
    targets = np.eye(10)[LABELS] * (1 - smoothing) + smoothing / 10
    x = LOGITS.astype(np.float64)
    expected = (-(targets * np.log(1 / (1 + np.exp(-x))) + (1 - targets) * np.log(1 - 1 / (1 + np.exp(-x))))).mean()
    np.testing.assert_allclose(run(create_loss("bce", label_smoothing=smoothing), LOGITS, LABELS), expected, rtol=1e-5)


def test_aux_logits_are_weighted():
    aux = LOGITS[::-1].copy()
    ce = create_loss("ce", aux_factor=0.4)
    total = ce((ms.Tensor(LOGITS), ms.Tensor(aux)), ms.Tensor(LABELS)).asnumpy()
    np.testing.assert_allclose(total, run(ce, LOGITS, LABELS) + 0.4 * run(ce, aux, LABELS), rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown loss"):
        create_loss("focal")
    with pytest.raises(ValueError, match="label_smoothing"):
        create_loss("ce", label_smoothing=1.0)
    with pytest.raises(ValueError, match="reduction"):
        create_loss("ce", reduction="max")
