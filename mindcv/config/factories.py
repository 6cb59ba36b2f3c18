"""The training factories built from a config: each factory's keyword arguments are the config keys of the same
name (`config_kwargs`), so a new key reaches its factory by being named like the factory's argument in the
schema. Where MindCV's key names an argument otherwise, `renamed` says so; what the config must not set, `unset`.
"""
import inspect
import logging
from typing import Callable, Dict, Iterable, List, Optional

from mindcv.engine.progress import format_settings
from mindcv.engine.train_step import create_train_step
from mindcv.engine.trainer import Trainer, sunk_steps_per_epoch
from mindcv.errors import ConfigError
from mindcv.loss import create_loss
from mindcv.models.layers import bind_drop_path
from mindcv.optim import create_optimizer
from mindcv.scheduler import create_scheduler

from .schema import OPTIONS

# factory argument -> the config key that sets it (MindCV's key names)
SCHEDULER_RENAMED = {"milestones": "multi_step_decay_milestones", "num_epochs": "epoch_size"}
LOSS_RENAMED = {"name": "loss"}
TRAINER_RENAMED = {"epochs": "epoch_size", "accumulation_steps": "gradient_accumulation_steps"}
_logger = logging.getLogger("mindcv")

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


def plan_epochs(config, loader_steps: int, device_target: str):
    """(steps per epoch, sink): the steps each epoch trains out of the loader's `loader_steps` batches, and whether
    batches are sunk into a device queue (dataset_sink_mode on Ascend and GPU; the CPU is fed from the host). A sunk
    epoch trains its whole sinks only (`sunk_steps_per_epoch`). ConfigError where the epoch cannot be trained as
    configured."""
    sink = config.dataset_sink_mode and device_target != "CPU"
    if config.dataset_sink_mode and not sink:
        _logger.info("dataset_sink_mode: the CPU back end has no device queue; batches are fed from the host")
    if sink and not config.drop_remainder:
        raise ConfigError("dataset_sink_mode needs drop_remainder True: a device queue takes batches of one shape")
    steps = sunk_steps_per_epoch(loader_steps, config.sink_size) if sink else loader_steps
    if steps < loader_steps:
        _logger.info("sink_size %d: each epoch trains its %d whole sinks, %d of its %d batches per device (the last %d "
                     "are left out, as drop_remainder leaves out images)", config.sink_size, steps // config.sink_size,
                     steps, loader_steps, loader_steps - steps)
    if steps % config.gradient_accumulation_steps:
        # accumulation windows must not straddle epochs, or the per-epoch lr table would run out early
        raise ConfigError(f"gradient_accumulation_steps {config.gradient_accumulation_steps} does not divide the "
                          f"{steps} steps of an epoch; choose a divisor, or change batch_size/num_samples")
    return steps, sink


def describe_run(config, network, num_classes: int, group_size: int, steps_per_epoch: int, sink: bool) -> str:
    """The run's essentials, as MindCV's train.py lists them before training."""
    per_sink = min(config.sink_size, steps_per_epoch) if config.sink_size > 0 else steps_per_epoch
    return format_settings({
        "Model": config.model, "Model parameters": sum(p.size for p in network.trainable_params()),
        "Number of classes": num_classes, "Distributed mode": config.distribute, "Number of devices": group_size,
        "Batch size (per device)": config.batch_size,
        "Global batch size": config.batch_size * group_size * config.gradient_accumulation_steps,
        "Images per epoch": steps_per_epoch * config.batch_size * group_size,
        "Steps per epoch (per device)": steps_per_epoch, "Number of epochs": config.epoch_size,
        "Optimizer": f"{config.opt} (weight decay {config.weight_decay})",
        "LR scheduler": f"{config.scheduler} (lr {config.lr}, min_lr {config.min_lr}, warmup "
                        f"{config.warmup_epochs} epochs)",
        "Auto mixed precision": config.amp_level, "Loss scale": f"{config.loss_scale} ({config.loss_scale_type})",
        "Data sink": f"{per_sink} steps per sink" if sink else "off (fed from the host)"})


def build_trainer(config, train_step, run, make_loader, **given) -> Trainer:
    """The training loop over `train_step`, saving into `run`, with the config's epochs, batch size, accumulation,
    validation and checkpoint intervals, sink and logging keys; `make_loader(epoch, skipped_batches)` gives an
    epoch's batches, and `given` what the run worked out (steps_per_epoch, lr_per_step, val_loader, sink, rank,
    group_size)."""
    return Trainer(**config_kwargs(Trainer, config, TRAINER_RENAMED, train_step=train_step, run=run,
                                   make_loader=make_loader, **given))


def resolve_num_classes(config, class_names) -> int:
    """The classifier's outputs: `num_classes`, else one per class folder. ConfigError when fewer than the
    folders; a warning when more (MindCV's ImageNet recipes say 1000 whatever the data)."""
    where = f"{config.data_dir}/{config.train_split}"
    num_classes = config.num_classes or len(class_names)
    if num_classes < len(class_names):
        raise ConfigError(f"num_classes is {num_classes} but {where} has {len(class_names)} class folders: the model "
                          "needs one output per class")
    if num_classes > len(class_names):
        _logger.warning("num_classes is %d but %s has %d class folders: %d outputs will never be a label; leave "
                        "num_classes out to take the folders' count", num_classes, where, len(class_names),
                        num_classes - len(class_names))
    return num_classes


def check_batch_fits(config, rank_images: int) -> None:
    """ConfigError when dropping the remainder leaves a rank of `rank_images` images no batch; checked before the
    loader is built, since MindSpore refuses a pipeline of no batches with a traceback."""
    if config.drop_remainder and rank_images < config.batch_size:
        raise ConfigError(f"batch_size {config.batch_size} is larger than this rank's share of the training set "
                          f"({rank_images} images); lower batch_size or set drop_remainder False")
