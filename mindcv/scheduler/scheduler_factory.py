"""`create_scheduler`: a whole run's per-step learning rates by MindCV's schedule names and arguments.

Every schedule is a linear warm-up followed by a decay phase. With S = steps_per_epoch, W = round(warmup_epochs * S)
warm-up steps, and step i counted from 0 over the whole run (S * num_epochs values):

- warm-up, i < W: lr * (warmup_factor + (1 - warmup_factor) * i / W), rising from warmup_factor * lr towards lr
  (lr itself is reached at i = W);
- decay phase, t = (i - W) / S epochs after the warm-up (with lr_epoch_stair, t is rounded down to whole epochs,
  and the warm-up uses whole epochs likewise, so the value changes once per epoch), D = decay_epochs,
  T = num_epochs - W / S (the decay phase's length):
  - "constant": lr;
  - "cosine_decay" ("warmup_cosine_decay" is the same): num_cycles cosine decays of D epochs; cycle c = floor(t / D)
    follows min_lr + (lr * cycle_decay ** c - min_lr) * (1 + cos(pi * (t - c * D) / D)) / 2, so the first starts
    at lr right after warm-up and each restart peaks at cycle_decay times the previous peak; min_lr after the last
    cycle (MindCV's meaning: decay_epochs count after the warm-up);
  - "exponential_decay": lr * decay_rate ** t (decay_rate per epoch; decay_epochs unused, as in MindCV);
  - "polynomial_decay": lr * (1 - t / T) ** decay_rate: to 0 at the end of the run (decay_rate is the power);
  - "step_decay": lr * decay_rate ** floor(t / D) (min_lr unused);
  - "multi_step_decay": lr * decay_rate ** (number of milestones m with m <= t + W / S); milestones are epochs
    counted from the start of training, warm-up included, as in PyTorch's MultiStepLR (min_lr unused);
  - "one_cycle": PyTorch's OneCycleLR over the run's steps, cosine from lr / 25 up to lr over the first 30% of
    the steps, then down to min_lr (no warm-up of its own: warmup_epochs must be 0);
  - "cyclic": PyTorch's CyclicLR, "triangular": num_cycles triangles min_lr -> lr -> min_lr over the run, each
    half int(S * num_epochs / num_cycles / 2) steps (warmup_epochs must be 0).
"""
import math
from bisect import bisect_right
from typing import Callable, List, Optional, Sequence

from .dynamic_lr import _cosine_decay, _cyclic, _cyclic_scale, _linear, _one_cycle, _polynomial

SCHEDULERS = ("constant", "cosine_decay", "warmup_cosine_decay", "exponential_decay", "polynomial_decay",
              "step_decay", "multi_step_decay", "one_cycle", "cyclic")


def _check(scheduler: str, lr: float, min_lr: float, warmup_epochs: float, decay_epochs: float, decay_rate: float,
           milestones: Optional[Sequence[int]], decay_phase_steps: int, num_cycles: int, cycle_decay: float) -> None:
    """ValueError for arguments that would give no schedule, a negative learning rate or a silent no-op."""
    for name, value in dict(lr=lr, min_lr=min_lr, warmup_epochs=warmup_epochs, decay_rate=decay_rate,
                            cycle_decay=cycle_decay).items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if scheduler == "multi_step_decay" and not milestones:
        raise ValueError("multi_step_decay needs milestones (epochs)")
    if scheduler in ("cosine_decay", "warmup_cosine_decay", "step_decay") and decay_epochs <= 0:
        raise ValueError(f"{scheduler} needs decay_epochs > 0, got {decay_epochs}")
    if scheduler in ("cosine_decay", "warmup_cosine_decay", "cyclic") and num_cycles < 1:
        raise ValueError(f"{scheduler} needs num_cycles >= 1, got {num_cycles}")
    if scheduler in ("one_cycle", "cyclic") and warmup_epochs > 0:
        raise ValueError(f"{scheduler} rises from a low learning rate itself: set warmup_epochs to 0")
    if scheduler == "polynomial_decay" and decay_phase_steps < 1:
        raise ValueError("polynomial_decay needs num_epochs > warmup_epochs")
    if scheduler == "one_cycle" and 0.3 * decay_phase_steps <= 1:
        raise ValueError(f"one_cycle needs at least 4 steps, got {decay_phase_steps}")
    if scheduler == "cyclic" and decay_phase_steps < 2 * num_cycles:
        raise ValueError(f"cyclic: {num_cycles} cycles do not fit in {decay_phase_steps} steps")


