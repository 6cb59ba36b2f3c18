"""Learning-rate schedules as per-step lists: `create_scheduler`.

Every schedule is a linear warm-up followed by a decay phase. With S = steps_per_epoch, W = warmup_epochs * S
warm-up steps, and step i counted from 0 over the whole run (S * num_epochs values):

- warm-up, i < W: lr * (warmup_factor + (1 - warmup_factor) * i / W), rising from warmup_factor * lr
  towards lr (lr itself is reached at i = W);
- decay phase, t = i - W (steps after warm-up; with lr_epoch_stair, t is rounded down to a whole epoch,
  and the warm-up uses whole epochs likewise, so the value changes once per epoch):
  - "constant": lr;
  - "cosine_decay": min_lr + (lr - min_lr) * (1 + cos(pi * min(t, D) / D)) / 2 with D = decay_epochs * S:
    lr right after warm-up, min_lr after decay_epochs more epochs, then stays at min_lr (MindCV's meaning:
    decay_epochs counts after the warm-up);
  - "step_decay": lr * decay_rate ** floor(t / D), D = decay_epochs * S (min_lr unused);
  - "multi_step_decay": lr * decay_rate ** (number of milestones m with m * S <= i); milestones are epochs
    counted from the start of training, warm-up included, as in PyTorch's MultiStepLR (min_lr unused).
"""
import math
from typing import List, Optional, Sequence

SCHEDULERS = ("constant", "cosine_decay", "step_decay", "multi_step_decay")


def create_scheduler(steps_per_epoch: int, scheduler: str = "constant", lr: float = 0.01, min_lr: float = 1e-6,
                     warmup_epochs: float = 3, warmup_factor: float = 0.0, decay_epochs: float = 10,
                     decay_rate: float = 0.9, milestones: Optional[Sequence[int]] = None,
                     num_epochs: Optional[int] = None, lr_epoch_stair: bool = False) -> List[float]:
    """Per-step learning rates for a whole run (see the module docstring for the formulas).

    Args:
        steps_per_epoch: optimizer updates per epoch (batches per epoch // gradient accumulation steps).
        scheduler: one of "constant", "cosine_decay", "step_decay", "multi_step_decay". Default "constant".
        lr: peak learning rate. Default 0.01.
        min_lr: final learning rate of cosine decay. Default 1e-6.
        warmup_epochs: epochs of linear warm-up (may be fractional; 0 disables). Default 3.
        warmup_factor: the warm-up starts at warmup_factor * lr. Default 0.0.
        decay_epochs: cosine: epochs from the end of warm-up to min_lr; step_decay: epochs between decays.
            Default 10.
        decay_rate: multiplier per decay of step_decay / multi_step_decay. Default 0.9.
        milestones: epochs (from the start of training) at which multi_step_decay multiplies by decay_rate.
        num_epochs: epochs of the run; required.
        lr_epoch_stair: hold each epoch's value for all its steps (value of the epoch's first step). Default False.

    Returns: a list of steps_per_epoch * num_epochs floats; entry i is the lr of update i.
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {SCHEDULERS}")
    if num_epochs is None or num_epochs <= 0 or steps_per_epoch <= 0:
        raise ValueError(f"num_epochs and steps_per_epoch must be positive, got {num_epochs}, {steps_per_epoch}")
    if scheduler == "multi_step_decay" and not milestones:
        raise ValueError("multi_step_decay needs milestones (epochs)")
    if scheduler in ("cosine_decay", "step_decay") and decay_epochs <= 0:
        raise ValueError(f"{scheduler} needs decay_epochs > 0, got {decay_epochs}")
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    decay_steps = decay_epochs * steps_per_epoch
    milestone_steps = sorted(m * steps_per_epoch for m in (milestones or ()))

    def stair(step: int) -> int:
        return step - step % steps_per_epoch if lr_epoch_stair else step

    values = []
    for i in range(steps_per_epoch * num_epochs):
        if i < warmup_steps:
            values.append(lr * (warmup_factor + (1.0 - warmup_factor) * stair(i) / warmup_steps))
            continue
        t = stair(i - warmup_steps)
        if scheduler == "constant":
            values.append(lr)
        elif scheduler == "cosine_decay":
            values.append(min_lr + (lr - min_lr) * (1.0 + math.cos(math.pi * min(t, decay_steps) / decay_steps)) / 2)
        elif scheduler == "step_decay":
            values.append(lr * decay_rate ** math.floor(t / decay_steps))
        else:
            passed = sum(1 for m in milestone_steps if m <= stair(i))
            values.append(lr * decay_rate ** passed)
    return values
