"""The run folder (`ckpt_save_dir`): what a training run leaves behind, and how it is resumed.

- `config.yaml` (the resolved config), `class_names.txt`, `metrics.jsonl` (one JSON line per epoch) and its plot
  `metrics.png`, `result.log` (MindCV's per-epoch table), `{model}_best.ckpt` (the weights with the best
  validation top-1): written by rank 0;
- `{model}-{epoch}_{step}.ckpt`, named as MindSpore's `ModelCheckpoint` names them (epoch counted from 1, step within
  that epoch: `convnext_tiny-5_10009.ckpt` ends epoch 5 of 10009 steps), the newest `keep_checkpoint_max` resumable
  states (weights, optimizer, loss scale, EMA; the position is read from the contents): written by the first rank
  of every node, so that each node of a multi-node run can resume from
  its own disk; the ranks hold identical state, and on a shared file system the atomic renames of identical files
  make the duplicates harmless. `ckpt_save_policy` chooses which are kept: the newest `keep_checkpoint_max`
  (latest_k), or the `keep_checkpoint_max` with the best validation top-1 and the newest (top_k);
- `checkpoint_scores.json`, the validation top-1 of each kept epoch checkpoint that had one, by file name
  (top_k ranks by it, also after a resume): written beside them, by the same processes;
- `written_files.json`, the names of the files above that the toolkit wrote here (each is listed before it is
  written). Only those are ever replaced or deleted: a folder holding a file of these names that the toolkit did
  not write (a user's config.yaml, MindCV's checkpoints of the same name pattern) is refused at the start, fresh
  or resumed, with the names. A resume from an older checkpoint moves the run's newer checkpoints (and the best
  weights, when they came from the epochs it redoes) into a new `set_aside-<time>-*/` instead of overwriting them.

Every file is replaced atomically (temporary file, then os.replace), so a link planted at its name is replaced,
never written through; metrics.jsonl is appended to only as a regular file that is not a link.
"""
import datetime
import json
import math
import os
import re
import tempfile

import mindspore as ms

import yaml

from ..errors import ConfigError
from ..io.checkpoint import load_checkpoint_checked, save_checkpoint_atomic
from ..io.files import append_text, read_text, temporary_path, write_text_atomic
from ..io.names import (EPOCH_KEY, METRICS_FILE, METRICS_PLOT, RESULT_LOG, RUN_CLASS_NAMES, RUN_RECIPE,
                        SCORES_FILE, SET_ASIDE_PREFIX, STEP_KEY, WINDOW_OVERFLOW, WRITTEN_FILES)
