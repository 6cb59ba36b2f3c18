"""TrainStep: the reference fixture's three AdamW steps reproduced, loss scaling and overflow on CPU,
gradient accumulation, clipping, EMA, mixed precision and a checkpoint that resumes exactly."""
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn, ops
from safetensors.numpy import load_file

from conftest import MINI, reference
from mindcv.loss import create_loss
from mindcv.models import create_model
from mindcv.models.weights import to_mindcv_names
from mindcv.optim import create_optimizer
from mindcv.ops import fast_cpu_ops
from mindcv.engine import restore
from mindcv.io.names import EPOCH_KEY, STEP_KEY, WINDOW_OVERFLOW, is_training_state
from mindcv.engine.train_step import LOSS_SCALE_CAP, TrainStep, create_train_step, select_overflow_check

FIXTURE_LOSSES = [3.7686476707458496, 3.2036941051483154, 3.2876017093658447]
BETA1 = 0.9


def run_fixture(mode):
    """The fixture's recipe: AdamW lr 1e-3, wd 0.05 off 1-D params, smoothing 0.1, constant lr, fp32.
    Returns losses, step-1 gradients (read back from Adam's first moment, m1 = (1 - beta1) * g1),
    parameters before and after the three steps."""
    ms.set_context(mode=mode)
    model = create_model("convnext_atto", **MINI, checkpoint_path=reference("convnext_mini.timm.safetensors"))
    optimizer = create_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05, weight_decay_filter="norm_and_bias",
                                 betas=(BETA1, 0.999), eps=1e-8)
    train_step = create_train_step(model, create_loss("ce", label_smoothing=0.1), optimizer)
    batches = np.load(reference("convnext_mini.train_batches.npz"))
    before = {p.name: p.asnumpy().copy() for p in model.trainable_params()}
    losses, grads = [], {}
    for i in range(3):
        loss, overflow, _ = train_step(ms.Tensor(batches["images"][i]), ms.Tensor(batches["labels"][i]))
        assert not overflow
        losses.append(float(loss.asnumpy()))
        if i == 0:
            grads = {m.name[len("adam_m."):]: m.asnumpy().astype(np.float64) / (1 - BETA1) for m in optimizer.moments1}
    after = {p.name: p.asnumpy().copy() for p in model.trainable_params()}
    return losses, grads, before, after


def reference_state(name, shapes):
    renamed, _ = to_mindcv_names(load_file(reference(name)))
    assert set(renamed) == set(shapes)
    return {k: v.reshape(shapes[k]) for k, v in renamed.items()}


@pytest.fixture(scope="module")
def graph_run():
    return run_fixture(ms.GRAPH_MODE)


def assert_updates_match(before, after, rtol=1e-3):
    shapes = {k: v.shape for k, v in after.items()}
    expected_after = reference_state("convnext_mini.after3steps.timm.safetensors", shapes)
    for name in after:
        expected = expected_after[name].astype(np.float64) - before[name]
        ours = after[name].astype(np.float64) - before[name]
        error = np.linalg.norm(ours - expected) / np.linalg.norm(expected)
        assert error < rtol, f"{name}: update differs by {error:.2e} of its norm"


def test_fixture_losses(graph_run):
    losses = graph_run[0]
    np.testing.assert_allclose(losses, FIXTURE_LOSSES, rtol=1e-5)


def test_fixture_step1_gradients(graph_run):
    grads = graph_run[1]
    expected = reference_state("convnext_mini.step1_grads.timm.safetensors", {k: v.shape for k, v in grads.items()})
    for name, grad in grads.items():
        scale = np.abs(expected[name]).max()
        assert np.abs(grad - expected[name]).max() <= 1e-5 * scale, name


def test_fixture_updates_after_three_steps(graph_run):
    _, _, before, after = graph_run
    assert_updates_match(before, after)


def test_fixture_pynative():
    losses, _, before, after = run_fixture(ms.PYNATIVE_MODE)
    np.testing.assert_allclose(losses, FIXTURE_LOSSES, rtol=1e-5)
    assert_updates_match(before, after)


# ---- behaviour on a tiny network (compiles in about a second) ----

