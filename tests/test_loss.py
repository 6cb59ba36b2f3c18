"""create_loss: every loss against a numpy float64 implementation of its formula (PyTorch's cross entropy with
label smoothing and class weights, BCE, timm's asymmetric losses and JSD), reductions, aux logits, graph mode."""
import mindspore as ms
import numpy as np
import pytest

from mindcv.data.mixup import MixupCutmix
from mindcv.loss import LOSSES, create_loss
from mindcv.loss.asymmetric import AsymmetricLossMultiLabel, AsymmetricLossSingleLabel
from mindcv.loss.jsd import JSDCrossEntropy

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(4, 10)).astype(np.float32) * 3
LABELS = np.array([1, 2, 3, 9], np.int32)
ONE_HOT = np.eye(10, dtype=np.float32)[LABELS]
SOFT = RNG.dirichlet(np.ones(10), size=4).astype(np.float32)
WEIGHT = np.linspace(0.5, 2.0, 10).astype(np.float32)


@pytest.fixture(autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)


def log_softmax(x):
    x = x.astype(np.float64)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def sigmoid(x):
    return 1 / (1 + np.exp(-x.astype(np.float64)))


def smooth(targets, s):
    return targets * (1 - s) + s / targets.shape[-1]


def reduce(per_sample, reduction, total=None):
    if reduction == "mean":
        return per_sample.sum() / (len(per_sample) if total is None else total)
    return per_sample.sum() if reduction == "sum" else per_sample


def run(loss_fn, logits, labels):
    return loss_fn(ms.Tensor(logits), ms.Tensor(labels)).asnumpy()


# ---- cross entropy ----

@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_int_labels_match_pytorch_label_smoothing(smoothing):
    # PyTorch CrossEntropyLoss(label_smoothing=e): (1 - e) * NLL(label) + e * mean over classes of -log p
    log_p = log_softmax(LOGITS)
    nll = -log_p[np.arange(4), LABELS]
    expected = ((1 - smoothing) * nll - smoothing * log_p.mean(-1)).mean()
    np.testing.assert_allclose(run(create_loss("ce", label_smoothing=smoothing), LOGITS, LABELS), expected, rtol=1e-6)


