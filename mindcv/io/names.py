"""What this toolkit writes, named in one place: the files of a run folder and the entries of a resumable
checkpoint besides the model's weights. Readers and writers at every layer take the names from here.

A resumable checkpoint (`mindspore.save_checkpoint` of the train step) holds
- the network's parameters, under their own names (MindCV's, so MindCV's checkpoints load strictly);
- the optimizer's state: `global_step` (updates taken, skipped ones included), `learning_rate`, the moments
  `<prefix>.<param>` and step counters (`OPTIMIZER_STATE_PREFIXES`, `OPTIMIZER_STATE_KEYS`);
- the train step's: `loss_scale`, `current_iterator_step` (micro-batches seen), `last_overflow_iterator_step`,
  `accum.<param>` (the open accumulation window's gradient sums), `window_overflow` (whether a micro-batch of
  that window overflowed), `ema.<param>` (the EMA weights);
- the loop's position: `epoch_num`, `step_num` (epochs done, steps done in the next epoch).
"""
import os

# run-folder files: its resolved recipe, its class names (line i: class i), per-epoch metrics and their plot,
# checkpoint scores
RUN_RECIPE, RUN_CLASS_NAMES = "config.yaml", "class_names.txt"
METRICS_FILE, METRICS_PLOT, SCORES_FILE = "metrics.jsonl", "metrics.png", "checkpoint_scores.json"
RESULT_LOG = "result.log"  # MindCV's per-epoch table (Epoch, TrainLoss, ValAcc, ValAcc5, Time)
# the names of the files in a run folder that the toolkit wrote there: the only ones it may replace or delete
WRITTEN_FILES = "written_files.json"
# a stop request: the run saves a resumable state at its next chunk boundary, removes the file and exits
STOP_FILE = "STOP"
# where a resume from an older checkpoint moves the run's newer checkpoints (instead of overwriting them)
SET_ASIDE_PREFIX = "set_aside"

# the loop's position, appended to each resumable checkpoint
EPOCH_KEY, STEP_KEY = "epoch_num", "step_num"
# the train step's Parameters
LOSS_SCALE, ITERATOR_STEP, LAST_OVERFLOW_STEP = "loss_scale", "current_iterator_step", "last_overflow_iterator_step"
WINDOW_OVERFLOW = "window_overflow"  # gradient accumulation: a micro-batch of the open window overflowed
ACCUM_PREFIX, EMA_PREFIX = "accum", "ema"  # cloned parameter tuples: `accum.<param>`, `ema.<param>`
# the optimizers' (mindcv.optim.optimizers clones its moments under these prefixes)
OPTIMIZER_STATE_PREFIXES = ("adam_m.", "adam_v.", "nadam_m.", "nadam_v.", "rmsprop_square_avg.",
                            "rmsprop_momentum.", "rmsprop_grad_avg.", "adagrad_sum.", "lion_m.", "moments.", "adan_m.",
                            "adan_diff.", "adan_n.", "adan_prev_grad.", "lamb_m.", "lamb_v.", "learning_rate_group_")
OPTIMIZER_STATE_KEYS = ("global_step", "learning_rate", "beta1_power", "beta2_power", "nadam_step",
                        "nadam_mu_product", "adagrad_step", "adan_step", "lamb_step")
# what MindSpore's and MindCV's own training writes beside the weights (their optimizers, loss scale, callbacks)
_FOREIGN_STATE_PREFIXES = ("moment1.", "moment2.")
_FOREIGN_STATE_KEYS = ("scale_sense", "current_epoch", "cur_step_num", "cur_epoch_num", "batch_num")

_STATE_PREFIXES = OPTIMIZER_STATE_PREFIXES + _FOREIGN_STATE_PREFIXES + (f"{ACCUM_PREFIX}.", f"{EMA_PREFIX}.")
_STATE_KEYS = frozenset(OPTIMIZER_STATE_KEYS + _FOREIGN_STATE_KEYS +
                        (EPOCH_KEY, STEP_KEY, LOSS_SCALE, ITERATOR_STEP, LAST_OVERFLOW_STEP, WINDOW_OVERFLOW))


def is_training_state(name: str) -> bool:
    """True for checkpoint entries that hold optimizer, train-step or loop state rather than model weights."""
    return name in _STATE_KEYS or name.startswith(_STATE_PREFIXES)


def beside_checkpoint(checkpoint_path: str, name: str) -> str:
    """The path of the run-folder file `name` (RUN_RECIPE, RUN_CLASS_NAMES) beside `checkpoint_path`."""
    return os.path.join(os.path.dirname(checkpoint_path), name)