RNG = np.random.default_rng(3)
IMAGES = RNG.normal(size=(8, 4)).astype(np.float32)
LABELS = RNG.integers(0, 3, size=8).astype(np.int32)


def tiny_step(opt="adamw", lr=0.01, weight_decay=0.0, **kwargs):
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    network = nn.SequentialCell(nn.Dense(4, 8), nn.GELU(approximate=False), nn.Dense(8, 3))
    optimizer = create_optimizer(network, opt, lr=lr, weight_decay=weight_decay, momentum=0.0)
    return create_train_step(network, create_loss("ce"), optimizer, **kwargs)


def state(cell):
    return {p.name: p.asnumpy().copy() for p in cell.get_parameters()}


def call(train_step, images=IMAGES, labels=LABELS):
    loss, overflow, scale = train_step(ms.Tensor(images), ms.Tensor(labels))
    return float(loss.asnumpy()), bool(overflow.asnumpy()), float(scale.asnumpy())


def test_dynamic_loss_scale_skips_overflow_on_cpu():
    train_step = tiny_step(loss_scale_type="dynamic", loss_scale=2.0 ** 100, drop_overflow_update=True,
                           loss_scale_window=2)
    start = state(train_step)
    loss, overflow, scale = call(train_step, IMAGES * 1e20)  # the loss is finite, its scaled gradients are not
    assert np.isfinite(loss) and overflow and scale == 2.0 ** 100
    after = state(train_step)
    changed = {k for k in start if not np.array_equal(start[k], after[k])}
    # weights, moments, beta powers untouched; the schedule position and counters move on, the scale halves
    assert changed == {"global_step", "loss_scale", "current_iterator_step"}
    assert after["loss_scale"] == 2.0 ** 99 and after["global_step"][0] == 1

    train_step.loss_scale.set_data(ms.Tensor(4.0, ms.float32))
    scales = [call(train_step)[2] for _ in range(4)]
    # the rule, simulated: after call `step` without overflow the scale doubles once loss_scale_window (2) calls
    # have passed since the last change (the overflow at call 0)
    expected, scale, last_change = [], 4.0, 0
    for step in range(1, 5):
        expected.append(scale)
        if step - last_change >= 2:
            scale, last_change = scale * 2.0, step
    assert scales == expected
    assert train_step.optimizer.beta1_power.asnumpy() == pytest.approx(0.9 ** 4)  # four updates applied

    bad = IMAGES.copy()
    bad[0, 0] = np.nan
    loss, overflow, _ = call(train_step, bad)
    assert not np.isfinite(loss) and overflow
    assert all(np.isfinite(v).all() for v in state(train_step.network).values())


def test_without_drop_the_update_is_applied_and_flagged():
    train_step = tiny_step(loss_scale_type="fixed", drop_overflow_update=False)
    bad = IMAGES.copy()
    bad[0, 0] = np.inf
    loss, overflow, _ = call(train_step, bad)
    assert overflow and not np.isfinite(loss)  # the trainer stops on this flag
    assert not all(np.isfinite(v).all() for v in state(train_step.network).values())


def test_two_half_batches_equal_one_full_batch():
    full = tiny_step(weight_decay=0.1)
    accumulated = tiny_step(weight_decay=0.1, gradient_accumulation_steps=2)
    start = state(accumulated.network)
    call(full)
    call(accumulated, IMAGES[:4], LABELS[:4])
    assert all(np.array_equal(v, state(accumulated.network)[k]) for k, v in start.items())  # no update yet
    assert accumulated.optimizer.global_step.asnumpy()[0] == 0
    call(accumulated, IMAGES[4:], LABELS[4:])
    for name, value in state(full.network).items():
        np.testing.assert_allclose(state(accumulated.network)[name], value, rtol=1e-5, atol=1e-7)
    assert all(not a.asnumpy().any() for a in accumulated.accumulated)  # window closed, sums cleared


def test_clip_by_global_norm():
    clip_value = 1e-3
    train_step = tiny_step(opt="sgd", lr=1.0, clip_grad=True, clip_value=clip_value)
    start = state(train_step.network)
    call(train_step)
    end = state(train_step.network)
    update_norm = np.sqrt(sum(((end[k] - start[k]).astype(np.float64) ** 2).sum() for k in start))
    assert update_norm == pytest.approx(clip_value, rel=1e-4)