@pytest.mark.parametrize("targets", [ONE_HOT, SOFT], ids=["one_hot", "soft"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_dense_targets_are_smoothed_as_pytorch_probability_targets(targets, smoothing):
    # PyTorch, probability targets: target * (1 - s) + s / C, then -sum target * log p, mean over the batch
    expected = -(smooth(targets, smoothing) * log_softmax(LOGITS)).sum(-1).mean()
    np.testing.assert_allclose(run(create_loss("ce", label_smoothing=smoothing), LOGITS, targets), expected, rtol=1e-6)


def test_one_hot_targets_equal_int_labels_with_smoothing():
    np.testing.assert_allclose(run(create_loss("ce", label_smoothing=0.1), LOGITS, ONE_HOT),
                               run(create_loss("ce", label_smoothing=0.1), LOGITS, LABELS), rtol=1e-6)


def test_smoothing_in_the_loss_equals_smoothing_folded_into_mixup_targets():
    # smoothing is linear in the targets, so smoothing the mixed targets in the loss gives exactly the loss of the
    # loader's targets mixed from smoothed one-hots: the smoothing must come from one of the two, never both
    images = RNG.normal(size=(4, 3, 8, 8)).astype(np.float32)

    def mixed_targets(label_smoothing):
        mixer = MixupCutmix(mixup=0.8, cutmix=1.0, label_smoothing=label_smoothing, num_classes=10)
        return mixer(images.copy(), LABELS, np.random.default_rng(3))[1]

    smoothed_by_loss = run(create_loss("ce", label_smoothing=0.1), LOGITS, mixed_targets(0.0))
    smoothed_by_loader = run(create_loss("ce"), LOGITS, mixed_targets(0.1))
    np.testing.assert_allclose(smoothed_by_loss, smoothed_by_loader, rtol=1e-6)
    assert not np.isclose(smoothed_by_loss, run(create_loss("ce", label_smoothing=0.1), LOGITS, mixed_targets(0.1)))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_class_weight_int_labels_as_pytorch(reduction, smoothing):
    # PyTorch: (1 - s) * w_y * nll + s / C * sum_c w_c * (-log p_c); "mean" divides by the sum of w_y over the batch
    log_p = log_softmax(LOGITS)
    per_sample = ((1 - smoothing) * WEIGHT[LABELS] * -log_p[np.arange(4), LABELS]
                  + smoothing / 10 * (WEIGHT * -log_p).sum(-1))
    expected = reduce(per_sample, reduction, total=WEIGHT[LABELS].sum())
    loss_fn = create_loss("ce", weight=WEIGHT, reduction=reduction, label_smoothing=smoothing)
    # float32 log-softmax of logits up to ~9: absolute errors of a few 1e-6 per sample
    np.testing.assert_allclose(run(loss_fn, LOGITS, LABELS), expected, rtol=1e-5, atol=1e-5)


def test_class_weight_dense_targets_as_pytorch():
    # PyTorch, probability targets: -sum_c w_c * t_c * log p_c, and "mean" divides by the batch size
    expected = -(WEIGHT * smooth(SOFT, 0.1) * log_softmax(LOGITS)).sum(-1).mean()
    loss_fn = create_loss("ce", weight=ms.Tensor(WEIGHT), label_smoothing=0.1)
    np.testing.assert_allclose(run(loss_fn, LOGITS, SOFT), expected, rtol=1e-6)


def test_reductions():
    per_sample = -log_softmax(LOGITS)[np.arange(4), LABELS]
    np.testing.assert_allclose(run(create_loss(reduction="none"), LOGITS, LABELS), per_sample, atol=1e-5)
    np.testing.assert_allclose(run(create_loss(reduction="sum"), LOGITS, LABELS), per_sample.sum(), rtol=1e-6)


def test_mindcv_positional_order_and_case_insensitive_names():
    # MindCV: create_loss(name, weight, reduction, label_smoothing, aux_factor)
    positional = run(create_loss("CE", WEIGHT, "sum", 0.1, 0.0), LOGITS, LABELS)
    keywords = run(create_loss("ce", weight=WEIGHT, reduction="sum", label_smoothing=0.1), LOGITS, LABELS)
    np.testing.assert_allclose(positional, keywords, rtol=1e-7)
    assert {type(create_loss(name.upper())).__name__ for name in LOSSES} == {
        "CrossEntropySmooth", "BinaryCrossEntropySmooth", "AsymmetricLossSingleLabel", "AsymmetricLossMultiLabel",
        "JSDCrossEntropy"}


# ---- binary cross entropy ----

def bce_reference(logits, targets, weight=1.0):
    p = sigmoid(logits)
    return -weight * (targets * np.log(p) + (1 - targets) * np.log(1 - p))


def test_bce_matches_hand_computation():
    smoothing = 0.1
    expected = bce_reference(LOGITS, smooth(ONE_HOT, smoothing)).mean()
    np.testing.assert_allclose(run(create_loss("bce", label_smoothing=smoothing), LOGITS, LABELS), expected, rtol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_dense_targets_smoothing_weight_reductions(reduction):
    elementwise = bce_reference(LOGITS, smooth(SOFT, 0.2), WEIGHT)
    expected = {"mean": elementwise.mean(), "sum": elementwise.sum(), "none": elementwise.mean(-1)}[reduction]
    loss_fn = create_loss("bce", weight=WEIGHT, reduction=reduction, label_smoothing=0.2)
    np.testing.assert_allclose(run(loss_fn, LOGITS, SOFT), expected, rtol=1e-5)


# ---- asymmetric losses ----

def asl_single_label_reference(logits, targets, gamma_pos, gamma_neg, smoothing, weight=1.0):
    # ASL, single label: focusing (1 - p)^gamma_pos on the target class, p^gamma_neg on the others
    log_p = log_softmax(logits)
    p = np.exp(log_p)
    focus = np.where(targets == 1, (1 - p) ** gamma_pos, p ** gamma_neg)
    return -(weight * smooth(targets, smoothing) * focus * log_p).sum(-1)


def asl_multi_label_reference(logits, targets, gamma_pos, gamma_neg, clip, eps, weight=1.0):
    # ASL, multi label: negatives' probability shifted by clip; (1 - p)^gamma_pos, (1 - q)^gamma_neg focusing
    p = sigmoid(logits)
    q = np.minimum(1 - p + clip, 1)
    positive = targets * (1 - p) ** gamma_pos * np.log(np.maximum(p, eps))
    negative = (1 - targets) * (1 - q) ** gamma_neg * np.log(np.maximum(q, eps))
    return -(weight * (positive + negative)).sum(-1)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_asl_single_label_via_create_loss(smoothing):
    expected = asl_single_label_reference(LOGITS, ONE_HOT, 1.0, 4.0, smoothing).mean()
    loss_fn = create_loss("asl_single_label", label_smoothing=smoothing)
    np.testing.assert_allclose(run(loss_fn, LOGITS, LABELS), expected, rtol=1e-5)


def test_asl_single_label_timm_defaults_gammas_weight_and_one_hot_targets():
    assert AsymmetricLossSingleLabel().smoothing == 0.1  # timm's eps (label smoothing) default
    expected = asl_single_label_reference(LOGITS, ONE_HOT, 2.0, 3.0, 0.1, WEIGHT).sum()
    loss_fn = AsymmetricLossSingleLabel(gamma_pos=2.0, gamma_neg=3.0, reduction="sum", weight=WEIGHT)
    np.testing.assert_allclose(run(loss_fn, LOGITS, LABELS), expected, rtol=1e-5)
    np.testing.assert_allclose(run(loss_fn, LOGITS, ONE_HOT), expected, rtol=1e-5)


def test_asl_multi_label_via_create_loss():
    multi_hot = (RNG.random((4, 10)) < 0.3).astype(np.float32)
    per_sample = asl_multi_label_reference(LOGITS, multi_hot, 1.0, 4.0, 0.05, 1e-8)
    np.testing.assert_allclose(run(create_loss("asl_multi_label"), LOGITS, multi_hot), per_sample.mean(), rtol=1e-5)
    # timm's AsymmetricLossMultiLabel returns the sum over the batch
    np.testing.assert_allclose(run(create_loss("asl_multi_label", reduction="sum"), LOGITS, multi_hot),
                               per_sample.sum(), rtol=1e-5)


def test_asl_multi_label_ignores_label_smoothing_as_mindcv(caplog):
    multi_hot = (RNG.random((4, 10)) < 0.3).astype(np.float32)
    expected = asl_multi_label_reference(LOGITS, multi_hot, 1.0, 4.0, 0.05, 1e-8).mean()
    np.testing.assert_allclose(run(create_loss("asl_multi_label", label_smoothing=0.1), LOGITS, multi_hot), expected,
                               rtol=1e-5)
    assert "ignores label_smoothing" in caplog.text


def test_asl_multi_label_without_clip_and_with_weight():
    multi_hot = (RNG.random((4, 10)) < 0.3).astype(np.float32)
    expected = asl_multi_label_reference(LOGITS, multi_hot, 0.5, 2.0, 0.0, 1e-8, WEIGHT)
    loss_fn = AsymmetricLossMultiLabel(gamma_neg=2.0, gamma_pos=0.5, clip=0.0, reduction="none", weight=WEIGHT)
    np.testing.assert_allclose(run(loss_fn, LOGITS, multi_hot), expected, rtol=1e-5)


@pytest.mark.parametrize("loss_fn", [AsymmetricLossSingleLabel(gamma_pos=0.0), AsymmetricLossMultiLabel(gamma_pos=0.0)],
                         ids=["single", "multi"])
def test_asl_gradients_stay_finite_at_saturated_probabilities(loss_fn):
    logits = ms.Tensor(np.array([[100.0, -100.0, 0.0], [-100.0, 100.0, 0.0]], np.float32))
    grads = ms.grad(lambda x: loss_fn(x, ms.Tensor(np.array([0, 1], np.int32))))(logits)
    assert np.isfinite(grads.asnumpy()).all()


# ---- JSD ----

def jsd_reference(logits, labels, num_splits, alpha, smoothing):
    # timm JsdCrossEntropy: smoothed CE on the clean split + alpha * mean_k KL(p_k || clamp(mean_k p_k, 1e-7, 1))
    splits = np.split(logits, num_splits)
    size = len(splits[0])
    log_p = [log_softmax(s) for s in splits]
    mixture = np.clip(np.mean([np.exp(lp) for lp in log_p], axis=0), 1e-7, 1)
    kl = [(np.exp(lp) * (lp - np.log(mixture))).sum(-1) for lp in log_p]
    targets = smooth(np.eye(logits.shape[-1])[labels[:size]], smoothing)
    cross_entropy = -(targets * log_p[0]).sum(-1)
    return cross_entropy.mean() + alpha * np.mean(kl, axis=0).mean()


@pytest.mark.parametrize("label_rows", ["clean_split", "whole_batch"])
def test_jsd_matches_timm_formula_in_training(label_rows):
    logits = RNG.normal(size=(12, 10)).astype(np.float32) * 2
    labels = RNG.integers(0, 10, size=12).astype(np.int32)
    labels = labels[:4] if label_rows == "clean_split" else labels
    loss_fn = create_loss("jsd", label_smoothing=0.1).set_train(True)
    np.testing.assert_allclose(run(loss_fn, logits, labels), jsd_reference(logits, labels, 3, 12.0, 0.1), rtol=1e-5)
    assert JSDCrossEntropy().num_splits == 3 and JSDCrossEntropy().alpha == 12.0 and JSDCrossEntropy().smoothing == 0.1


def test_jsd_is_cross_entropy_outside_training_and_needs_equal_splits():
    loss_fn = create_loss("jsd", label_smoothing=0.1)
    np.testing.assert_allclose(run(loss_fn, LOGITS, LABELS),
                               run(create_loss("ce", label_smoothing=0.1), LOGITS, LABELS), rtol=1e-7)
    with pytest.raises(ValueError, match="equal splits"):
        run(loss_fn.set_train(True), LOGITS, LABELS)


# ---- shared behaviour ----

def test_aux_logits_are_weighted():
    aux = LOGITS[::-1].copy()
    ce = create_loss("ce", aux_factor=0.4)
    total = ce((ms.Tensor(LOGITS), ms.Tensor(aux)), ms.Tensor(LABELS)).asnumpy()
    np.testing.assert_allclose(total, run(ce, LOGITS, LABELS) + 0.4 * run(ce, aux, LABELS), rtol=1e-6)
    without = create_loss("ce")((ms.Tensor(LOGITS), ms.Tensor(aux)), ms.Tensor(LABELS)).asnumpy()
    np.testing.assert_allclose(without, run(ce, LOGITS, LABELS), rtol=1e-7)


@pytest.mark.parametrize("name", LOSSES)
def test_graph_mode_float16_logits_give_float32(name):
    logits = RNG.normal(size=(6, 10)).astype(np.float16)
    labels = np.array([0, 1, 2, 3, 4, 5], np.int32)
    kwargs = dict(weight=WEIGHT, label_smoothing=0.0 if name == "asl_multi_label" else 0.1)
    expected = run(create_loss(name, **kwargs).set_train(True), logits.astype(np.float32), labels)
    ms.set_context(mode=ms.GRAPH_MODE)
    loss = create_loss(name, **kwargs).set_train(True)(ms.Tensor(logits), ms.Tensor(labels))
    assert loss.dtype == ms.float32
    np.testing.assert_allclose(loss.asnumpy(), expected, rtol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown loss"):
        create_loss("focal")
    with pytest.raises(ValueError, match="label_smoothing"):
        create_loss("ce", label_smoothing=1.0)
    with pytest.raises(ValueError, match="reduction"):
        create_loss("ce", reduction="max")
    with pytest.raises(ValueError, match="per-class weight"):
        create_loss("ce", weight=np.ones((2, 10)))
    with pytest.raises(ValueError, match="aux_factor"):
        create_loss("ce", aux_factor=-1.0)