from .plot import plot_metrics
from .progress import result_log


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class RunFolder:
    """The files of one run.

    Args:
        directory: the folder (created by the writers).
        model_name: prefix of the checkpoint names.
        keep_checkpoint_max: resumable checkpoints kept (the others are deleted); 0 keeps all.
        writes_records: this process writes config, class names, metrics, plot and best weights (rank 0).
        keeps_state: this process writes the resumable checkpoints and their scores (the first rank of its node).
        policy: which checkpoints are kept: "latest_k", the newest keep_checkpoint_max; "top_k", the
            keep_checkpoint_max with the best scores and the newest (resume needs it), so checkpoints without a
            score (no validation that epoch, or saved mid-epoch) go once a newer one is saved.

    Raises ConfigError when the folder holds files of the run's names that the toolkit did not write there.
    """

    def __init__(self, directory: str, model_name: str, keep_checkpoint_max: int, writes_records: bool,
                 keeps_state: bool, policy: str = "latest_k"):
        if policy not in ("latest_k", "top_k"):
            raise ValueError(f"policy must be 'latest_k' or 'top_k', got {policy!r}")
        self.directory = directory
        self.model_name = model_name
        self.keep = keep_checkpoint_max
        self.writes_records = writes_records
        self.keeps_state = keeps_state
        self.policy = policy
        self._pattern = re.compile(re.escape(model_name) + r"-(\d+)_(\d+)\.ckpt")
        if writes_records or keeps_state:
            os.makedirs(directory, exist_ok=True)
        # listed before the record is read: a file another rank writes meanwhile is in the record before it exists
        present = self._run_files_present()
        self._deleted = set()
        self.written = self._read_written() & present  # names of the files here that the toolkit wrote
        foreign = sorted(present - self.written)
        if foreign:
            shown = ", ".join(foreign[:6]) + (f" and {len(foreign) - 6} more" if len(foreign) > 6 else "")
            raise ConfigError(f"{directory} holds files that this toolkit did not write there ({shown}); training "
                              f"would overwrite or delete them: move them away, or pass another --ckpt_save_dir "
                              f"(to continue from one of those checkpoints, give its new path to --resume)")
        self.scores = self._read_scores()  # checkpoint file name -> validation top-1

    # ---- which files are the toolkit's

    @property
    def best_name(self) -> str:
        return f"{self.model_name}_best.ckpt"

    def _run_files_present(self) -> set:
        """The names in the folder that a run writes (its checkpoints and records), whoever wrote them."""
        fixed = {RUN_RECIPE, RUN_CLASS_NAMES, METRICS_FILE, METRICS_PLOT, RESULT_LOG, SCORES_FILE, self.best_name}
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return set()
        return {name for name in names if name in fixed or self._pattern.fullmatch(name)}

    @property
    def written_path(self) -> str:
        return os.path.join(self.directory, WRITTEN_FILES)

    def _read_written(self) -> set:
        try:
            names = json.loads(read_text(self.written_path)).get("files")
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, AttributeError):
            names = None
        if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
            raise ConfigError(f"{self.written_path} is damaged (not a JSON object whose 'files' lists file names): "
                              "the toolkit cannot tell its files from others' here; move the folder's files away, or "
                              "pass another --ckpt_save_dir")
        return set(names)

    def _own(self, name: str) -> str:
        """Record `name` as written by the toolkit (before writing it: a crash in between leaves a name without a
        file, never a file without its name). Returns its path."""
        if name not in self.written:
            self.written.add(name)
            self._deleted.discard(name)
            self._write_record()
        return os.path.join(self.directory, name)

    def _write_record(self) -> None:
        # merged with the file: the first ranks of other nodes write the same one on a shared file system
        try:
            on_disk = self._read_written()
        except ConfigError:
            on_disk = set()
        write_text_atomic(self.written_path, json.dumps(
            {"files": sorted((on_disk | self.written) - self._deleted)}, indent=1) + "\n")

    def _delete(self, path: str) -> None:
        """Remove a file the toolkit wrote, and its name (the record is written by the caller, once for all)."""
        try:
            os.remove(path)
        except FileNotFoundError:  # another node's first rank removed it from a shared folder
            pass
        self._forget(os.path.basename(path))

    def _forget(self, name: str) -> None:
        """Drop `name` from what this folder holds of the toolkit's (its file was removed or moved away)."""
        self.written.discard(name)
        self._deleted.add(name)
        self.scores.pop(name, None)

    # ---- checkpoints

    def _position(self, path: str):
        """(epoch counted from 1, step within it) of a checkpoint's name."""
        match = self._pattern.fullmatch(os.path.basename(path))
        return int(match[1]), int(match[2])

    def checkpoints(self):
        """The resumable checkpoints of this model that the toolkit wrote here, oldest first."""
        names = [name for name in self.written if self._pattern.fullmatch(name)]
        return sorted((os.path.join(self.directory, name) for name in names), key=self._position)

    def save_state(self, train_step, epochs_done: int, steps_done_in_epoch: int, steps_per_epoch: int,
                   score: float = None) -> str:
        """Save the resumable state after `epochs_done` whole epochs and `steps_done_in_epoch` steps of the next,
        with its `score` (the validation top-1 of those weights, or None), and delete those the policy no longer
        keeps. Returns the path."""
        if steps_done_in_epoch:  # inside epoch epochs_done + 1 (counted from 1)
            name = f"{self.model_name}-{epochs_done + 1}_{steps_done_in_epoch}.ckpt"
        else:  # the end of epoch epochs_done
            name = f"{self.model_name}-{epochs_done}_{steps_per_epoch}.ckpt"
        path = os.path.join(self.directory, name)
        if self.keeps_state:
            save_checkpoint_atomic(train_step, self._own(name),
                                   append_dict={EPOCH_KEY: epochs_done, STEP_KEY: steps_done_in_epoch})
            self.scores.pop(name, None)  # a resumed run saves over the names of the epochs it redoes
            if score is not None and math.isfinite(score):
                self.scores[name] = float(score)
            for old in self._not_kept():
                self._delete(old)
            self._write_record()
            self._write_scores()
        return path

    def _not_kept(self):
        """The checkpoints that the policy no longer keeps."""
        if self.keep == 0:
            return []
        checkpoints = self.checkpoints()
        if self.policy == "latest_k":
            return checkpoints[:-self.keep]
        scored = [path for path in checkpoints if os.path.basename(path) in self.scores]
        # best first; the sort is stable, so of equal scores the older stays, as in MindCV
        best = sorted(scored, key=lambda path: -self.scores[os.path.basename(path)])[:self.keep]
        kept = {*best, checkpoints[-1]}
        return [path for path in checkpoints if path not in kept]

    def set_aside_newer(self, epochs_done: int, steps_done_in_epoch: int, steps_per_epoch: int) -> str:
        """A resume from an older checkpoint (after `epochs_done` epochs and `steps_done_in_epoch` steps) redoes
        the epochs of this run's newer checkpoints and would save over their names: move them (and the best
        weights, when the records say they came from those epochs) into a new `set_aside-<UTC time>-*` folder, with the
        metrics of the epochs redone. Returns that folder, or "" when nothing was newer."""
        position = (epochs_done + 1, steps_done_in_epoch) if steps_done_in_epoch else (epochs_done, steps_per_epoch)
        newer = [path for path in self.checkpoints() if self._position(path) > position] if self.keeps_state else []
        records = self.read_metrics()
        redone = [r for r in records if r["epoch"] > epochs_done]
        best_redone = max((r.get("val_top1", -1.0) for r in redone), default=-1.0)
        best_kept = max((r.get("val_top1", -1.0) for r in records if r["epoch"] <= epochs_done), default=-1.0)
        moves = list(newer)
        if self.writes_records and self.best_name in self.written and best_redone > best_kept:
            moves.append(os.path.join(self.directory, self.best_name))
        if not (moves or (redone and self.writes_records)):
            return ""
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        aside = tempfile.mkdtemp(prefix=f"{SET_ASIDE_PREFIX}-{stamp}-", dir=self.directory)  # never an earlier one
        if redone and self.writes_records:
            write_text_atomic(os.path.join(aside, METRICS_FILE), "".join(json.dumps(r) + "\n" for r in records))
        for path in moves:
            try:
                os.replace(path, os.path.join(aside, os.path.basename(path)))
            except FileNotFoundError:  # another node's first rank moved it from a shared folder
                pass
            self._forget(os.path.basename(path))
        self._write_record()
        if self.keeps_state:
            self._write_scores()
        return aside

    @property
    def scores_path(self) -> str:
        return os.path.join(self.directory, SCORES_FILE)

    def _read_scores(self) -> dict:
        """The scores saved beside the checkpoints, of those still there (a file left by deleted ones is stale).
        A score that is not finite ranks nowhere: the checkpoint counts as unscored."""
        fix = "delete it (top_k then ranks the checkpoints saved from now on)"
        try:
            scores = json.loads(read_text(self.scores_path))
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise ConfigError(f"cannot read {self.scores_path} ({error.strerror or error}); {fix}") from None
        except ValueError as error:
            raise ConfigError(f"{self.scores_path} is not valid JSON ({error}); {fix}") from None
        if not (isinstance(scores, dict) and all(_is_number(v) for v in scores.values())):
            raise ConfigError(f"{self.scores_path} is not a mapping of checkpoint names to numbers; {fix}")
        present = {os.path.basename(path) for path in self.checkpoints()}
        return {name: score for name, score in scores.items() if name in present and math.isfinite(score)}

    def _write_scores(self) -> None:
        # renamed over the old file: a reader (a resumed run) sees a whole file, old or new
        write_text_atomic(self._own(SCORES_FILE), json.dumps(self.scores, indent=1, sort_keys=True))

    def save_best(self, network) -> None:
        if self.writes_records:
            weights = [{"name": p.name, "data": p.data} for p in network.get_parameters()]
            save_checkpoint_atomic(weights, self._own(self.best_name))

    def write_run_files(self, recipe: dict, class_names) -> None:
        """The resolved recipe (a dict of config keys, loadable with -c) and the class names, index i on line i."""
        if self.writes_records:
            write_text_atomic(self._own(RUN_RECIPE), yaml.safe_dump(recipe, sort_keys=False))
            write_text_atomic(self._own(RUN_CLASS_NAMES), "\n".join(class_names) + "\n")

    # ---- metrics

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.directory, METRICS_FILE)

    def read_metrics(self):
        """The records of metrics.jsonl: each line a JSON object of numbers with a whole "epoch" from 1. Anything
        else is a ConfigError naming the file and the line."""
        try:
            lines = read_text(self.metrics_path).splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read {self.metrics_path} ({getattr(error, 'strerror', None) or error}); "
                              "move it away to start the records afresh") from None
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not (isinstance(record, dict) and isinstance(record.get("epoch"), int) and record["epoch"] >= 1
                    and all(_is_number(v) for v in record.values())):
                raise ConfigError(f"{self.metrics_path} line {number} is not a record of this toolkit (a JSON object "
                                  "of numbers with a whole epoch from 1); fix or delete that line")
            records.append(record)
        return records

    def keep_metrics_until(self, epoch: int) -> list:
        """Drop the records after `epoch` (a fresh run: all of them; a resumed one: those it will redo)."""
        records = [r for r in self.read_metrics() if r["epoch"] <= epoch]
        if self.writes_records:
            write_text_atomic(self._own(METRICS_FILE), "".join(json.dumps(r) + "\n" for r in records))
        return records

    def append_metrics(self, record: dict) -> None:
        """Add the epoch's record to metrics.jsonl, and redraw what is made of all of them: the plot and result.log
        (MindCV's per-epoch table)."""
        if not self.writes_records:
            return
        append_text(self._own(METRICS_FILE), json.dumps(record) + "\n")
        records = self.read_metrics()
        plot = self._own(METRICS_PLOT)
        temporary = temporary_path(plot)
        plot_metrics(records, temporary)
        os.replace(temporary, plot)
        write_text_atomic(self._own(RESULT_LOG), result_log(records))

    def check_fresh(self) -> None:
        """A run that does not resume must not mix its checkpoints with an earlier run's."""
        if self.checkpoints():
            raise ConfigError(f"{self.directory} holds checkpoints of an earlier run: pass --resume auto to continue "
                              "it, or another --ckpt_save_dir")

    def resume_path(self, resume: str) -> str:
        """The checkpoint `resume` names: a path, or "auto" for the newest resumable checkpoint here."""
        if resume != "auto":
            return resume
        checkpoints = self.checkpoints()
        if not checkpoints:
            raise FileNotFoundError(f"--resume auto found no {self.model_name}-<epoch>_<step>.ckpt in {self.directory}")
        return checkpoints[-1]