def test_ema_update_and_swap():
    train_step = tiny_step(ema=True, ema_decay=0.75)
    start = state(train_step.network)
    call(train_step)
    trained = state(train_step.network)
    ema = {p.name[len("ema."):]: p.asnumpy() for p in train_step.ema_weights}
    for name in start:
        np.testing.assert_allclose(ema[name], 0.75 * start[name] + 0.25 * trained[name], rtol=1e-6)
    with train_step.ema_weights_swapped():
        for name, value in state(train_step.network).items():
            np.testing.assert_array_equal(value, ema[name])
    for name, value in state(train_step.network).items():
        np.testing.assert_array_equal(value, trained[name])


def test_fixed_unit_scale_ignores_a_restored_loss_scale():
    """With a fixed loss scale of 1 (no gradient division), a loss_scale value restored from another run's
    checkpoint (say a dynamic-scale O2 run) must not scale the gradients."""
    reference, restored = tiny_step("sgd", lr=0.1), tiny_step("sgd", lr=0.1)  # SGD: not scale-invariant
    restored.loss_scale.set_data(ms.Tensor(65536.0, ms.float32))
    results = [call(step) for step in (reference, restored)]
    assert results[0] == results[1] and results[1][2] == 1.0
    for name, value in state(reference.optimizer).items():
        np.testing.assert_allclose(state(restored.optimizer)[name], value, rtol=1e-6)


def test_checkpoint_of_the_train_step_resumes_exactly(tmp_path):
    options = dict(loss_scale_type="dynamic", loss_scale=8.0, loss_scale_window=1, drop_overflow_update=True,
                   ema=True, ema_decay=0.9, gradient_accumulation_steps=2, weight_decay=0.05)
    batches = [(IMAGES[i:i + 4], LABELS[i:i + 4]) for i in (0, 4, 2, 4, 0, 2)]
    uninterrupted = tiny_step(**options)
    for batch in batches:
        call(uninterrupted, *batch)

    first = tiny_step(**options)
    for batch in batches[:3]:  # stop inside an accumulation window
        call(first, *batch)
    path = os.path.join(tmp_path, "state.ckpt")
    ms.save_checkpoint(first, path)
    names = set(ms.load_checkpoint(path))
    assert {"loss_scale", "current_iterator_step", "last_overflow_iterator_step", "global_step", "beta1_power",
            "adam_m.0.weight", "adam_v.2.bias", "accum.0.weight", "window_overflow", "ema.2.weight",
            "0.weight"} <= names
    # what a fine-tune from this file takes as weights: the network's, nothing of the train step's state
    assert {n for n in names if not is_training_state(n)} == {p.name for p in first.network.get_parameters()}

    resumed = tiny_step(**dict(options, loss_scale=1.0))
    assert not ms.load_param_into_net(resumed, ms.load_checkpoint(path))[0]  # nothing left unloaded
    for batch in batches[3:]:
        call(resumed, *batch)
    expected = state(uninterrupted)
    for name, value in state(resumed).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


def test_a_checkpoint_from_before_the_carried_window_overflow_resumes(tmp_path):
    """Resumable checkpoints of accumulating runs written before window_overflow existed hold none: they resume,
    with nothing carried into the window."""
    first = tiny_step(gradient_accumulation_steps=2)
    call(first)
    call(first)
    old = [{"name": p.name, "data": p.data} for p in first.get_parameters() if p.name != WINDOW_OVERFLOW]
    path = str(tmp_path / "older.ckpt")
    ms.save_checkpoint(old, path, append_dict={EPOCH_KEY: 1, STEP_KEY: 0})
    resumed = tiny_step(gradient_accumulation_steps=2)
    assert restore(resumed, path) == (1, 0)
    expected = state(first)
    for name, value in state(resumed).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    assert not resumed.window_overflow.asnumpy()


