"""Per-step learning-rate lists following PyTorch's `torch.optim.lr_scheduler` rules (MindCV's `dynamic_lr`).

Every function returns `steps_per_epoch * epochs` floats: entry i is the learning rate of optimizer step i (counted
from 0). The positional arguments are those of the PyTorch scheduler of the same name, in PyTorch's order; the base
rate (`lr`, or `eta_max` for the cosine schedules), `steps_per_epoch` and `epochs` are keyword-only.

Epoch-based rules are evaluated at epoch e = floor(i / steps_per_epoch), so the value changes once per epoch, as
with a PyTorch scheduler stepped once per epoch. The `*_refined_lr` variants evaluate the same rule at the fractional
epoch e = i / steps_per_epoch: the value changes every step. `one_cycle_lr` and `cyclic_lr` count steps, as PyTorch's
OneCycleLR and CyclicLR (stepped every batch) do.

The rule functions (`_linear`, `_cosine_decay`, ...) take the position and the lengths in one unit (epochs or
steps, as the caller chooses); `create_scheduler` uses them too.
"""
import math
from bisect import bisect_right
from typing import Callable, List, Optional, Sequence, Tuple


def _schedule(rule: Callable[[float], float], steps_per_epoch: int, epochs: int, clock: str,
              **rates: float) -> List[float]:
    """rule(position of step i) for the steps_per_epoch * epochs steps i; the position is the whole epoch
    i // steps_per_epoch (clock "epoch"), the fractional epoch i / steps_per_epoch ("refined") or i ("step").
    `rates` are the learning rates and factors the rule uses: each must be >= 0 (a negative rate climbs the loss)."""
    for name, value in rates.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if steps_per_epoch <= 0 or epochs <= 0:
        raise ValueError(f"steps_per_epoch and epochs must be positive, got {steps_per_epoch}, {epochs}")
    position = {"epoch": lambda i: i // steps_per_epoch, "refined": lambda i: i / steps_per_epoch,
                "step": lambda i: i}[clock]
    return [float(rule(position(i))) for i in range(steps_per_epoch * epochs)]


# ---- rules: the learning rate at position t (epochs or steps; lengths in the same unit) ----

def _linear(t: float, start_lr: float, end_lr: float, length: float) -> float:
    """start_lr to end_lr linearly over `length`, then end_lr."""
    return start_lr + (end_lr - start_lr) * min(t, length) / length


def _polynomial(t: float, lr: float, length: float, power: float) -> float:
    """lr * (1 - t / length) ** power, 0 from `length` on."""
    return lr * (1.0 - min(t, length) / length) ** power


def _cosine(t: float, period: float, low: float, high: float) -> float:
    """Half a cosine from `high` at t = 0 to `low` at t = period (and back up after, as PyTorch's closed form)."""
    return low + (high - low) * (1.0 + math.cos(math.pi * t / period)) / 2.0


def _cosine_decay(t: float, decay_length: float, eta_min: float, eta_max: float, num_cycles: int,
                  cycle_decay: float) -> float:
    """num_cycles cosine decays of decay_length each, cycle c from eta_max * cycle_decay ** c down towards eta_min
    (restarting at the next cycle's peak); eta_min after the last cycle."""
    cycle = math.floor(t / decay_length)
    if cycle >= num_cycles:
        return eta_min
    return _cosine(t - cycle * decay_length, decay_length, eta_min, eta_max * cycle_decay ** cycle)


def _one_cycle(step: float, total_steps: int, initial_lr: float, max_lr: float, final_lr: float, pct_start: float,
               anneal_strategy: str, three_phase: bool) -> float:
    """PyTorch's OneCycleLR at `step`: initial_lr up to max_lr until step pct_start * total_steps - 1, then down to
    final_lr at the last step (three_phase: back to initial_lr over as many steps as the rise, then to final_lr)."""
    peak = pct_start * total_steps - 1
    if three_phase:
        ends, lrs = (peak, 2 * peak, total_steps - 1), (initial_lr, max_lr, initial_lr, final_lr)
    else:
        ends, lrs = (peak, total_steps - 1), (initial_lr, max_lr, final_lr)
    phase = next((k for k, end in enumerate(ends[:-1]) if step <= end), len(ends) - 1)
    start = ends[phase - 1] if phase else 0.0
    pct = (step - start) / (ends[phase] - start)
    if anneal_strategy == "cos":
        return _cosine(pct, 1.0, lrs[phase + 1], lrs[phase])
    return _linear(pct, lrs[phase], lrs[phase + 1], 1.0)


def _cyclic(step: float, base_lr: float, max_lr: float, step_size_up: float, step_size_down: float,
            scale: Callable[[float], float], scale_by_cycle: bool) -> float:
    """PyTorch's CyclicLR at `step`: triangles base_lr -> max_lr (step_size_up steps) -> base_lr (step_size_down),
    the amplitude multiplied by scale(cycle number, from 1) or scale(step)."""
    cycle_length = step_size_up + step_size_down
    cycle = math.floor(1 + step / cycle_length)
    x = 1.0 + step / cycle_length - cycle  # position in the cycle, [0, 1)
    up_fraction = step_size_up / cycle_length
    height = x / up_fraction if x <= up_fraction else (x - 1) / (up_fraction - 1)
    return base_lr + (max_lr - base_lr) * height * scale(cycle if scale_by_cycle else step)


