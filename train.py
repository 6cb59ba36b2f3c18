"""Train a classifier from a YAML recipe.

    python train.py -c configs/convnext/convnext_tiny_ascend.yaml --data_dir /path/to/imagenet --distribute False
    msrun --worker_num 8 --local_worker_num 8 python train.py -c configs/convnext/convnext_tiny_ascend.yaml

The run folder (`ckpt_save_dir`) receives the resolved config (config.yaml), one JSON line of metrics per
epoch (metrics.jsonl), their plot (metrics.png), the class names (class_names.txt), the checkpoints
`{model}-{epoch}_{step in epoch}.ckpt` that ckpt_save_policy keeps (resumable: weights, optimizer, loss scale, EMA,
position) with their validation top-1 (checkpoint_scores.json), and `{model}_best.ckpt` (the weights with the best
validation top-1).
"""
import logging
import os
import sys

import mindspore as ms
import numpy as np

from mindcv.config.builders import (build_dataset, build_loader, build_model, check_same_classes, exit_on_user_error,
                                    require_data_dir, resolve_amp_level, setup_context)
from mindcv.config.factories import build_loss, build_optimizer, build_scheduler, build_train_step
from mindcv.config.schema import check_supported, parse_config, recipe_of, resume_checkpoint
from mindcv.engine import NonFiniteLossError, RunFolder, Trainer, restore, seed_graph_randomness
from mindcv.engine.progress import format_settings
from mindcv.engine.trainer import sunk_steps_per_epoch
from mindcv.errors import ConfigError

_logger = logging.getLogger("train")