def _decay_rule(scheduler: str, steps_per_epoch: int, lr: float, min_lr: float, warmup_steps: int, decay_epochs: float,
                decay_rate: float, milestones: Optional[Sequence[int]], decay_phase_steps: int, num_cycles: int,
                cycle_decay: float) -> Callable[[int], float]:
    """The decay phase as a function of the steps since the end of the warm-up (see the module docstring)."""
    decay_steps = decay_epochs * steps_per_epoch
    if scheduler == "constant":
        return lambda t: lr
    if scheduler in ("cosine_decay", "warmup_cosine_decay"):
        return lambda t: _cosine_decay(t, decay_steps, min_lr, lr, num_cycles, cycle_decay)
    if scheduler == "exponential_decay":
        return lambda t: lr * decay_rate ** (t / steps_per_epoch)
    if scheduler == "polynomial_decay":
        return lambda t: _polynomial(t, lr, decay_phase_steps, decay_rate)
    if scheduler == "step_decay":
        return lambda t: lr * decay_rate ** math.floor(t / decay_steps)
    if scheduler == "multi_step_decay":
        milestone_steps = sorted(m * steps_per_epoch for m in milestones)
        return lambda t: lr * decay_rate ** bisect_right(milestone_steps, t + warmup_steps)
    if scheduler == "one_cycle":
        # MindCV's settings: PyTorch's defaults, the final rate min_lr
        return lambda t: _one_cycle(t, decay_phase_steps, lr / 25.0, lr, min_lr, 0.3, "cos", False)
    scale, scale_by_cycle = _cyclic_scale("triangular", 1.0)
    half_cycle = int(decay_phase_steps / num_cycles / 2)
    return lambda t: _cyclic(t, min_lr, lr, half_cycle, half_cycle, scale, scale_by_cycle)


def create_scheduler(steps_per_epoch: int, scheduler: str = "constant", lr: float = 0.01, min_lr: float = 1e-6,
                     warmup_epochs: float = 3, warmup_factor: float = 0.0, decay_epochs: float = 10,
                     decay_rate: float = 0.9, milestones: Optional[Sequence[int]] = None, num_epochs: int = 200,
                     num_cycles: int = 1, cycle_decay: float = 1.0, lr_epoch_stair: bool = False) -> List[float]:
    """Per-step learning rates for a whole run (see the module docstring for the formulas). MindCV's argument
    names, order and defaults.

    Args:
        steps_per_epoch: optimizer updates per epoch (batches per epoch // gradient accumulation steps).
        scheduler: one of SCHEDULERS. Default "constant".
        lr: peak learning rate (>= 0). Default 0.01.
        min_lr: final learning rate of cosine_decay and one_cycle, lower bound of cyclic (>= 0). Default 1e-6.
        warmup_epochs: epochs of linear warm-up (may be fractional; 0 disables). Default 3.
        warmup_factor: the warm-up starts at warmup_factor * lr. Default 0.0.
        decay_epochs: cosine_decay: epochs of each cosine cycle, from the end of warm-up; step_decay: epochs
            between decays. Default 10.
        decay_rate: multiplier per decay of step_decay / multi_step_decay, per epoch of exponential_decay, the
            power of polynomial_decay. Default 0.9.
        milestones: epochs (from the start of training) at which multi_step_decay multiplies by decay_rate.
        num_epochs: epochs of the run. Default 200.
        num_cycles: cosine_decay: cosine cycles (restarts after each); cyclic: triangles. Default 1.
        cycle_decay: cosine_decay: each cycle's peak is cycle_decay times the previous one's. Default 1.0.
        lr_epoch_stair: hold each epoch's value for all its steps (value of the epoch's first step). Default False.

    Returns: a list of steps_per_epoch * num_epochs floats; entry i is the lr of update i.
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {SCHEDULERS}")
    if num_epochs is None or num_epochs <= 0 or steps_per_epoch <= 0:
        raise ValueError(f"num_epochs and steps_per_epoch must be positive, got {num_epochs}, {steps_per_epoch}")
    total_steps = steps_per_epoch * num_epochs
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    _check(scheduler, lr, min_lr, warmup_epochs, decay_epochs, decay_rate, milestones, total_steps - warmup_steps,
           num_cycles, cycle_decay)
    decay = _decay_rule(scheduler, steps_per_epoch, lr, min_lr, warmup_steps, decay_epochs, decay_rate, milestones,
                        total_steps - warmup_steps, num_cycles, cycle_decay)

    def stair(step: int) -> int:
        return step - step % steps_per_epoch if lr_epoch_stair else step

    return [float(_linear(stair(i), warmup_factor * lr, lr, warmup_steps) if i < warmup_steps
                  else decay(stair(i - warmup_steps))) for i in range(total_steps)]
