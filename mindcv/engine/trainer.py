"""The training loop: epochs of K-step chunks, fed from the host or sunk to the device, with the host reading the
loss once per chunk.

Each epoch runs as chunks of K steps (the last chunk of an epoch may be shorter when fed from the host). During a
chunk the device sums the loss of the steps without overflow and counts the steps with one (`StepTotals`); the
host reads those two numbers once, after the chunk, and only then: progress (`progress.Progress`), non-finite check,
stop requests (`stopping.StopRequest`: Ctrl-C, SIGTERM, a STOP file; agreed on by all ranks) happen at chunk
boundaries. The same code runs both feeds:
- sunk (`dataset_sink_mode` on Ascend/GPU): `mindspore.data_sink` with `sink_size` K and a `JitConfig`, so the
  batches come from the device queue and the host does not wait between steps; K = `sink_size`, one epoch by
  default, as MindCV's `Model.train` does;
- host-fed (the CPU, or the rest of an epoch resumed in its middle): K steps of batches from the pipeline's
  iterator; K = min(`sink_size`, `log_interval`).
"""
import hashlib
import logging
import os
import time

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore import dtype as mstype

from ..errors import ConfigError
from .evaluate import evaluate
from .progress import Progress, format_record, rounded, summary
from .stopping import STOPPED_STATUS, StopRequest

_logger = logging.getLogger("mindcv.engine")


