"""create_scheduler and dynamic_lr: exact per-step values, each expected value written from the schedule's rule
(closed form, or literal numbers worked out by hand), never from the code's own output."""
import math

import pytest

from mindcv.scheduler import SCHEDULERS, create_scheduler, dynamic_lr


def cosine(t, period, low, high):
    return low + (high - low) * (1 + math.cos(math.pi * t / period)) / 2


def triangle(i, half):
    """0 at i = 0, 1 at i = half, 0 at i = 2 * half, ... (the unit CyclicLR wave)."""
    return 1 - abs((i / half) % 2 - 1)


# ---- create_scheduler ----

def test_cosine_decay_after_warmup():
    # 4 steps/epoch, 2 warm-up epochs (8 steps), 4 decay epochs (16 steps), 10 epochs in all
    lr, min_lr, factor = 0.002, 3e-7, 0.1
    values = create_scheduler(4, "cosine_decay", lr=lr, min_lr=min_lr, warmup_epochs=2, warmup_factor=factor,
                              decay_epochs=4, num_epochs=10)
    assert len(values) == 40
    assert values[0] == pytest.approx(factor * lr, rel=1e-12)
    assert values[4] == pytest.approx(lr * (factor + (1 - factor) * 4 / 8), rel=1e-12)
    assert values[8] == pytest.approx(lr, rel=1e-12)  # warm-up ends exactly at lr
    assert values[12] == pytest.approx(min_lr + (lr - min_lr) * (1 + math.cos(math.pi * 4 / 16)) / 2, rel=1e-12)
    assert values[16] == pytest.approx((lr + min_lr) / 2, rel=1e-12)  # half-way through the decay epochs
    assert values[24] == pytest.approx(min_lr, rel=1e-12)  # decay_epochs after warm-up
    assert values[39] == pytest.approx(min_lr, rel=1e-12)  # and stays there


def test_cosine_decay_cycles_restart_at_decayed_peaks():
    # 2 steps/epoch, 1 warm-up epoch, cycles of 2 epochs (4 steps), 3 cycles, each peak 0.5 x the previous one
    lr, min_lr = 1.0, 0.1
    values = create_scheduler(2, "cosine_decay", lr=lr, min_lr=min_lr, warmup_epochs=1, decay_epochs=2,
                              num_epochs=10, num_cycles=3, cycle_decay=0.5)
    expected = [0.0, 0.5]
    for cycle in range(3):
        expected += [cosine(t, 4, min_lr, lr * 0.5 ** cycle) for t in range(4)]
    expected += [min_lr] * 6  # after the last cycle
    assert values == pytest.approx(expected, rel=1e-12)
    assert create_scheduler(2, "warmup_cosine_decay", lr=lr, min_lr=min_lr, warmup_epochs=1, decay_epochs=2,
                            num_epochs=10, num_cycles=3, cycle_decay=0.5) == values


def test_epoch_stair_holds_each_epoch():
    values = create_scheduler(3, "cosine_decay", lr=1.0, min_lr=0.0, warmup_epochs=1, warmup_factor=0.0,
                              decay_epochs=2, num_epochs=3, lr_epoch_stair=True)
    assert values == pytest.approx([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5], abs=1e-12)


def test_constant_with_warmup():
    values = create_scheduler(2, "constant", lr=0.1, warmup_epochs=1, warmup_factor=0.5, num_epochs=3)
    assert values == pytest.approx([0.05, 0.075, 0.1, 0.1, 0.1, 0.1], rel=1e-12)


