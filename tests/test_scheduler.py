"""create_scheduler: exact per-step values of warm-up and each decay."""
import math

import pytest

from mindcv.scheduler import create_scheduler


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


def test_epoch_stair_holds_each_epoch():
    values = create_scheduler(3, "cosine_decay", lr=1.0, min_lr=0.0, warmup_epochs=1, warmup_factor=0.0,
                              decay_epochs=2, num_epochs=3, lr_epoch_stair=True)
    assert values == pytest.approx([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5], abs=1e-12)


def test_constant_with_warmup():
    values = create_scheduler(2, "constant", lr=0.1, warmup_epochs=1, warmup_factor=0.5, num_epochs=3)
    assert values == pytest.approx([0.05, 0.075, 0.1, 0.1, 0.1, 0.1], rel=1e-12)


def test_step_decay_counts_after_warmup():
    values = create_scheduler(2, "step_decay", lr=1.0, warmup_epochs=1, decay_epochs=2, decay_rate=0.5, num_epochs=6)
    assert values == pytest.approx([0.0, 0.5] + [1.0] * 4 + [0.5] * 4 + [0.25] * 2, rel=1e-12)


def test_multi_step_decay_milestones_from_start():
    values = create_scheduler(2, "multi_step_decay", lr=1.0, warmup_epochs=0, milestones=[1, 3], decay_rate=0.1,
                              num_epochs=4)
    assert values == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01], rel=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(scheduler="one_cycle", num_epochs=2), "unknown scheduler"),
    (dict(scheduler="constant"), "num_epochs"),
    (dict(scheduler="multi_step_decay", num_epochs=2), "milestones"),
    (dict(scheduler="cosine_decay", decay_epochs=0, num_epochs=2), "decay_epochs"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_scheduler(2, **kwargs)
