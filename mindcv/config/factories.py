"""The training factories built from a config: each factory's keyword arguments are the config keys of the same
name (`config_kwargs`), so a new key reaches its factory by being named like the factory's argument in the
schema. Where MindCV's key names an argument otherwise, `renamed` says so; what the config must not set, `unset`.
"""
import inspect
from typing import Callable, Dict, Iterable, List, Optional

from mindcv.engine.train_step import create_train_step
from mindcv.loss import create_loss
from mindcv.models.layers import bind_drop_path
from mindcv.optim import create_optimizer
from mindcv.scheduler import create_scheduler

from .schema import OPTIONS

# factory argument -> the config key that sets it (MindCV's key names)
SCHEDULER_RENAMED = {"milestones": "multi_step_decay_milestones", "num_epochs": "epoch_size"}
LOSS_RENAMED = {"name": "loss"}
# the train step divides the gradients by the loss scale before the update: the optimizer must not divide again
OPTIMIZER_UNSET = ("loss_scale",)


def config_kwargs(factory: Callable, config, renamed: Optional[Dict[str, str]] = None, unset: Iterable[str] = (),
                  **given) -> dict:
    """The keyword arguments of `factory` that `config` holds: every parameter named like a config key (or
    renamed, {parameter: key}) takes that key's value, except those in `unset`; `given` (objects built before,
    values derived from several keys) are added and win."""
    renamed = renamed or {}
    kwargs = {}
    for name in inspect.signature(factory).parameters:
        key = renamed.get(name, name)
        if name not in unset and key in OPTIONS:
            kwargs[name] = getattr(config, key)
    kwargs.update(given)
    return kwargs


def build_scheduler(config, updates_per_epoch: int) -> List[float]:
    """The learning rate of every update of the run (`create_scheduler`), `updates_per_epoch` per epoch."""
    return create_scheduler(**config_kwargs(create_scheduler, config, SCHEDULER_RENAMED,
                                            steps_per_epoch=updates_per_epoch))


def build_optimizer(config, network, lr_per_step: List[float]):
    """`create_optimizer` over the network's trainable parameters, taking the per-update learning rates. A
    `beta2` in the config sets Adam's betas to (momentum, beta2), as MindCV's recipes write them."""
    betas = {} if config.beta2 is None else dict(beta1=config.momentum, beta2=config.beta2)
    return create_optimizer(**config_kwargs(create_optimizer, config, unset=OPTIMIZER_UNSET,
                                            model_or_params=network, lr=lr_per_step, **betas))


def build_loss(config):
    """`create_loss` with the config's loss name, reduction, label smoothing and aux factor."""
    return create_loss(**config_kwargs(create_loss, config, LOSS_RENAMED))


def build_train_step(config, network, loss_fn, optimizer, rank: int = 0):
    """`create_train_step`: precision, loss scaling, clipping, accumulation, EMA and distribution as configured.
    The network's drop-path masks are then drawn from (seed, `rank`, the train step's call count): different on
    every rank on any back end, and the same again after a resume (the count is part of the saved state)."""
    train_step = create_train_step(**config_kwargs(create_train_step, config, network=network, loss_fn=loss_fn,
                                                   optimizer=optimizer))
    bind_drop_path(network, train_step.current_iterator_step, config.seed, rank)
    return train_step