@exit_on_user_error
def main(argv=None) -> int:
    config = parse_config(argv, description=__doc__.split("\n")[0])
    check_supported(config)
    resume = resume_checkpoint(config)
    rank, group_size = setup_context(config)
    require_data_dir(config)
    ms.set_seed(config.seed)
    np.random.seed(config.seed)
    config.amp_level = resolve_amp_level(config.amp_level)
    dynamic_scaling = config.loss_scale_type == "dynamic" or (config.loss_scale_type == "auto" and
                                                               config.amp_level != "O0")
    if dynamic_scaling and not config.drop_overflow_update:
        # overflows are how dynamic scaling finds its scale: such steps are skipped, not fatal
        _logger.info("dynamic loss scaling: steps whose gradients overflow are skipped (drop_overflow_update True)")
        config.drop_overflow_update = True

    # rank 0 keeps the records; the first rank of every node keeps resumable state (msrun numbers a node's devices
    # from 0), so that every node resumes from its own disk
    run = RunFolder(config.ckpt_save_dir, config.model, config.keep_checkpoint_max, writes_records=rank == 0,
                    keeps_state=rank == 0 or (config.distribute and os.environ.get("DEVICE_ID") == "0"),
                    policy=config.ckpt_save_policy)
    if not resume:
        run.check_fresh()

    train_set = build_dataset(config, config.train_split, True, rank, group_size)
    class_names = train_set.class_names
    num_classes = config.num_classes or len(class_names)
    if num_classes < len(class_names):
        raise ConfigError(f"num_classes is {num_classes} but {config.data_dir}/{config.train_split} has "
                          f"{len(class_names)} class folders: the model needs one output per class")
    if num_classes > len(class_names):  # MindCV's ImageNet recipes say 1000
        _logger.warning("num_classes is %d but %s/%s has %d class folders: %d outputs will never be a label; leave "
                        "num_classes out to take the folders' count", num_classes, config.data_dir, config.train_split,
                        len(class_names), num_classes - len(class_names))
    # checked before the loader is built: MindSpore refuses a pipeline of no batches with a traceback
    rank_images = len(train_set.epoch_order)
    if config.drop_remainder and rank_images < config.batch_size:
        raise ConfigError(f"batch_size {config.batch_size} is larger than this rank's share of the training set "
                          f"({rank_images} images); lower batch_size or set drop_remainder False")
    steps_per_epoch = build_loader(config, train_set, True, num_classes).get_dataset_size()
    # MindSpore sinks data into a device queue on Ascend and GPU only; the CPU is fed from the host.
    sink = config.dataset_sink_mode and ms.get_context("device_target") != "CPU"
    if config.dataset_sink_mode and not sink:
        _logger.info("dataset_sink_mode: the CPU back end has no device queue; batches are fed from the host")
    if sink and not config.drop_remainder:
        raise ConfigError("dataset_sink_mode needs drop_remainder True: a device queue takes batches of one shape")
    trained = sunk_steps_per_epoch(steps_per_epoch, config.sink_size) if sink else steps_per_epoch
    if trained < steps_per_epoch:
        _logger.info("sink_size %d: each epoch trains its %d whole sinks, %d of its %d batches per device (the last %d "
                     "are left out, as drop_remainder leaves out images)", config.sink_size,
                     trained // config.sink_size, trained, steps_per_epoch, steps_per_epoch - trained)
        steps_per_epoch = trained
    if steps_per_epoch % config.gradient_accumulation_steps:
        # accumulation windows must not straddle epochs, or the per-epoch lr table would run out early
        raise ConfigError(f"gradient_accumulation_steps {config.gradient_accumulation_steps} does not divide the "
                          f"{steps_per_epoch} steps of an epoch; choose a divisor, or change batch_size/num_samples")
    val_loader = None
    if config.val_while_train:
        val_set = build_dataset(config, config.val_split, False, rank, group_size)
        check_same_classes(class_names, val_set.class_names, f"{config.data_dir}/{config.train_split}",
                           f"{config.data_dir}/{config.val_split}")
        val_loader = build_loader(config, val_set, False, num_classes)

    # a resumed run takes every weight from its checkpoint (restore, below)
    network = build_model(config, num_classes, checkpoint_path="" if resume else config.ckpt_path)
    seed_graph_randomness(config.seed, rank)
    updates_per_epoch = steps_per_epoch // config.gradient_accumulation_steps
    lr_per_step = build_scheduler(config, updates_per_epoch)
    optimizer = build_optimizer(config, network, lr_per_step)
    train_step = build_train_step(config, network, build_loss(config), optimizer, rank)

    start_epoch, steps_done = 0, 0
    if resume:
        resume_path = run.resume_path(resume)
        # MindCV's own checkpoints are weights only: its optimizer state is in an optim_{model}.ckpt we cannot map
        instead = "(fine-tuning) set resume_opt False" if config.resume_opt else "use --ckpt_path instead of --resume"
        start_epoch, steps_done = restore(train_step, resume_path, instead)
        if start_epoch >= config.epoch_size:
            raise ConfigError(f"nothing to train: {resume_path} has done {start_epoch} epochs and epoch_size is "
                              f"{config.epoch_size}; pass --epoch_size N with N > {start_epoch} to train on")
        _logger.info("resumed from %s at epoch %d, step %d of the epoch", resume_path, start_epoch, steps_done)
        aside = run.set_aside_newer(start_epoch, steps_done, steps_per_epoch)
        if aside:  # the epochs redone would save over the names of this run's newer checkpoints
            _logger.warning("moved this run's checkpoints newer than the resume point (and their records) to %s",
                            aside)
    run.write_run_files(recipe_of(config), class_names)
    if rank == 0:  # the run's essentials, as MindCV's train.py lists them before training
        print(format_settings({
            "Model": config.model, "Model parameters": sum(p.size for p in network.trainable_params()),
            "Number of classes": num_classes, "Distributed mode": config.distribute, "Number of devices": group_size,
            "Batch size (per device)": config.batch_size,
            "Global batch size": config.batch_size * group_size * config.gradient_accumulation_steps,
            "Images per epoch": steps_per_epoch * config.batch_size * group_size,
            "Steps per epoch (per device)": steps_per_epoch, "Number of epochs": config.epoch_size,
            "Optimizer": f"{config.opt} (weight decay {config.weight_decay})",
            "LR scheduler": f"{config.scheduler} (lr {config.lr}, min_lr {config.min_lr}, warmup "
                            f"{config.warmup_epochs} epochs)",
            "Auto mixed precision": config.amp_level,
            "Loss scale": f"{config.loss_scale} ({config.loss_scale_type})",
            "Data sink": f"{min(config.sink_size, steps_per_epoch) if config.sink_size > 0 else steps_per_epoch} steps "
                         "per sink" if sink else "off (fed from the host)"}), flush=True)

    trainer = Trainer(train_step, run, lambda epoch, skip: build_loader(config, train_set, True, num_classes, epoch, skip),
                      epochs=config.epoch_size, steps_per_epoch=steps_per_epoch, batch_size=config.batch_size,
                      lr_per_step=lr_per_step, accumulation_steps=config.gradient_accumulation_steps,
                      drop_overflow_update=config.drop_overflow_update, val_loader=val_loader,
                      val_interval=config.val_interval, ckpt_save_interval=config.ckpt_save_interval, sink=sink,
                      sink_size=config.sink_size, log_interval=config.log_interval,
                      jit_level=config.jit_level, rank=rank,
                      group_size=group_size, distribute=config.distribute)
    return trainer.fit(start_epoch, steps_done)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(3)
    except KeyboardInterrupt:  # a second Ctrl-C (StopRequest said so already): no traceback
        sys.exit(1)
