"""Learning-rate schedules as per-step lists: `create_scheduler` (by name, with warm-up) and the PyTorch-rule
functions of `dynamic_lr`."""
from . import dynamic_lr
from .scheduler_factory import SCHEDULERS, create_scheduler

__all__ = ["SCHEDULERS", "create_scheduler", "dynamic_lr"]
