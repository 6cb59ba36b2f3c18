"""Train a classifier from a YAML recipe.

    python train.py -c configs/convnext/convnext_tiny_ascend.yaml --data_dir /path/to/imagenet --distribute False
    msrun --worker_num 8 --local_worker_num 8 python train.py -c configs/convnext/convnext_tiny_ascend.yaml

The run folder (`ckpt_save_dir`) receives the resolved config (config.yaml), one JSON line of metrics per
epoch (metrics.jsonl), their plot (metrics.png), the class names (class_names.txt), the newest
`keep_checkpoint_max` checkpoints `{model}-{epoch}_{step}.ckpt` (resumable: weights, optimizer, loss scale,
EMA, position) and `{model}_best.ckpt` (the weights with the best validation top-1).
"""
import glob
import hashlib
import json
import logging
import os
import re
import signal
import sys
import time

import mindspore as ms
import numpy as np
from tqdm import tqdm

from mindcv.data import get_class_names
from mindcv.loss import create_loss
from mindcv.optim import create_optimizer
from mindcv.scheduler import create_scheduler
from mindcv.utils.checkpoint import save_checkpoint_atomic
from mindcv.utils.cli import build_loader, build_model, exit_on_user_error, require_data_dir, setup_context
from mindcv.utils.config import ConfigError, dump_config, parse_config
from mindcv.utils.evaluate import evaluate
from mindcv.utils.plot import plot_metrics
from mindcv.utils.train_step import create_train_step

_logger = logging.getLogger("train")
# Position entries that a resumable checkpoint carries beside the Parameters of the train step.
EPOCH_KEY, STEP_KEY = "epoch_num", "step_num"


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients stopped being finite and drop_overflow_update is off."""


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current step, so the state it saves is whole."""

    def __init__(self):
        self.requested = False
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True