def test_mindcv_defaults_and_positional_order():
    # defaults: constant 0.01, 3 warm-up epochs from 0, 200 epochs
    values = create_scheduler(2)
    assert len(values) == 400
    assert values[:7] == pytest.approx([0.01 * i / 6 for i in range(6)] + [0.01], rel=1e-12)
    assert set(values[6:]) == {0.01}
    # MindCV's order: steps, scheduler, lr, min_lr, warmup_epochs, warmup_factor, decay_epochs, decay_rate,
    # milestones, num_epochs, num_cycles, cycle_decay, lr_epoch_stair
    positional = create_scheduler(3, "cosine_decay", 0.1, 0.001, 1, 0.2, 2, 0.9, None, 6, 2, 0.5, True)
    keywords = create_scheduler(3, scheduler="cosine_decay", lr=0.1, min_lr=0.001, warmup_epochs=1, warmup_factor=0.2,
                                decay_epochs=2, num_epochs=6, num_cycles=2, cycle_decay=0.5, lr_epoch_stair=True)
    assert positional == keywords


def test_step_decay_counts_after_warmup():
    values = create_scheduler(2, "step_decay", lr=1.0, warmup_epochs=1, decay_epochs=2, decay_rate=0.5, num_epochs=6)
    assert values == pytest.approx([0.0, 0.5] + [1.0] * 4 + [0.5] * 4 + [0.25] * 2, rel=1e-12)


def test_multi_step_decay_milestones_from_start():
    values = create_scheduler(2, "multi_step_decay", lr=1.0, warmup_epochs=0, milestones=[1, 3], decay_rate=0.1,
                              num_epochs=4)
    assert values == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01], rel=1e-12)


def test_multi_step_decay_milestones_include_the_warmup():
    # milestone 2 is the end of epoch 1 of training, i.e. the first decay epoch after a 1-epoch warm-up
    values = create_scheduler(2, "multi_step_decay", lr=1.0, warmup_epochs=1, milestones=[2], decay_rate=0.1,
                              num_epochs=3)
    assert values == pytest.approx([0.0, 0.5, 1.0, 1.0, 0.1, 0.1], rel=1e-12)


