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
from mindcv.config.factories import (build_loss, build_optimizer, build_scheduler, build_train_step, build_trainer,
                                     check_batch_fits, describe_run, plan_epochs, resolve_num_classes)
from mindcv.config.schema import check_supported, parse_config, recipe_of, resume_checkpoint
from mindcv.engine import NonFiniteLossError, RunFolder, restore, seed_graph_randomness
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
    num_classes = resolve_num_classes(config, class_names)
    check_batch_fits(config, len(train_set.epoch_order))
    steps_per_epoch, sink = plan_epochs(config, build_loader(config, train_set, True, num_classes).get_dataset_size(),
                                        ms.get_context("device_target"))
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
    if rank == 0:
        print(describe_run(config, network, num_classes, group_size, steps_per_epoch, sink), flush=True)

    trainer = build_trainer(config, train_step, run,
                            lambda epoch, skip: build_loader(config, train_set, True, num_classes, epoch, skip),
                            steps_per_epoch=steps_per_epoch, lr_per_step=lr_per_step, val_loader=val_loader, sink=sink,
                            rank=rank, group_size=group_size)
    return trainer.fit(start_epoch, steps_done)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(3)
    except KeyboardInterrupt:  # a second Ctrl-C (StopRequest said so already): no traceback
        sys.exit(1)