def test_amp_o2_runs_on_cpu_with_layernorm_in_float32():
    ms.set_context(mode=ms.GRAPH_MODE)
    model = create_model("convnext_atto", num_classes=3, depths=(1, 1, 1, 1), dims=(8, 8, 8, 8))
    optimizer = create_optimizer(model, "adamw", lr=1e-3)
    train_step = create_train_step(model, create_loss("ce"), optimizer, amp_level="O2", loss_scale_type="auto",
                                   loss_scale=1024.0, drop_overflow_update=True)
    assert train_step.dynamic_loss_scale
    layer_norms = [c for _, c in model.cells_and_names() if isinstance(c, nn.LayerNorm)]
    assert layer_norms and all(c.get_mixed_precision_type().name == "FP32" for c in layer_norms)
    assert model.get_mixed_precision_type().name == "FP16"
    images = RNG.normal(size=(2, 3, 32, 32)).astype(np.float32)
    losses = [call(train_step, images, np.array([0, 2], np.int32)) for _ in range(3)]
    assert all(np.isfinite(loss) and not overflow for loss, overflow, _ in losses)
    assert losses[2][0] < losses[0][0]
    assert all(p.dtype == ms.float32 for p in model.trainable_params())


def test_bad_arguments():
    with pytest.raises(ValueError, match="loss_scale_type"):
        tiny_step(loss_scale_type="static")
    with pytest.raises(ValueError, match="amp_level"):
        tiny_step(amp_level="O4")


def test_overflow_check_follows_the_back_end():
    """mindcv's AllFinite kernel only on the CPU with the fast kernels on and float32 gradients; MindSpore's own
    amp.all_finite (NPU float status on 910A) on Ascend and GPU, and on the CPU's device path."""
    assert select_overflow_check("CPU", True, True) == "cpu_kernel"
    for device, fast, float32 in [("Ascend", True, True), ("GPU", True, True), ("CPU", False, True),
                                  ("CPU", True, False), ("Ascend", False, False)]:
        assert select_overflow_check(device, fast, float32) == "mindspore"


def test_device_path_calls_mindspores_all_finite(monkeypatch):
    """With the fast kernels off, the step's overflow flag comes from mindspore.amp.all_finite (PyNative, so the
    call is seen); an overflow it reports skips the update and halves the scale."""
    calls = []
    original = ms.amp.all_finite

    def recording(inputs):
        calls.append(len(inputs))
        return original(inputs)

    monkeypatch.setattr(ms.amp, "all_finite", recording)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        with fast_cpu_ops(False):
            network = nn.SequentialCell(nn.Dense(4, 8), nn.GELU(approximate=False), nn.Dense(8, 3))
            train_step = create_train_step(network, create_loss("ce"), create_optimizer(network, "adamw", lr=0.01),
                                           loss_scale_type="dynamic", loss_scale=2.0 ** 100,
                                           drop_overflow_update=True)
        assert train_step.all_finite is None  # MindSpore's check
        start = state(train_step.network)
        loss, overflow, _ = call(train_step, IMAGES * 1e20)
        assert calls == [4] and overflow and np.isfinite(loss)  # 4 gradients: two Dense layers' weight and bias
        assert all(np.array_equal(v, state(train_step.network)[k]) for k, v in start.items())
        assert float(train_step.loss_scale.asnumpy()) == 2.0 ** 99
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def test_dynamic_loss_scale_never_grows_past_its_cap():
    """Growth is min(scale x factor, 2^24): from below the cap it reaches the cap and stays there however many
    clean windows follow, so it can never become inf and skip every later update."""
    train_step = tiny_step(loss_scale_type="dynamic", loss_scale=0.75 * LOSS_SCALE_CAP, drop_overflow_update=True,
                           loss_scale_window=1)
    scales = [call(train_step)[2] for _ in range(5)]
    # the first call (iterator step 0) is no window after the start; x2 after the second would give 1.5 x cap
    assert scales == [0.75 * LOSS_SCALE_CAP] * 2 + [LOSS_SCALE_CAP] * 3
    assert float(train_step.loss_scale.asnumpy()) == LOSS_SCALE_CAP
    train_step.loss_scale.set_data(ms.Tensor(LOSS_SCALE_CAP, ms.float32))
    poisoned = IMAGES.copy()
    poisoned[0, 0] = np.nan
    call(train_step, poisoned)  # an overflow still halves it
    assert float(train_step.loss_scale.asnumpy()) == LOSS_SCALE_CAP / 2