def seed_graph_randomness(seed: int, rank: int) -> None:
    """Seed MindSpore's random operators (drop path) apart on every rank. Call it after the model is built: the
    initial weights, drawn from `seed`, stay the same on all ranks, while each rank draws its own masks."""
    ms.set_seed(seed + rank)


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients stopped being finite and drop_overflow_update is off."""


class StepTotals(nn.Cell):
    """The train step plus two sums kept on the device over the steps since the host last read them: the loss of
    the steps without overflow and the number of steps with one. construct(images, labels) -> the train step's
    (loss, overflow, loss_scale)."""

    def __init__(self, train_step: nn.Cell):
        super().__init__(auto_prefix=False)  # the train step's parameter names stay as they are
        self.train_step = train_step
        self.loss_sum = Parameter(Tensor(0.0, mstype.float32), name="step_totals.loss_sum", requires_grad=False)
        self.overflows = Parameter(Tensor(0, mstype.int32), name="step_totals.overflows", requires_grad=False)

    def construct(self, images, labels):
        loss, overflow, scale = self.train_step(images, labels)
        ops.assign_add(self.loss_sum, ops.select(overflow, ops.zeros_like(loss), loss))
        ops.assign_add(self.overflows, overflow.astype(mstype.int32))
        return loss, overflow, scale

    def read_and_reset(self):
        """(loss sum, steps with overflow) since the last call; one wait for the device."""
        totals = float(self.loss_sum.asnumpy()), int(self.overflows.asnumpy())
        self.loss_sum.set_data(Tensor(0.0, mstype.float32))
        self.overflows.set_data(Tensor(0, mstype.int32))
        return totals


class HostFeed:
    """Steps on batches from the host: `num_epochs` passes over `loader`, one after another."""

    def __init__(self, step: nn.Cell, loader, num_epochs: int, on_step=None):
        self.step = step
        self.loader = loader
        self.on_step = on_step
        self.iterator = loader.create_tuple_iterator(num_epochs=num_epochs)
        self.batches = self._batches(self.iterator, num_epochs)

    @staticmethod
    def _batches(iterator, num_epochs):
        for _ in range(num_epochs):  # each pass of a MindSpore iterator ends with StopIteration
            yield from iterator

    def run(self, steps: int) -> None:
        for _ in range(steps):
            images, labels = next(self.batches)
            self.step(images, labels)
            if self.on_step is not None:
                self.on_step()

    def close(self) -> None:
        """Stop the pipeline now: one left in mid-pass until interpreter exit was seen to crash there (a double
        free after a stop request)."""
        self.batches.close()
        self.iterator.stop()


class SinkFeed:
    """Steps on batches from the device queue: `mindspore.data_sink(step, loader, sink_size, jit_config)`; each
    `run` is one sink of `sink_size` steps, and proves it ran them: `step` (a `StepTotals`) counts its calls on the
    device (the train step's `current_iterator_step`), and a sink that advanced it by another number raises
    ConfigError. Under jit_level O2 `data_sink` runs the graph once per call and leaves the repeats to GE
    (mindspore/train/data_sink.py); a sink that ran fewer steps would train an epoch on part of its data, silently.
    The count costs one read of a scalar per sink, after the sink, where the loop waits for the device anyway."""

    def __init__(self, step: nn.Cell, loader, sink_size: int, jit_level: str, data_sink=None):
        self.loader = loader
        self.sink_size, self.jit_level = sink_size, jit_level
        self.calls = step.train_step.current_iterator_step
        self.calls_seen = int(self.calls.asnumpy())
        self.run_sink = (data_sink or ms.data_sink)(step, loader, sink_size=sink_size,
                                                    jit_config=ms.JitConfig(jit_level=jit_level))

    def run(self, steps: int) -> None:
        if steps != self.sink_size:
            raise ValueError(f"a sink runs {self.sink_size} steps, not {steps}")
        self.run_sink()
        calls = int(self.calls.asnumpy())
        ran, self.calls_seen = calls - self.calls_seen, calls
        if ran != steps:
            raise ConfigError(f"a sink of sink_size {steps} ran {ran} steps on the device (jit_level "
                              f"{self.jit_level}): epochs would train on part of their data. Set jit_level O0 (or "
                              "dataset_sink_mode False) and check again with python -m mindcv.selftest")

    def close(self) -> None:
        """Stop the transfer queue and release it (MindSpore would otherwise keep sending until exit)."""
        transfer = getattr(self.loader, "__transfer_dataset__", None)
        if transfer is not None:
            transfer.stop_send()
            transfer.release()


def chunk_size(steps_per_epoch: int, sink: bool, sink_size: int, log_interval: int) -> int:
    """Steps between two reads of the device's totals: `sink_size` (-1: one epoch); fed from the host, at most
    `log_interval`."""
    chunk = steps_per_epoch if sink_size < 1 else min(sink_size, steps_per_epoch)
    return chunk if sink else max(1, min(chunk, log_interval))


def sunk_steps_per_epoch(steps_per_epoch: int, sink_size: int) -> int:
    """The steps of an epoch that a sunk run trains: its whole sinks of `sink_size` steps (-1: the epoch). A sink's
    size is fixed when `mindspore.data_sink` is built (once per dataset), so the epoch's last
    `steps_per_epoch % sink_size` batches are left out, as drop_remainder leaves out the last images. ImageNet on
    8 x 16 has 10009 steps per epoch (a prime): sink_size 556 trains 10008 of them."""
    if sink_size < 1 or sink_size >= steps_per_epoch:
        return steps_per_epoch
    return steps_per_epoch - steps_per_epoch % sink_size


class Trainer:
    """Runs the epochs of a training run: chunks of steps, progress, validation, checkpoints, metrics, stops.

    Args:
        train_step: a `mindcv.engine.train_step.TrainStep` (its state is what resumable checkpoints hold).
        run: the `RunFolder`.
        make_loader: `make_loader(start_epoch, skip_batches)` -> the training pipeline whose first pass is epoch
            `start_epoch` less its first `skip_batches` batches.
        epochs, steps_per_epoch: the run's length; steps are per rank.
        batch_size: images per step per rank.
        lr_per_step: the learning rate of each update (for the progress bar and metrics).
        accumulation_steps: micro-batches per update. Default 1.
        drop_overflow_update: steps with non-finite gradients are skipped; when False the run stops on one.
        val_loader: validation pipeline, or None. val_interval: epochs between validations.
        ckpt_save_interval: epochs between resumable checkpoints (the last epoch is always saved).
        sink: feed from the device queue (`dataset_sink_mode` on Ascend/GPU). sink_size: steps per sink (-1: an
            epoch). log_interval: steps per chunk when fed from the host. jit_level: the sink's JitConfig level.
        rank, group_size, distribute: the data-parallel group.
        data_sink: replaces `mindspore.data_sink` (tests exercise the sunk loop on the CPU with it).
        progress: reports the epochs (default: a `Progress` on rank 0: a bar on a terminal, dated lines in a file).
    """

    def __init__(self, train_step, run, make_loader, *, epochs: int, steps_per_epoch: int, batch_size: int,
                 lr_per_step, accumulation_steps: int = 1, drop_overflow_update: bool = False, val_loader=None,
                 val_interval: int = 1, ckpt_save_interval: int = 1, sink: bool = False, sink_size: int = -1,
                 log_interval: int = 100, jit_level: str = "O0", rank: int = 0, group_size: int = 1,
                 distribute: bool = False, data_sink=None, progress: Progress = None):
        self.train_step = train_step
        self.totals = StepTotals(train_step)
        self.run = run
        self.make_loader = make_loader
        self.epochs, self.steps_per_epoch, self.batch_size = epochs, steps_per_epoch, batch_size
        self.lr_per_step = lr_per_step
        self.accumulation_steps = accumulation_steps
        self.drop_overflow_update = drop_overflow_update
        self.val_loader, self.val_interval = val_loader, val_interval
        self.ckpt_save_interval = ckpt_save_interval
        self.sink, self.sink_size, self.jit_level = sink, sink_size, jit_level
        self.chunk = chunk_size(steps_per_epoch, sink, sink_size, log_interval)
        if sink and steps_per_epoch % self.chunk:
            raise ValueError(f"sink_size {sink_size} does not divide the {steps_per_epoch} steps of an epoch; train "
                             "sunk_steps_per_epoch() of them, or choose a divisor, or -1 for one sink per epoch")
        self.rank, self.group_size, self.distribute = rank, group_size, distribute
        self.data_sink = data_sink
        self.progress = progress or Progress(epochs, steps_per_epoch, enabled=rank == 0)

    def lr_at(self, step: int) -> float:
        """The learning rate of global step `step` (0-based)."""
        return self.lr_per_step[min(step // self.accumulation_steps, len(self.lr_per_step) - 1)]

    def _feed_from(self, epoch: int, skip: int):
        """(feed, the epoch it ends before): the rest of an epoch resumed after `skip` steps, host-fed; otherwise
        all remaining epochs through one pipeline (its passes are the next epochs)."""
        on_step = self.progress.advance  # host-fed: the bar moves with every step
        loader = self.make_loader(epoch, skip)
        if skip:
            return HostFeed(self.totals, loader, 1, on_step), epoch + 1
        if self.sink:
            if loader.get_dataset_size() > self.steps_per_epoch:  # the batches after the epoch's last whole sink
                loader = loader.take(self.steps_per_epoch)
            return SinkFeed(self.totals, loader, self.chunk, self.jit_level, self.data_sink), self.epochs
        return HostFeed(self.totals, loader, self.epochs - epoch, on_step), self.epochs

    def _sum_over_ranks(self, value: float) -> float:
        if not self.distribute:
            return value
        return float(ops.AllReduce()(Tensor([value], mstype.float32)).asnumpy()[0])

    def _any_rank(self, flag: bool) -> bool:
        """True on every rank when `flag` is True on any (every rank must stop at the same step, or the others wait
        forever in the next all-reduce)."""
        return self._sum_over_ranks(float(flag)) > 0

    def _check_same_position(self, epoch: int, steps_done: int) -> None:
        """Every node resumes from its own copy of the state: all ranks must start at the same step."""
        if not self.distribute:
            return
        positions = ops.AllGather()(Tensor([[epoch, steps_done]], mstype.float32)).asnumpy()
        if not (positions == positions[0]).all():
            raise ValueError("the ranks resumed from different checkpoints (epoch, step: "
                             f"{sorted({(int(e), int(s)) for e, s in positions})}); give every node the same --resume "
                             "checkpoint, or remove the newer one where it is missing elsewhere")

    def _mean_over_ranks(self, value: float) -> float:
        return self._sum_over_ranks(value) / self.group_size

    def _stop_requested(self, stop: StopRequest) -> bool:
        """Whether any rank was asked to stop (read at chunk boundaries; every rank gets the same answer)."""
        stop.arm()
        return self._any_rank(bool(stop.reason()))

    def _stop(self, stop: StopRequest, path: str) -> int:
        """End a run that was asked to stop once its resumable state is saved at `path`: returns STOPPED_STATUS."""
        self.progress.end_epoch()
        # no rank exits before every node's first rank has saved: msrun kills the other workers as soon as one exits
        # with a non-zero status
        self._sum_over_ranks(0.0)
        reason = stop.reason()
        stop.consume_file()
        self.progress.line(f"stopped on request ({reason or 'from another rank'}): saved the resumable state {path}; "
                           f"continue with --resume auto (exit status {STOPPED_STATUS})")
        return STOPPED_STATUS

    def fit(self, start_epoch: int = 0, steps_done: int = 0) -> int:
        """Train from epoch `start_epoch` (0-based) after `steps_done` of its steps. Returns 0 when all epochs ran,
        STOPPED_STATUS (130) when a stop request ended the run (its state saved, resumable). Raises
        NonFiniteLossError."""
        run_start = time.time()
        self._check_same_position(start_epoch, steps_done)
        records = self.run.keep_metrics_until(start_epoch)
        # the first of equal scores, as the strict comparison below keeps it in the best checkpoint
        best = max((r for r in records if "val_top1" in r), key=lambda r: r["val_top1"], default=None)
        best_top1, best_epoch = (best["val_top1"], best["epoch"]) if best else (-1.0, 0)
        stop = StopRequest(self.run.directory, f"the next boundary of {self.chunk} steps")
        feed, feed_end = None, start_epoch
        skipped_updates = 0
        try:
            for epoch in range(start_epoch, self.epochs):
                done = steps_done if epoch == start_epoch else 0
                if epoch == feed_end:
                    if feed is not None:
                        feed.close()
                    feed, feed_end = self._feed_from(epoch, done)
                epoch_start, loss_sum, clean_steps, images_seen = time.time(), 0.0, 0, 0
                self.progress.start_epoch(epoch, done)
                while done < self.steps_per_epoch:
                    steps = min(self.chunk, self.steps_per_epoch - done)
                    feed.run(steps)
                    chunk_loss, overflows = self.totals.read_and_reset()
                    global_step = epoch * self.steps_per_epoch + done + steps
                    if overflows and not self.drop_overflow_update:
                        raise NonFiniteLossError(
                            f"the loss or the gradients became non-finite at epoch {epoch + 1}, within steps "
                            f"{done + 1}-{done + steps}; the last good checkpoint in {self.run.directory} is intact. "
                            "Lower lr, enable clip_grad, or set drop_overflow_update True to skip such steps")
                    done += steps
                    skipped_updates += overflows
                    loss_sum, clean_steps = loss_sum + chunk_loss, clean_steps + steps - overflows
                    images_seen += steps * self.batch_size * self.group_size
                    if isinstance(feed, SinkFeed):
                        self.progress.advance(steps)
                    self.progress.chunk(done, chunk_loss / (steps - overflows) if steps > overflows else float("nan"),
                                        self.lr_at(global_step - 1), images_seen / (time.time() - epoch_start))
                    # the last chunk of an epoch is followed by its validation and checkpoint: a stop waits for them
                    if done < self.steps_per_epoch and self._stop_requested(stop):
                        return self._stop(stop, self.run.save_state(self.train_step, epoch, done,
                                                                    self.steps_per_epoch))
                self.progress.end_epoch()
                elapsed = time.time() - epoch_start
                record = {"epoch": epoch + 1, "step": (epoch + 1) * self.steps_per_epoch,
                          "train_loss": self._mean_over_ranks(loss_sum / clean_steps if clean_steps else float("nan")),
                          "lr": self.lr_at((epoch + 1) * self.steps_per_epoch - 1),
                          "epoch_time_s": round(elapsed, 2), "images_per_s": round(images_seen / elapsed, 2),
                          "unix_time": int(time.time()), "skipped_updates": skipped_updates,
                          "skipped_images": getattr(getattr(feed.loader, "skipped_images", None), "count", 0)}
                is_best, top1 = False, None
                if self.val_loader is not None and ((epoch + 1) % self.val_interval == 0 or epoch + 1 == self.epochs):
                    with self.train_step.ema_weights_swapped():
                        metrics = evaluate(self.train_step.network, self.val_loader, self.distribute)
                        record.update({f"val_{k}": v for k, v in metrics.items() if k != "num_samples"})
                        top1 = metrics["top1"]
                        is_best = top1 > best_top1
                        if is_best:
                            best_top1, best_epoch = top1, epoch + 1
                            self.run.save_best(self.train_step.network)
                stopping = epoch + 1 < self.epochs and self._stop_requested(stop)
                if (epoch + 1) % self.ckpt_save_interval == 0 or epoch + 1 == self.epochs or stopping:
                    saved = self.run.save_state(self.train_step, epoch + 1, 0, self.steps_per_epoch, score=top1)
                self.run.append_metrics(record)
                self.progress.line(format_record(rounded(record), is_best))  # metrics.jsonl keeps every digit
                if stopping:
                    return self._stop(stop, saved)
        finally:
            self.progress.end_epoch()
            if feed is not None:
                feed.close()
            stop.restore()
        stop.consume_file()  # a request that came during the last epoch: the run is complete, nothing to stop
        self.progress.line(summary(self.epochs - start_epoch, time.time() - run_start, best_top1, best_epoch,
                                   os.path.join(self.run.directory, self.run.best_name)))
        if self.distribute:  # lets a reader of the worker logs check that all ranks hold the same weights
            digest = hashlib.sha256(b"".join(p.asnumpy().tobytes() for p in self.train_step.network.get_parameters()))
            _logger.info("rank %d final weights sha256 %s", self.rank, digest.hexdigest())
        return 0