def _cyclic_scale(mode: str, gamma: float) -> Tuple[Callable[[float], float], bool]:
    """PyTorch CyclicLR's built-in amplitude scales: (scale function, whether it takes the cycle number (else the
    step))."""
    if mode == "triangular":
        return (lambda cycle: 1.0), True
    if mode == "triangular2":
        return (lambda cycle: 0.5 ** (cycle - 1)), True
    if mode == "exp_range":
        return (lambda step: gamma ** step), False
    raise ValueError(f"mode must be 'triangular', 'triangular2' or 'exp_range', got {mode!r}")


# ---- MindCV's functions ----

def constant_lr(factor: float, total_iters: int, *, lr: float, steps_per_epoch: int, epochs: int) -> List[float]:
    """PyTorch ConstantLR: lr * factor for the first total_iters epochs, then lr."""
    return _schedule(lambda e: lr * factor if e < total_iters else lr, steps_per_epoch, epochs, "epoch",
                     lr=lr, factor=factor)


def linear_lr(start_factor: float, end_factor: float, total_iters: int, *, lr: float, steps_per_epoch: int,
              epochs: int) -> List[float]:
    """PyTorch LinearLR, once per epoch: lr * start_factor to lr * end_factor linearly over total_iters epochs."""
    return _schedule(lambda e: _linear(e, lr * start_factor, lr * end_factor, total_iters), steps_per_epoch, epochs,
                     "epoch", lr=lr, start_factor=start_factor, end_factor=end_factor)


def linear_refined_lr(start_factor: float, end_factor: float, total_iters: int, *, lr: float, steps_per_epoch: int,
                      epochs: int) -> List[float]:
    """`linear_lr` changing every step (fractional epochs)."""
    return _schedule(lambda e: _linear(e, lr * start_factor, lr * end_factor, total_iters), steps_per_epoch, epochs,
                     "refined", lr=lr, start_factor=start_factor, end_factor=end_factor)


def polynomial_lr(total_iters: int, power: float, *, lr: float, steps_per_epoch: int, epochs: int) -> List[float]:
    """PyTorch PolynomialLR, once per epoch: lr * (1 - e / total_iters) ** power, 0 from total_iters epochs on."""
    return _schedule(lambda e: _polynomial(e, lr, total_iters, power), steps_per_epoch, epochs, "epoch", lr=lr)


def polynomial_refined_lr(total_iters: int, power: float, *, lr: float, steps_per_epoch: int,
                          epochs: int) -> List[float]:
    """`polynomial_lr` changing every step (fractional epochs)."""
    return _schedule(lambda e: _polynomial(e, lr, total_iters, power), steps_per_epoch, epochs, "refined", lr=lr)


def exponential_lr(gamma: float, *, lr: float, steps_per_epoch: int, epochs: int) -> List[float]:
    """PyTorch ExponentialLR: lr * gamma ** e, e whole epochs."""
    return _schedule(lambda e: lr * gamma ** e, steps_per_epoch, epochs, "epoch", lr=lr, gamma=gamma)


def exponential_refined_lr(gamma: float, *, lr: float, steps_per_epoch: int, epochs: int) -> List[float]:
    """`exponential_lr` changing every step: lr * gamma ** (i / steps_per_epoch)."""
    return _schedule(lambda e: lr * gamma ** e, steps_per_epoch, epochs, "refined", lr=lr, gamma=gamma)