class SaturatingStatusStep(TrainStep):
    """A train step on a chip in saturation mode (910A; 910B with SATURATION_MODE), simulated: fp16 overflow is
    clamped, so the gradients stay finite and only the float status register tells; reading it clears it. The
    register is a Parameter the test raises before a call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.status_register = Parameter(Tensor(False), name="stand_in.status_register", requires_grad=False)

    def _grads_finite(self, grads):
        raised = ops.depend(self.status_register, grads) * 1  # read after the gradients exist, then clear
        ops.assign(self.status_register, ops.depend(Tensor(False), raised))
        return ops.logical_and(ops.logical_not(raised), super()._grads_finite(grads))


def saturating_step():
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    network = nn.SequentialCell(nn.Dense(4, 8), nn.GELU(approximate=False), nn.Dense(8, 3))
    optimizer = create_optimizer(network, "adamw", lr=0.01, weight_decay=0.0)
    return SaturatingStatusStep(network, create_loss("ce"), optimizer, loss_scale_type="dynamic", loss_scale=1024.0,
                                drop_overflow_update=True, gradient_accumulation_steps=2).set_train(True)


def test_accumulation_carries_an_overflow_only_the_status_register_saw(tmp_path):
    """Saturation mode: micro-batch 1 of a 2-step window overflows in fp16 (the register says so, the clamped
    gradients are finite), micro-batch 2 is clean. The window is skipped and the scale halves, also when the run
    stops inside the window and resumes from its checkpoint; the next clean window updates."""
    train_step = saturating_step()
    start = state(train_step.network)
    train_step.status_register.set_data(Tensor(True))
    _, overflow, _ = call(train_step, IMAGES[:4], LABELS[:4])
    assert overflow and not train_step.status_register.asnumpy()  # read and cleared
    path = os.path.join(tmp_path, "inside_the_window.ckpt")
    ms.save_checkpoint(train_step, path)
    resumed = saturating_step()
    assert not ms.load_param_into_net(resumed, ms.load_checkpoint(path))[0]
    for step in (train_step, resumed):
        _, overflow, _ = call(step, IMAGES[4:], LABELS[4:])
        assert not overflow  # this micro-batch is clean, the window is not
        assert all(np.array_equal(v, state(step.network)[k]) for k, v in start.items())  # skipped
        assert float(step.loss_scale.asnumpy()) == 512.0 and step.optimizer.global_step.asnumpy()[0] == 1
        assert not step.window_overflow.asnumpy()  # the next window starts clean
        call(step, IMAGES[:4], LABELS[:4])
        call(step, IMAGES[4:], LABELS[4:])
        assert not all(np.array_equal(v, state(step.network)[k]) for k, v in start.items())
        assert float(step.loss_scale.asnumpy()) == 512.0 and step.optimizer.global_step.asnumpy()[0] == 2


def test_a_window_whose_sum_overflows_is_skipped():
    """Two micro-batches with finite float32 gradients of 3e38 each: their sum is inf, so the window is skipped by
    the check of the sums, which the carried per-micro-batch flags do not replace."""
    ms.set_context(mode=ms.GRAPH_MODE)
    layer = nn.Dense(1, 2, weight_init=Tensor(np.array([[1e-37], [-1e-37]], np.float32)), bias_init="zeros")
    train_step = create_train_step(layer, create_loss("ce"), create_optimizer(layer, "sgd", lr=1.0, momentum=0.0),
                                   drop_overflow_update=True, gradient_accumulation_steps=2)
    start = state(layer)
    flags = [call(train_step, np.array([[3e38]], np.float32), np.array([1], np.int32))[1] for _ in range(2)]
    assert flags == [False, False]  # each micro-batch is finite
    assert all(np.array_equal(v, state(layer)[k]) for k, v in start.items())
    assert train_step.optimizer.global_step.asnumpy()[0] == 1