class RunFolder:
    """The files of one run: checkpoints (rotated), metrics and plot. Only rank 0 writes."""

    def __init__(self, directory: str, model_name: str, keep_checkpoint_max: int, writer: bool):
        self.directory = directory
        self.model_name = model_name
        self.keep = keep_checkpoint_max
        self.writer = writer
        if writer:
            os.makedirs(directory, exist_ok=True)

    def checkpoints(self):
        """Resumable checkpoints of this model, oldest first."""
        pattern = re.compile(re.escape(self.model_name) + r"-(\d+)_(\d+)\.ckpt$")
        found = []
        for path in glob.glob(os.path.join(self.directory, f"{self.model_name}-*_*.ckpt")):
            match = pattern.search(os.path.basename(path))
            if match:
                found.append(((int(match[1]), int(match[2])), path))
        return [path for _, path in sorted(found)]

    def save_state(self, train_step, epoch: int, step: int, steps_done_in_epoch: int) -> str:
        path = os.path.join(self.directory, f"{self.model_name}-{epoch}_{step}.ckpt")
        if self.writer:
            save_checkpoint_atomic(train_step, path, append_dict={EPOCH_KEY: epoch, STEP_KEY: steps_done_in_epoch})
            for old in self.checkpoints()[:-self.keep] if self.keep > 0 else []:
                os.remove(old)
        return path

    def save_best(self, network) -> None:
        if self.writer:
            weights = [{"name": p.name, "data": p.data} for p in network.get_parameters()]
            save_checkpoint_atomic(weights, os.path.join(self.directory, f"{self.model_name}_best.ckpt"))

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.directory, "metrics.jsonl")

    def read_metrics(self):
        if not os.path.isfile(self.metrics_path):
            return []
        with open(self.metrics_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def keep_metrics_until(self, epoch: int) -> list:
        """Drop the records after `epoch` (a fresh run: all of them; a resumed one: those it will redo)."""
        records = [r for r in self.read_metrics() if r["epoch"] <= epoch]
        if self.writer:
            with open(self.metrics_path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
        return records

    def append_metrics(self, record: dict) -> None:
        if not self.writer:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        plot_metrics(self.read_metrics(), os.path.join(self.directory, "metrics.png"))


def find_resume_path(config, run: RunFolder) -> str:
    if config.resume != "auto":
        return config.resume
    checkpoints = run.checkpoints()
    if not checkpoints:
        raise FileNotFoundError(f"--resume auto found no {config.model}-<epoch>_<step>.ckpt in {run.directory}")
    return checkpoints[-1]


def restore(train_step, path: str):
    """Load a resumable checkpoint into the train step. Returns (epoch, steps done in that epoch)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"resume checkpoint not found: {path}")
    try:
        state = ms.load_checkpoint(path)
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"cannot read {path} as a MindSpore checkpoint: {str(error).splitlines()[0]}") from None
    if EPOCH_KEY not in state:
        raise ValueError(f"{path} holds no training state (epoch, optimizer); to start from its weights use "
                         "--ckpt_path instead of --resume")
    # The learning-rate table comes from the config, so a resumed run may change epoch_size or the schedule;
    # global_step, restored below, is its position.
    names = {p.name for p in train_step.get_parameters() if p.name != "learning_rate"}
    missing = sorted(names - set(state))
    if missing:
        raise ValueError(f"{path} does not fit this run (missing {len(missing)}: {', '.join(missing[:5])}); was it "
                         "saved with another model, optimizer, ema or gradient_accumulation_steps?")
    ms.load_param_into_net(train_step, {k: v for k, v in state.items() if k in names}, strict_load=True)
    return int(state[EPOCH_KEY].asnumpy()), int(state[STEP_KEY].asnumpy())


def host_steps(train_step, loader, skip: int = 0):
    """Train on each batch of one pass over `loader` but the first `skip` (a resumed epoch's batches that were
    trained on before), fed from the host; yields (loss, overflow, batch size)."""
    for index, (images, labels) in enumerate(loader.create_tuple_iterator(num_epochs=1)):
        if index >= skip:
            loss, overflow, _ = train_step(images, labels)
            yield loss, overflow, images.shape[0]


def sink_steps(sink_step, num_steps: int, batch_size: int):
    """`num_steps` steps of a `mindspore.data_sink` function (the batches come from the device queue, whole:
    training drops the remainder); yields (loss, overflow, batch size)."""
    for _ in range(num_steps):
        loss, overflow, _ = sink_step()
        yield loss, overflow, batch_size


def mean_over_ranks(value: float, distribute: bool) -> float:
    if not distribute:
        return value
    from mindspore.communication import get_group_size
    total = ms.ops.AllReduce()(ms.Tensor([value], ms.float32)).asnumpy()[0]
    return float(total) / get_group_size()


@exit_on_user_error
def main(argv=None) -> int:
    config = parse_config(argv, description=__doc__.split("\n")[0])
    rank, group_size = setup_context(config)
    require_data_dir(config)
    ms.set_seed(config.seed)
    np.random.seed(config.seed)
    for key in ("batch_size", "epoch_size", "val_interval", "ckpt_save_interval", "gradient_accumulation_steps"):
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {getattr(config, key)}")
    dynamic_scaling = config.loss_scale_type == "dynamic" or (config.loss_scale_type == "auto" and
                                                               config.amp_level != "O0")
    if dynamic_scaling and not config.drop_overflow_update:
        # overflows are how dynamic scaling finds its scale: such steps are skipped, not fatal
        _logger.info("dynamic loss scaling: steps whose gradients overflow are skipped (drop_overflow_update True)")
        config.drop_overflow_update = True

    run = RunFolder(config.ckpt_save_dir, config.model, config.keep_checkpoint_max, writer=rank == 0)
    if not config.resume and run.checkpoints():
        raise ConfigError(f"{run.directory} holds checkpoints of an earlier run: pass --resume auto to continue it, "
                          "or another --ckpt_save_dir")

    class_names = get_class_names(config.data_dir, config.train_split)
    num_classes = config.num_classes or len(class_names)
    train_loader = build_loader(config, config.train_split, True, rank, group_size, num_classes=num_classes)
    steps_per_epoch = train_loader.get_dataset_size()
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size {config.batch_size} is larger than this rank's share of the training set; "
                          "lower batch_size or set drop_remainder False")
    if steps_per_epoch % config.gradient_accumulation_steps:
        # accumulation windows must not straddle epochs, or the per-epoch lr table would run out early
        raise ConfigError(f"gradient_accumulation_steps {config.gradient_accumulation_steps} does not divide the "
                          f"{steps_per_epoch} steps of an epoch; choose a divisor, or change batch_size/num_samples")
    val_loader = None
    if config.val_while_train:
        val_loader = build_loader(config, config.val_split, False, rank, group_size, num_classes=num_classes)

    network = build_model(config, num_classes, checkpoint_path=config.ckpt_path)
    updates_per_epoch = steps_per_epoch // config.gradient_accumulation_steps
    lr_per_step = create_scheduler(updates_per_epoch, scheduler=config.scheduler, lr=config.lr, min_lr=config.min_lr,
                                   warmup_epochs=config.warmup_epochs, warmup_factor=config.warmup_factor,
                                   decay_epochs=config.decay_epochs, decay_rate=config.decay_rate,
                                   milestones=config.multi_step_decay_milestones, num_epochs=config.epoch_size,
                                   lr_epoch_stair=config.lr_epoch_stair)
    optimizer = create_optimizer(network, opt=config.opt, lr=lr_per_step, weight_decay=config.weight_decay,
                                 momentum=config.momentum, nesterov=config.nesterov,
                                 weight_decay_filter=config.weight_decay_filter, layer_decay=config.layer_decay,
                                 eps=config.eps,
                                 betas=None if config.beta2 is None else (config.momentum, config.beta2))
    loss_fn = create_loss(config.loss, label_smoothing=config.label_smoothing)
    train_step = create_train_step(network, loss_fn, optimizer, amp_level=config.amp_level,
                                   loss_scale_type=config.loss_scale_type, loss_scale=config.loss_scale,
                                   drop_overflow_update=config.drop_overflow_update, clip_grad=config.clip_grad,
                                   clip_value=config.clip_value,
                                   gradient_accumulation_steps=config.gradient_accumulation_steps, ema=config.ema,
                                   ema_decay=config.ema_decay, distribute=config.distribute)

    start_epoch, skip_steps = 0, 0
    if config.resume:
        resume_path = find_resume_path(config, run)
        start_epoch, skip_steps = restore(train_step, resume_path)
        _logger.info("resumed from %s at epoch %d, step %d of the epoch", resume_path, start_epoch, skip_steps)
    best_top1 = max([r.get("val_top1", -1.0) for r in run.keep_metrics_until(start_epoch)] + [-1.0])
    if rank == 0:
        dump_config(config, os.path.join(run.directory, "config.yaml"))
        with open(os.path.join(run.directory, "class_names.txt"), "w") as f:
            f.write("\n".join(class_names) + "\n")
    _logger.info("%s: %d classes, %d steps per epoch of %d images on each of %d device(s)", config.model,
                 num_classes, steps_per_epoch, config.batch_size, group_size)

    stop = StopRequest()
    skipped_updates = 0
    # MindSpore sinks data into a device queue on Ascend and GPU only; the CPU is fed from the host.
    sink = config.dataset_sink_mode and ms.get_context("device_target") != "CPU"
    if config.dataset_sink_mode and not sink:
        _logger.info("dataset_sink_mode: the CPU back end has no device queue; batches are fed from the host")
    if sink and not config.drop_remainder:
        raise ConfigError("dataset_sink_mode needs drop_remainder True: a device queue takes batches of one shape")
    sink_step = None
    for epoch in range(start_epoch, config.epoch_size):
        if sink_step is None:
            loader = build_loader(config, config.train_split, True, rank, group_size, start_epoch=epoch,
                                  num_classes=num_classes) if epoch > 0 or start_epoch > 0 else train_loader
            if sink and skip_steps == 0:
                # one sink over one pipeline for all remaining epochs: its successive passes are the next epochs
                sink_step = ms.data_sink(train_step, loader, sink_size=1)
        epoch_start, losses, images_seen = time.time(), [], 0
        bar = tqdm(total=steps_per_epoch, initial=skip_steps, desc=f"epoch {epoch + 1}/{config.epoch_size}",
                   disable=rank != 0, dynamic_ncols=True)
        steps = sink_steps(sink_step, steps_per_epoch, config.batch_size) if sink_step is not None \
            else host_steps(train_step, loader, skip_steps)
        for step_in_epoch, (loss, overflow, batch) in enumerate(steps, start=skip_steps):
            loss_value = float(loss.asnumpy())
            if bool(overflow.asnumpy()):
                if not config.drop_overflow_update:
                    raise NonFiniteLossError(
                        f"the loss or the gradients became non-finite at epoch {epoch + 1}, step {step_in_epoch + 1} "
                        f"(loss {loss_value}); the last good checkpoint in {run.directory} is intact. Lower lr, "
                        "enable clip_grad, or set drop_overflow_update True to skip such steps")
                skipped_updates += 1
            else:
                losses.append(loss_value)
            images_seen += batch * group_size
            global_step = epoch * steps_per_epoch + step_in_epoch
            lr = lr_per_step[min(global_step // config.gradient_accumulation_steps, len(lr_per_step) - 1)]
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}",
                            img_s=f"{images_seen / (time.time() - epoch_start):.1f}")
            bar.update(1)
            # every rank must stop at the same step, or the others wait forever in the next all-reduce
            if mean_over_ranks(float(stop.requested), config.distribute) > 0:
                bar.close()
                path = run.save_state(train_step, epoch, global_step + 1, step_in_epoch + 1)
                if rank == 0:
                    print(f"interrupted: saved resumable state to {path}; continue with --resume {path}")
                return 130
        bar.close()
        skip_steps = 0
        record = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                  "train_loss": mean_over_ranks(float(np.mean(losses)) if losses else float("nan"), config.distribute),
                  "lr": lr_per_step[min((epoch + 1) * updates_per_epoch - 1, len(lr_per_step) - 1)],
                  "epoch_time_s": round(time.time() - epoch_start, 2),
                  "images_per_s": round(images_seen / (time.time() - epoch_start), 2),
                  "skipped_updates": skipped_updates, "skipped_images": loader.skipped_images.count}
        is_best = False
        if val_loader is not None and ((epoch + 1) % config.val_interval == 0 or epoch + 1 == config.epoch_size):
            with train_step.ema_weights_swapped():
                metrics = evaluate(train_step.network, val_loader, config.distribute)
                record.update({f"val_{k}": v for k, v in metrics.items() if k != "num_samples"})
                is_best = metrics["top1"] > best_top1
                if is_best:
                    best_top1 = metrics["top1"]
                    run.save_best(train_step.network)
        if (epoch + 1) % config.ckpt_save_interval == 0 or epoch + 1 == config.epoch_size:
            run.save_state(train_step, epoch + 1, (epoch + 1) * steps_per_epoch, 0)
        run.append_metrics(record)
        if rank == 0:
            print(json.dumps(record) + ("  (best)" if is_best else ""))
    if config.distribute:  # lets a reader of the worker logs check that all ranks hold the same weights
        digest = hashlib.sha256(b"".join(p.asnumpy().tobytes() for p in network.get_parameters())).hexdigest()
        _logger.info("rank %d final weights sha256 %s", rank, digest)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(3)