def restore(train_step, path: str, instead: str = "use --ckpt_path instead of --resume"):
    """Load a resumable checkpoint into the train step. Returns (epoch, steps done in that epoch). `instead`: how
    to start from the weights of a file that holds no training state, for the error message."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"resume checkpoint not found: {path}")
    state = load_checkpoint_checked(path)
    if EPOCH_KEY not in state:
        raise ValueError(f"{path} holds no training state (epoch, optimizer); to start from its weights {instead}")
    # The learning-rate table comes from the config, so a resumed run may change epoch_size or the schedule;
    # global_step, restored below, is its position.
    names = {p.name for p in train_step.get_parameters() if p.name != "learning_rate"}
    # a checkpoint written before the window's carried overflow existed holds none: its window carried nothing
    missing = sorted(names - set(state) - {WINDOW_OVERFLOW})
    if missing:
        raise ValueError(f"{path} does not fit this run (missing {len(missing)}: {', '.join(missing[:5])}); was it "
                         "saved with another model, optimizer, ema or gradient_accumulation_steps?")
    # what the file does not set is loaded over itself (the lr table, an older file's window flag): MindSpore warns
    # "[...] are not loaded" of any parameter not given
    kept = {p.name: p for p in train_step.get_parameters() if p.name == "learning_rate" or p.name not in state}
    ms.load_param_into_net(train_step, {**{k: v for k, v in state.items() if k in names}, **kept}, strict_load=True)
    return int(state[EPOCH_KEY].asnumpy()), int(state[STEP_KEY].asnumpy())
