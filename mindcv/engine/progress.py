"""What a training run reports as it goes, in MindCV's shapes: its settings at the start, a progress bar on a
terminal or one dated line per chunk in a file (msrun's worker_N.log, nohup), the epoch's record with rounded
figures, a summary at the end, and `result.log` (MindCV's per-epoch table) in the run folder."""
import datetime
import json
import sys
import time

from tqdm import tqdm


def _now() -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def format_duration(seconds: float) -> str:
    """`1h 02m 03s`, `2m 03s` or `4.5s`."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, whole = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {whole:02d}s" if hours else f"{minutes}m {whole:02d}s"


def format_settings(settings: dict) -> str:
    """The run's essential settings, one `Name: value` line each between two rules, as MindCV's train.py prints
    them before training."""
    rule = "-" * 40
    return "\n".join([rule, *(f"{name}: {value}" for name, value in settings.items()), rule])


# decimals of the figures of an epoch's record as printed (metrics.jsonl keeps them all); the others are counts
RECORD_DECIMALS = {"train_loss": 4, "lr": 8, "epoch_time_s": 2, "images_per_s": 1, "val_top1": 2, "val_top5": 2,
                   "val_loss": 4}


def rounded(record: dict) -> dict:
    """`record` with its figures rounded for reading (RECORD_DECIMALS)."""
    return {key: round(value, RECORD_DECIMALS[key]) if key in RECORD_DECIMALS and value == value else value
            for key, value in record.items()}


def format_record(record: dict, is_best: bool) -> str:
    return json.dumps(record) + ("  (best)" if is_best else "")


def result_log(records) -> str:
    """MindCV's `result.log`: a tab-separated table of Epoch, TrainLoss, ValAcc (top-1, %), ValAcc5 (top-5, %)
    and Time (the epoch's seconds); -1 where an epoch was not validated. `records` are metrics.jsonl's, which
    need hold no more than an epoch number."""
    lines = ["Epoch\tTrainLoss\tValAcc\tValAcc5\tTime"]
    for r in records:
        lines.append(f"{r['epoch']}\t{r.get('train_loss', float('nan')):.4f}\t{r.get('val_top1', -1.0):.3f}\t"
                     f"{r.get('val_top5', -1.0):.3f}\t{r.get('epoch_time_s', 0.0):.2f}")
    return "\n".join(lines) + "\n"


def summary(epochs_done: int, elapsed_s: float, best_top1: float, best_epoch: int, best_path: str) -> str:
    """The run's last line: how long it took and its best validation top-1 (when it validated)."""
    line = f"done: {epochs_done} epoch{'' if epochs_done == 1 else 's'} in {format_duration(elapsed_s)}"
    if best_epoch:
        line += f"; best val_top1 {best_top1:.2f} at epoch {best_epoch} ({best_path})"
    return line


class Progress:
    """Progress of the epochs on one rank (`enabled`: rank 0). On a terminal (`interactive`, by default whether
    stdout is one) a tqdm bar per epoch; otherwise one dated line per chunk in MindCV's shape, on `stream`:
    `2026-12-06 04:30:02 Epoch: [2/8], batch: [40/62], loss: 0.812345, lr: 0.003981, images/s: 1549.6,
    time: 1.234s` (loss: the chunk's mean; images/s: over all ranks since the epoch began; time: since the last
    line)."""

    def __init__(self, epochs: int, steps_per_epoch: int, enabled: bool = True, stream=None, interactive=None):
        self.epochs, self.steps_per_epoch, self.enabled = epochs, steps_per_epoch, enabled
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.bar = None
        self.epoch = 0
        self.last_line = time.time()

    def start_epoch(self, epoch: int, steps_done: int) -> None:
        """Epoch `epoch` (0-based) begins after `steps_done` of its steps."""
        self.epoch = epoch
        self.last_line = time.time()
        if self.enabled and self.interactive:
            self.bar = tqdm(total=self.steps_per_epoch, initial=steps_done, desc=f"epoch {epoch + 1}/{self.epochs}",
                            dynamic_ncols=True)

    def advance(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def chunk(self, steps_done: int, loss: float, lr: float, images_per_s: float) -> None:
        """A chunk ended after `steps_done` steps of the epoch."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.1f}")
            return
        now = time.time()
        print(f"{_now()} Epoch: [{self.epoch + 1}/{self.epochs}], batch: [{steps_done}/{self.steps_per_epoch}], "
              f"loss: {loss:.6f}, lr: {lr:.6f}, images/s: {images_per_s:.1f}, time: {now - self.last_line:.3f}s",
              file=self.stream, flush=True)
        self.last_line = now

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def line(self, text: str) -> None:
        """A line of its own: the epoch's record (JSON, with its own time), the summary."""
        if self.enabled:
            print(text, file=self.stream, flush=True)