@pytest.mark.parametrize("stair", [False, True])
def test_exponential_decay_per_epoch_after_warmup(stair):
    # lr * decay_rate ** (epochs since warm-up), whole epochs with lr_epoch_stair
    values = create_scheduler(4, "exponential_decay", lr=0.5, warmup_epochs=1, decay_rate=0.8, num_epochs=4,
                              lr_epoch_stair=stair)
    epochs_after = [(i - 4) // 4 if stair else (i - 4) / 4 for i in range(4, 16)]
    assert values[4:] == pytest.approx([0.5 * 0.8 ** e for e in epochs_after], rel=1e-12)


def test_polynomial_decay_reaches_zero_at_the_end():
    # power decay_rate, over the 3 epochs (12 steps) after a 1-epoch warm-up
    values = create_scheduler(4, "polynomial_decay", lr=0.5, warmup_epochs=1, decay_rate=2.0, num_epochs=4)
    assert values[4:] == pytest.approx([0.5 * (1 - t / 12) ** 2 for t in range(12)], rel=1e-12)


def test_one_cycle_is_pytorch_one_cycle_to_min_lr():
    # 10 steps: cosine from lr / 25 to lr over steps 0..2 (0.3 * 10 - 1), then cosine down to min_lr at step 9
    lr, min_lr = 1.0, 0.001
    values = create_scheduler(2, "one_cycle", lr=lr, min_lr=min_lr, warmup_epochs=0, num_epochs=5)
    expected = [cosine(i, 2, lr, lr / 25) for i in range(3)] + [cosine(i - 2, 7, min_lr, lr) for i in range(3, 10)]
    assert values == pytest.approx(expected, rel=1e-12)
    assert values[0] == pytest.approx(0.04) and values[2] == pytest.approx(lr) and values[9] == pytest.approx(min_lr)


def test_cyclic_is_num_cycles_triangles_over_the_run():
    # 12 steps, 2 cycles: half-cycles of int(12 / 2 / 2) = 3 steps between min_lr and lr
    values = create_scheduler(3, "cyclic", lr=1.0, min_lr=0.25, warmup_epochs=0, num_epochs=4, num_cycles=2)
    assert values == pytest.approx([0.25 + 0.75 * triangle(i, 3) for i in range(12)], rel=1e-12)


def test_every_scheduler_has_the_run_length():
    for scheduler in SCHEDULERS:
        kwargs = dict(milestones=[2], warmup_epochs=0 if scheduler in ("one_cycle", "cyclic") else 1)
        assert len(create_scheduler(3, scheduler, num_epochs=5, **kwargs)) == 15


@pytest.mark.parametrize("kwargs, message", [
    (dict(scheduler="onecycle", num_epochs=2), "unknown scheduler"),
    (dict(scheduler="constant", num_epochs=0), "num_epochs"),
    (dict(scheduler="multi_step_decay", num_epochs=2), "milestones"),
    (dict(scheduler="cosine_decay", decay_epochs=0, num_epochs=2), "decay_epochs"),
    (dict(scheduler="cosine_decay", num_cycles=0, num_epochs=2), "num_cycles"),
    (dict(scheduler="constant", lr=-0.1, num_epochs=2), "lr must be >= 0"),
    (dict(scheduler="cosine_decay", min_lr=-1e-6, num_epochs=2), "min_lr must be >= 0"),
    (dict(scheduler="one_cycle", num_epochs=5), "warmup_epochs"),
    (dict(scheduler="cyclic", warmup_epochs=0, num_cycles=4, num_epochs=2), "cycles do not fit"),
    (dict(scheduler="polynomial_decay", warmup_epochs=2, num_epochs=2), "num_epochs > warmup_epochs"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_scheduler(2, **kwargs)


# ---- dynamic_lr (PyTorch's rules; e = whole epoch, f = fractional epoch of step i with 2 steps per epoch) ----

STEPS, EPOCHS = 2, 6
WHOLE = [i // STEPS for i in range(STEPS * EPOCHS)]
FRACTIONAL = [i / STEPS for i in range(STEPS * EPOCHS)]


@pytest.mark.parametrize("name, args, kwargs, expected", [
    ("constant_lr", (0.5, 2), dict(lr=0.1), [0.05] * 4 + [0.1] * 8),
    ("linear_lr", (0.5, 1.0, 4), dict(lr=0.1), [0.1 * (0.5 + 0.5 * min(e, 4) / 4) for e in WHOLE]),
    ("linear_refined_lr", (0.5, 1.0, 4), dict(lr=0.1), [0.1 * (0.5 + 0.5 * min(f, 4) / 4) for f in FRACTIONAL]),
    ("polynomial_lr", (4, 2.0), dict(lr=0.1), [0.1 * (1 - min(e, 4) / 4) ** 2 for e in WHOLE]),
    ("polynomial_refined_lr", (4, 2.0), dict(lr=0.1), [0.1 * (1 - min(f, 4) / 4) ** 2 for f in FRACTIONAL]),
    ("exponential_lr", (0.9,), dict(lr=0.1), [0.1 * 0.9 ** e for e in WHOLE]),
    ("exponential_refined_lr", (0.9,), dict(lr=0.1), [0.1 * 0.9 ** f for f in FRACTIONAL]),
    ("step_lr", (4, 0.5), dict(lr=0.1), [0.1] * 8 + [0.05] * 4),
    ("multi_step_lr", ([4, 1], 0.5), dict(lr=0.1), [0.1] * 2 + [0.05] * 6 + [0.025] * 4),
    ("cosine_decay_lr", (4, 0.01), dict(eta_max=0.1), [cosine(min(e, 4), 4, 0.01, 0.1) for e in WHOLE]),
    ("cosine_decay_refined_lr", (4, 0.01), dict(eta_max=0.1),
     [cosine(min(f, 4), 4, 0.01, 0.1) for f in FRACTIONAL]),
    ("cosine_decay_lr", (2, 0.0), dict(eta_max=1.0, num_cycles=2, cycle_decay=0.5),
     [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.0, 0.0, 0.0, 0.0]),
    # PyTorch's closed form goes back up after t_max
    ("cosine_annealing_lr", (4, 0.0), dict(eta_max=1.0), [cosine(e, 4, 0.0, 1.0) for e in WHOLE]),
    # periods of 1, 2, 4 epochs: restarts at epochs 1 and 3
    ("cosine_annealing_warm_restarts_lr", (1, 2, 0.0), dict(eta_max=1.0),
     [cosine(f, 1, 0, 1) if f < 1 else cosine(f - 1, 2, 0, 1) if f < 3 else cosine(f - 3, 4, 0, 1)
      for f in FRACTIONAL]),
])
def test_epoch_rules(name, args, kwargs, expected):
    values = getattr(dynamic_lr, name)(*args, steps_per_epoch=STEPS, epochs=EPOCHS, **kwargs)
    assert values == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_one_cycle_lr_linear_three_phase():
    # 20 steps, pct 0.25: 0.04 -> 1 over steps 0..4, 1 -> 0.04 over steps 4..8, 0.04 -> 0.04 / 100 over 8..19
    values = dynamic_lr.one_cycle_lr(1.0, 0.25, "linear", 25.0, 100.0, True, steps_per_epoch=4, epochs=5)
    expected = ([0.04 + 0.96 * i / 4 for i in range(5)] + [1 - 0.96 * (i - 4) / 4 for i in range(5, 9)]
                + [0.04 + (0.0004 - 0.04) * (i - 8) / 11 for i in range(9, 20)])
    assert values == pytest.approx(expected, rel=1e-12)


def test_one_cycle_lr_pytorch_defaults():
    # 10 steps: cosine 0.04 -> 1 over steps 0..2, then cosine 1 -> 0.04 / 1e4 over steps 2..9
    values = dynamic_lr.one_cycle_lr(1.0, steps_per_epoch=5, epochs=2)
    expected = [cosine(i, 2, 1.0, 0.04) for i in range(3)] + [cosine(i - 2, 7, 4e-6, 1.0) for i in range(3, 10)]
    assert values == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kwargs, amplitude", [
    (dict(mode="triangular"), lambda i: 1.0),
    (dict(mode="triangular2"), lambda i: 0.5 ** (i // 4)),  # halved every cycle (4 steps)
    (dict(mode="exp_range", gamma=0.9), lambda i: 0.9 ** i),  # gamma ** step
    (dict(scale_fn=lambda cycle: 1 / cycle), lambda i: 1 / (i // 4 + 1)),  # custom, per cycle number
    (dict(scale_fn=lambda step: 1 / (step + 1), scale_mode="iterations"), lambda i: 1 / (i + 1)),
])
def test_cyclic_lr_modes(kwargs, amplitude):
    values = dynamic_lr.cyclic_lr(0.1, 1.1, 2, **kwargs, steps_per_epoch=4, epochs=3)
    assert values == pytest.approx([0.1 + triangle(i, 2) * amplitude(i) for i in range(12)], rel=1e-12)


def test_cyclic_lr_asymmetric_triangle():
    # 1 step up, 3 steps down
    values = dynamic_lr.cyclic_lr(0.0, 1.0, 1, 3, steps_per_epoch=4, epochs=2)
    assert values == pytest.approx([0.0, 1.0, 2 / 3, 1 / 3] * 2, abs=1e-12)


def test_dynamic_lr_rejects_negative_rates():
    with pytest.raises(ValueError, match="lr must be >= 0"):
        dynamic_lr.exponential_lr(0.9, lr=-0.1, steps_per_epoch=2, epochs=2)
    with pytest.raises(ValueError, match="eta_min must be >= 0"):
        dynamic_lr.cosine_decay_lr(2, -0.1, eta_max=1.0, steps_per_epoch=2, epochs=2)
