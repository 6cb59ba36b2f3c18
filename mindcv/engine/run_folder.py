"""The run folder (`ckpt_save_dir`): what a training run leaves behind, and how it is resumed.

- `config.yaml` (the resolved config), `class_names.txt`, `metrics.jsonl` (one JSON line per epoch) and its plot
  `metrics.png`, `{model}_best.ckpt` (the weights with the best validation top-1): written by rank 0;
- `{model}-{epoch}_{step}.ckpt`, named as MindSpore's `ModelCheckpoint` names them (epoch counted from 1, step within
  that epoch: `convnext_tiny-5_10009.ckpt` ends epoch 5 of 10009 steps), the newest `keep_checkpoint_max` resumable
  states (weights, optimizer, loss scale, EMA; the position is read from the contents): written by the first rank
  of every node, so that each node of a multi-node run can resume from
  its own disk; the ranks hold identical state, and on a shared file system the atomic renames of identical files
  make the duplicates harmless. `ckpt_save_policy` chooses which are kept: the newest `keep_checkpoint_max`
  (latest_k), or the `keep_checkpoint_max` with the best validation top-1 and the newest (top_k);
- `checkpoint_scores.json`, the validation top-1 of each kept epoch checkpoint that had one, by file name
  (top_k ranks by it, also after a resume): written beside them, by the same processes.
"""
import glob
import json
import os
import re

import mindspore as ms

import yaml

from ..errors import ConfigError
from ..io.checkpoint import load_checkpoint_checked, save_checkpoint_atomic, temporary_path
from ..io.names import EPOCH_KEY, METRICS_FILE, RUN_CLASS_NAMES, RUN_RECIPE, SCORES_FILE, STEP_KEY
from .plot import plot_metrics


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
        if writes_records or keeps_state:
            os.makedirs(directory, exist_ok=True)
        self.scores = self._read_scores()  # checkpoint file name -> validation top-1

    def checkpoints(self):
        """Resumable checkpoints of this model, oldest first."""
        pattern = re.compile(re.escape(self.model_name) + r"-(\d+)_(\d+)\.ckpt$")
        found = []
        for path in glob.glob(os.path.join(glob.escape(self.directory), f"{glob.escape(self.model_name)}-*_*.ckpt")):
            match = pattern.search(os.path.basename(path))
            if match:
                found.append(((int(match[1]), int(match[2])), path))
        return [path for _, path in sorted(found)]

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
            save_checkpoint_atomic(train_step, path,
                                   append_dict={EPOCH_KEY: epochs_done, STEP_KEY: steps_done_in_epoch})
            self.scores.pop(name, None)  # a resumed run saves over the names of the epochs it redoes
            if score is not None:
                self.scores[name] = float(score)
            for old in self._not_kept():
                self.scores.pop(os.path.basename(old), None)
                try:
                    os.remove(old)
                except FileNotFoundError:  # another node's first rank removed it from a shared folder
                    pass
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

    @property
    def scores_path(self) -> str:
        return os.path.join(self.directory, SCORES_FILE)

    def _read_scores(self) -> dict:
        """The scores saved beside the checkpoints, of those still there (a file left by deleted ones is stale)."""
        fix = "delete it (top_k then ranks the checkpoints saved from now on)"
        try:
            with open(self.scores_path) as f:
                scores = json.load(f)
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as error:
            raise ValueError(f"{self.scores_path} is not valid JSON ({error}); {fix}") from None
        if not (isinstance(scores, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in scores.values())):
            raise ValueError(f"{self.scores_path} is not a mapping of checkpoint names to numbers; {fix}")
        present = {os.path.basename(path) for path in self.checkpoints()}
        return {name: score for name, score in scores.items() if name in present}

    def _write_scores(self) -> None:
        # renamed over the old file: a reader (a resumed run) sees a whole file, old or new
        temporary = temporary_path(self.scores_path)
        with open(temporary, "w") as f:
            json.dump(self.scores, f, indent=1, sort_keys=True)
        os.replace(temporary, self.scores_path)

    def save_best(self, network) -> None:
        if self.writes_records:
            weights = [{"name": p.name, "data": p.data} for p in network.get_parameters()]
            save_checkpoint_atomic(weights, os.path.join(self.directory, f"{self.model_name}_best.ckpt"))

    def write_run_files(self, recipe: dict, class_names) -> None:
        """The resolved recipe (a dict of config keys, loadable with -c) and the class names, index i on line i."""
        if self.writes_records:
            with open(os.path.join(self.directory, RUN_RECIPE), "w") as f:
                yaml.safe_dump(recipe, f, sort_keys=False)
            with open(os.path.join(self.directory, RUN_CLASS_NAMES), "w") as f:
                f.write("\n".join(class_names) + "\n")

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.directory, METRICS_FILE)

    def read_metrics(self):
        if not os.path.isfile(self.metrics_path):
            return []
        with open(self.metrics_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def keep_metrics_until(self, epoch: int) -> list:
        """Drop the records after `epoch` (a fresh run: all of them; a resumed one: those it will redo)."""
        records = [r for r in self.read_metrics() if r["epoch"] <= epoch]
        if self.writes_records:
            with open(self.metrics_path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
        return records

    def append_metrics(self, record: dict) -> None:
        if not self.writes_records:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        plot_metrics(self.read_metrics(), os.path.join(self.directory, "metrics.png"))

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
    missing = sorted(names - set(state))
    if missing:
        raise ValueError(f"{path} does not fit this run (missing {len(missing)}: {', '.join(missing[:5])}); was it "
                         "saved with another model, optimizer, ema or gradient_accumulation_steps?")
    ms.load_param_into_net(train_step, {k: v for k, v in state.items() if k in names}, strict_load=True)
    return int(state[EPOCH_KEY].asnumpy()), int(state[STEP_KEY].asnumpy())