def step_lr(step_size: int, gamma: float, *, lr: float, steps_per_epoch: int, epochs: int) -> List[float]:
    """PyTorch StepLR: lr * gamma ** floor(e / step_size), e whole epochs."""
    return _schedule(lambda e: lr * gamma ** (e // step_size), steps_per_epoch, epochs, "epoch", lr=lr, gamma=gamma)


def multi_step_lr(milestones: Sequence[int], gamma: float, *, lr: float, steps_per_epoch: int,
                  epochs: int) -> List[float]:
    """PyTorch MultiStepLR: lr * gamma ** (number of milestones m <= e), e whole epochs from 0."""
    milestones = sorted(milestones)
    return _schedule(lambda e: lr * gamma ** bisect_right(milestones, e), steps_per_epoch, epochs, "epoch",
                     lr=lr, gamma=gamma)


def cosine_decay_lr(decay_epochs: int, eta_min: float, *, eta_max: float, steps_per_epoch: int, epochs: int,
                    num_cycles: int = 1, cycle_decay: float = 1.0) -> List[float]:
    """Cosine decay from eta_max to eta_min over decay_epochs, once per epoch; repeated num_cycles times, cycle c
    starting at eta_max * cycle_decay ** c; eta_min after the last cycle. Defaults: one cycle, cycle_decay 1.0."""
    return _schedule(lambda e: _cosine_decay(e, decay_epochs, eta_min, eta_max, num_cycles, cycle_decay),
                     steps_per_epoch, epochs, "epoch", eta_min=eta_min, eta_max=eta_max, cycle_decay=cycle_decay)


def cosine_decay_refined_lr(decay_epochs: int, eta_min: float, *, eta_max: float, steps_per_epoch: int, epochs: int,
                            num_cycles: int = 1, cycle_decay: float = 1.0) -> List[float]:
    """`cosine_decay_lr` changing every step (fractional epochs)."""
    return _schedule(lambda e: _cosine_decay(e, decay_epochs, eta_min, eta_max, num_cycles, cycle_decay),
                     steps_per_epoch, epochs, "refined", eta_min=eta_min, eta_max=eta_max, cycle_decay=cycle_decay)


def cosine_annealing_lr(t_max: int, eta_min: float, *, eta_max: float, steps_per_epoch: int,
                        epochs: int) -> List[float]:
    """PyTorch CosineAnnealingLR, once per epoch: eta_min + (eta_max - eta_min) * (1 + cos(pi * e / t_max)) / 2;
    past t_max it rises again (period 2 * t_max), as PyTorch's closed form does."""
    return _schedule(lambda e: _cosine(e, t_max, eta_min, eta_max), steps_per_epoch, epochs, "epoch",
                     eta_min=eta_min, eta_max=eta_max)


def cosine_annealing_warm_restarts_lr(te: int, tm: int, eta_min: float, *, eta_max: float, steps_per_epoch: int,
                                      epochs: int) -> List[float]:
    """PyTorch CosineAnnealingWarmRestarts (T_0 = te epochs, T_mult = tm) stepped every batch: cosine from eta_max
    towards eta_min over the current period (fractional epochs), restarting at eta_max after te, te * tm,
    te * tm ** 2, ... epochs."""
    if te <= 0 or tm < 1:
        raise ValueError(f"te must be > 0 and tm >= 1, got {te}, {tm}")

    def rule(e: float) -> float:
        start, period = 0, te
        while e >= start + period:
            start, period = start + period, period * tm
        return _cosine(e - start, period, eta_min, eta_max)

    return _schedule(rule, steps_per_epoch, epochs, "refined", eta_min=eta_min, eta_max=eta_max)


def one_cycle_lr(max_lr: float, pct_start: float = 0.3, anneal_strategy: str = "cos", div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False, *, steps_per_epoch: int,
                 epochs: int) -> List[float]:
    """PyTorch OneCycleLR over steps_per_epoch * epochs steps: from max_lr / div_factor up to max_lr over the first
    pct_start of the steps, then down to max_lr / div_factor / final_div_factor. Defaults as PyTorch: pct_start 0.3,
    "cos" annealing ("linear" the other choice), div_factor 25, final_div_factor 1e4, two phases."""
    total_steps = steps_per_epoch * epochs
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
    if not 0 < pct_start < 1 or pct_start * total_steps <= 1:
        raise ValueError(f"pct_start must be in (0, 1) and cover more than one of the {total_steps} steps, "
                         f"got {pct_start}")
    initial_lr = max_lr / div_factor
    return _schedule(lambda i: _one_cycle(i, total_steps, initial_lr, max_lr, initial_lr / final_div_factor,
                                          pct_start, anneal_strategy, three_phase),
                     steps_per_epoch, epochs, "step", max_lr=max_lr, div_factor=div_factor,
                     final_div_factor=final_div_factor)


def cyclic_lr(base_lr: float, max_lr: float, step_size_up: int = 2000, step_size_down: Optional[int] = None,
              mode: str = "triangular", gamma: float = 1.0, scale_fn: Optional[Callable[[float], float]] = None,
              scale_mode: str = "cycle", *, steps_per_epoch: int, epochs: int) -> List[float]:
    """PyTorch CyclicLR stepped every batch: triangles between base_lr and max_lr, step_size_up steps up and
    step_size_down (default: step_size_up) down. mode "triangular" keeps the amplitude, "triangular2" halves it
    every cycle, "exp_range" multiplies it by gamma ** step; a custom scale_fn replaces the mode and is applied to
    the cycle number (scale_mode "cycle", from 1) or the step ("iterations"). Defaults as PyTorch."""
    step_size_down = step_size_up if step_size_down is None else step_size_down
    if step_size_up <= 0 or step_size_down < 0:
        raise ValueError(f"step_size_up must be > 0 and step_size_down >= 0, got {step_size_up}, {step_size_down}")
    if scale_fn is None:
        scale, scale_by_cycle = _cyclic_scale(mode, gamma)
    elif scale_mode in ("cycle", "iterations"):
        scale, scale_by_cycle = scale_fn, scale_mode == "cycle"
    else:
        raise ValueError(f"scale_mode must be 'cycle' or 'iterations', got {scale_mode!r}")
    return _schedule(lambda i: _cyclic(i, base_lr, max_lr, step_size_up, step_size_down, scale, scale_by_cycle),
                     steps_per_epoch, epochs, "step", base_lr=base_lr, max_lr=max_lr)
