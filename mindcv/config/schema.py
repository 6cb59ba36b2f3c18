"""The configuration schema: every key a recipe or the command line may set, with type, default and help.

`parse_config(argv)` reads `-c/--config RECIPE.yaml`, then applies `--key value` overrides; both are
checked against `SCHEMA`: an unknown key is a `ConfigError` that suggests the closest known key, and a value
outside its option's valid range (`Option.valid`, shown by `python -m mindcv.config.schema`) one that names
the range.

Every key of MindCV's train/validate command line is a key here, with MindCV's meaning (MindCV's own spelling
of a key we name otherwise is an alias: `use_nesterov` is `nesterov`). Choice values are matched without regard
to case (`loss: CE` is `ce`), and a bool key given bare on the command line (`--pretrained`) is True. A few
keys are accepted with fewer values than MindCV's (`Option.supported`): `check_supported` refuses the others
for training with a one-line ConfigError, never ignoring them.
"""
import argparse
import difflib
import math
import os
import re
import sys
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from mindcv.errors import ConfigError
from mindcv.io.names import RUN_RECIPE, beside_checkpoint
from mindcv.scheduler import SCHEDULERS


@dataclass(frozen=True)
class Range:
    """The numbers an option accepts (for a list option: each of its numbers): finite ones from `low` to
    `high` (None: unbounded), each end included unless `low_open` / `high_open`, and the values in `also`.
    Subnormal numbers (below 2.2e-308 but not 0) are refused: no setting means them, and their reciprocals
    overflow (crop_pct 1e-320)."""
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    also: Tuple[float, ...] = ()

    def __contains__(self, value) -> bool:
        if value in self.also:
            return True
        if not math.isfinite(value) or 0 < abs(value) < sys.float_info.min:
            return False
        above = self.low is None or value > self.low or (value == self.low and not self.low_open)
        below = self.high is None or value < self.high or (value == self.high and not self.high_open)
        return above and below

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {self.low}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {self.high}"
        else:
            text = "finite"
        return " or ".join([*map(str, self.also), text])


NON_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
AT_LEAST_1 = Range(1)
PROBABILITY = Range(0, 1)
BELOW_1 = Range(0, 1, high_open=True)  # [0, 1): rates that must leave something
FRACTION = Range(0, 1, low_open=True)  # (0, 1]: parts of a whole
MAX_IMAGE_SIDE = 4096  # pixels: image_resize 100000 made 9.3 GiB per image


@dataclass(frozen=True)
class Option:
    name: str
    type: type  # bool, int, float, str or list (a list of floats)
    default: Any
    help: str
    choices: Optional[Sequence] = None
    optional: bool = False  # None is an accepted value
    item: type = float  # element type of a list option
    valid: Optional[Range] = None  # numbers accepted: the value, or each item of a list
    length: Optional[Tuple[int, int]] = None  # a list's fewest and most items
    ordered: bool = False  # a list's items ascend (a (min, max) pair: min <= max)
    aliases: Tuple[str, ...] = ()  # other names of the key (MindCV's spelling), in recipes and on the command line
    supported: Optional[Tuple] = None  # the values training honours so far (None: every valid value)
    unsupported: str = ""  # why other values are refused, and what to do instead
    or_text: Optional[str] = None  # a bool that may also be a text matching this pattern (pretrained: a Hub tag)
    one_off: bool = False  # an instruction to one run (resume from here), not part of its recipe: see recipe_of
    scripts: Tuple[str, ...] = ("train",)  # the scripts that read the key (SCRIPTS); the others' help leaves it out
    group: str = ""  # its heading in --help and docs/config.md (GROUPS), set by the marker before it in SCHEMA

    def accepts(self, value) -> bool:
        """Whether `value` (already of the option's type) lies in the option's valid range."""
        if value is None or self.valid is None:
            return True
        if self.type is not list:
            return value in self.valid
        fewest, most = self.length or (0, math.inf)
        return (fewest <= len(value) <= most and all(v in self.valid for v in value)
                and (not self.ordered or all(a <= b for a, b in zip(value, value[1:]))))

    def requirement(self) -> str:
        """The valid range in words: '>= 0', '2 numbers, each in (0, 1], min <= max'."""
        if self.valid is None:
            return ""
        if self.type is not list:
            return str(self.valid)
        if self.length is None:
            count = "numbers"
        else:
            fewest, most = self.length
            count = f"{fewest} numbers" if fewest == most else f"{fewest} to {most} numbers"
        parts = [count, f"each {self.valid}"]
        if self.ordered:
            parts.append("min <= max" if self.length == (2, 2) else "in ascending order")
        return ", ".join(parts)


def _opt(name, type_, default, help_, choices=None, item=float, valid=None, length=None, ordered=False, aliases=(),
         supported=None, unsupported="", or_text=None, scripts=("train",), one_off=False):
    return Option(name, type_, default, help_, choices, optional=default is None, item=item, valid=valid,
                  length=length, ordered=ordered, aliases=aliases, supported=supported, unsupported=unsupported,
                  or_text=or_text, scripts=scripts, one_off=one_off)


# The scripts that read the recipe, by the name their help and errors use, and what each is for.
SCRIPTS = {"train": "python train.py", "validate": "python validate.py", "infer": "python infer.py",
           "export": "python -m mindcv.export"}
# who reads a key besides train.py: every script (the network and its input), the ones that predict from images
# (the evaluation transform, the precision), the ones that read a dataset split
EVERY_SCRIPT = ("train", "validate", "infer", "export")
PREDICTING = ("train", "validate", "infer")
VALIDATING = ("train", "validate")
# the headings of --help and docs/config.md, in MindCV's order (its config.py's argument groups)
GROUPS = {"system": "System", "dataset": "Dataset", "augmentation": "Augmentation", "model": "Model",
          "training": "Training loop and precision", "checkpoint": "Checkpoints and resuming", "loss": "Loss",
          "optimizer": "Optimizer", "scheduler": "Learning-rate scheduler"}


def _grouped(entries) -> List[Option]:
    """The options of `entries`, each with the group of the latest group name (a key of GROUPS) before it."""
    options, group = [], ""
    for entry in entries:
        if isinstance(entry, str):
            group = entry
        else:
            options.append(replace(entry, group=group))
    return options


SCHEMA: List[Option] = _grouped([
    "system",
    _opt("mode", int, 0, "0: graph mode (compiled), 1: PyNative (eager)", (0, 1), scripts=EVERY_SCRIPT),
    _opt("device_target", str, "auto", "CPU, GPU, Ascend, or auto: what this machine has",
         ("auto", "CPU", "GPU", "Ascend"), scripts=EVERY_SCRIPT),
    _opt("distribute", bool, False, "data-parallel training under msrun (one process per device); from a recipe it "
         "applies only when a launcher (msrun) started the process, from the command line always", scripts=VALIDATING),
    _opt("jit_level", str, "O0", "graph compilation level (mindspore.JitConfig): O0 kernel by kernel, O1 with "
         "operator fusion, O2 whole graph sunk to the device (Ascend; elsewhere O0 is used)", ("O0", "O1", "O2"),
         scripts=EVERY_SCRIPT),
    _opt("seed", int, 42, "seed of weights initialisation, data order and augmentation", valid=Range(0, 2**31 - 1),
         scripts=VALIDATING),
    _opt("val_while_train", bool, True, "validate during training"),
    _opt("val_interval", int, 1, "validate every this many epochs", valid=AT_LEAST_1),
    _opt("log_interval", int, 100, "steps between progress reports (loss, lr, images/s) when batches are fed from "
         "the host; the loss is read from the device only then", valid=AT_LEAST_1),
    "dataset",
    _opt("dataset", str, "imagefolder", "dataset kind: imagenet or imagefolder (root/<split>/<class>/<image>), or "
         "cifar10, cifar100, mnist (their standard binary files under data_dir)", scripts=PREDICTING),
    _opt("data_dir", str, "", "dataset root holding the train and val split folders", scripts=PREDICTING),
    _opt("train_split", str, "train", "folder of the training split under data_dir", scripts=("train", "infer")),
    _opt("val_split", str, "val", "folder of the validation split under data_dir", scripts=VALIDATING),
    _opt("dataset_download", bool, False, "download the dataset into data_dir first (cifar10, cifar100, mnist)",
         scripts=VALIDATING),
    _opt("shuffle", bool, True, "shuffle the training set each epoch"),
    _opt("num_samples", int, None, "use only this many samples (debugging)", valid=AT_LEAST_1, scripts=VALIDATING),
    _opt("num_parallel_workers", int, 4, "data loading workers per process (at most the CPU count)",
         valid=Range(1, 1024),
         scripts=VALIDATING),
    _opt("python_multiprocessing", bool, False, "run the data loading workers as processes instead of threads "
         "(for Python transforms that hold the GIL; the built-in transforms release it)", scripts=VALIDATING),
    _opt("batch_size", int, 32, "images per step per device; the global batch is batch_size x devices",
         valid=Range(1, 1 << 20), scripts=EVERY_SCRIPT),
    _opt("drop_remainder", bool, True, "drop the last incomplete training batch"),
    _opt("aug_repeats", int, 0, "repeated augmentation: each epoch takes the first 1/aug_repeats of its sample order "
         "and shows every image aug_repeats times, differently augmented (spread over the ranks); the steps per "
         "epoch stay the same. 0 or 1: off", valid=NON_NEGATIVE),
    _opt("eval_shuffle", bool, False, "visit the validation set in a seeded random order (decides which images "
         "num_samples keeps; the scores of a whole split do not depend on the order)", scripts=VALIDATING),
    "augmentation",
    _opt("image_resize", int, 224, "training crop and evaluation crop size, pixels", valid=Range(1, MAX_IMAGE_SIDE),
         scripts=EVERY_SCRIPT),
    _opt("scale", list, [0.08, 1.0], "random resized crop area range, fraction of the image", valid=FRACTION,
         length=(2, 2), ordered=True),
    _opt("ratio", list, [0.75, 1.333], "random resized crop aspect-ratio range", valid=POSITIVE, length=(2, 2),
         ordered=True),
    _opt("hflip", float, 0.5, "horizontal flip probability", valid=PROBABILITY),
    _opt("vflip", float, 0.0, "vertical flip probability", valid=PROBABILITY),
    _opt("color_jitter", list, None, "colour jitter strengths: brightness, contrast, saturation[, hue]; one "
         "number: the same for brightness, contrast and saturation (MindCV's float)",
         valid=NON_NEGATIVE, length=(1, 4)),
    _opt("interpolation", str, "bilinear", "resize interpolation", ("bilinear", "bicubic", "nearest"),
         scripts=PREDICTING),
    _opt("auto_augment", str, None, "augmentation policy, in timm's spelling: randaug-m9-mstd0.5-inc1 (RandAugment; "
         "w0: weighted), autoaug / autoaugr (AutoAugment's ImageNet policy), 3a (DeiT III), augmix-m5-w4-d2, "
         "trivialaugwide"),
    _opt("aug_splits", int, 0, "AugMix split batches, for the jsd loss: 3 puts every image in its batch three "
         "times, clean and as 2 views augmented by auto_augment (AugMix: augmix-m3-w3) or color_jitter (3 x "
         "batch_size images a step, the clean views first); 0: off", (0, 3)),
    _opt("re_prob", float, 0.0, "random erasing probability", valid=PROBABILITY),
    _opt("re_value", str, "0", "random erasing fill: a number, or 'random' for per-pixel normal noise"),
    _opt("re_scale", list, [0.02, 0.33], "random erasing area range, fraction of the image", valid=FRACTION,
         length=(2, 2), ordered=True),
    _opt("re_ratio", list, [0.3, 3.3], "random erasing aspect-ratio range", valid=POSITIVE, length=(2, 2),
         ordered=True),
    _opt("re_max_attempts", int, 10, "random erasing tries to place a box", valid=AT_LEAST_1),
    _opt("mean", list, None, "normalisation mean per channel, 0-255 scale (default: ImageNet's)", valid=Range(0, 255),
         scripts=PREDICTING),
    _opt("std", list, None, "normalisation std per channel, 0-255 scale (default: ImageNet's)", valid=POSITIVE,
         scripts=PREDICTING),
    _opt("crop_pct", float, 0.875, "evaluation: resize the shorter side to image_resize / crop_pct, then centre crop",
         valid=FRACTION, scripts=PREDICTING),
    _opt("mixup", float, 0.0, "mixup alpha; 0 disables", valid=NON_NEGATIVE),
    _opt("cutmix", float, 0.0, "cutmix alpha; 0 disables", valid=NON_NEGATIVE),
    _opt("cutmix_prob", float, 1.0, "probability of applying mixup/cutmix to a batch", valid=PROBABILITY),
    "model",
    _opt("model", str, "convnext_tiny", "registered model name, see mindcv.models.list_models()", scripts=EVERY_SCRIPT),
    _opt("num_classes", int, None, "classifier outputs (default: the number of class folders)",
         valid=Range(1, 1_000_000),
         scripts=EVERY_SCRIPT),
    _opt("in_channels", int, 3, "input image channels", valid=Range(1, 1024), scripts=EVERY_SCRIPT),
    _opt("pretrained", bool, False, "start from the published ImageNet weights of the model (downloaded into "
         "$MINDCV_HOME), or from a Hugging Face Hub repository such as timm/convnextv2_tiny.fcmae_ft_in22k_in1k",
         or_text=r"[\w.-]+/[\w.-]+", scripts=VALIDATING),
    _opt("ckpt_path", str, "", "weights to start from (train) or to evaluate (validate, infer, export): .ckpt, "
         ".safetensors, .pth", scripts=EVERY_SCRIPT),
    _opt("depths", list, None, "override the model's blocks per stage (4 integers), e.g. for a small demo model",
         item=int, valid=Range(1, 1000), length=(4, 4), scripts=EVERY_SCRIPT),
    _opt("dims", list, None, "override the model's channels per stage (4 integers)", item=int, valid=Range(1, 16384),
         length=(4, 4), scripts=EVERY_SCRIPT),
    _opt("drop_rate", float, None, "dropout rate before the classifier, in training (default: the model's, 0)",
         valid=BELOW_1),
    _opt("drop_path_rate", float, None, "stochastic depth rate of the last block (default: the model's, 0 for "
         "ConvNeXt)", valid=BELOW_1),
    _opt("layer_scale_init_value", float, None, "initial layer-scale gamma; 0 disables (default: the model's, 1e-6 "
         "for ConvNeXt, none for ConvNeXt V2)", valid=NON_NEGATIVE, scripts=EVERY_SCRIPT),
    _opt("head_init_scale", float, 1.0, "scale of the initial classifier weights", valid=NON_NEGATIVE),
    _opt("ema", bool, False, "train: keep an exponential moving average (EMA) of the weights, validate and save it; "
         "validate, infer, export: a checkpoint's EMA weights are used whenever it holds them, --ema False takes its "
         "raw weights, --ema True insists on EMA ones", scripts=EVERY_SCRIPT),
    _opt("ema_decay", float, 0.9999, "EMA decay per step", valid=PROBABILITY),
    "training",
    _opt("epoch_size", int, 90, "training epochs", valid=AT_LEAST_1),
    _opt("dataset_sink_mode", bool, True, "feed data through the device queue (Ascend/GPU; CPU reads on the host)"),
    _opt("sink_size", int, -1, "steps per device-side loop (data sink) between host reads of the loss; -1: one "
         "epoch. Host-fed runs read every min(sink_size, log_interval) steps", valid=Range(1, also=(-1,))),
    _opt("amp_level", str, "O0", "mixed precision: O0 fp32, O1 / O2 / O3 float16 (O2 keeps LayerNorm fp32)",
         ("O0", "O1", "O2", "O3"), scripts=PREDICTING),
    _opt("val_amp_level", str, None, "mixed precision of validate.py / infer (default: amp_level)",
         ("O0", "O1", "O2", "O3"), scripts=PREDICTING),
    _opt("amp_cast_list", str, None, "cell classes that replace amp_level's own list: [nn.Dense, nn.Conv2d] or a YAML "
         "list, of mindspore.nn ('nn.' optional) or mindcv.models.layers; O1 runs these cells in float16 and the rest "
         "in float32, O2 these in float32 and the rest in float16 (ConvNeXt's pointwise layers follow their block); "
         "O0 and O3 ignore it", scripts=PREDICTING),
    "checkpoint",
    _opt("ckpt_save_dir", str, "./runs/train", "run folder: checkpoints, resolved config, metrics, plot"),
    _opt("ckpt_save_interval", int, 1, "save a checkpoint every this many epochs", valid=AT_LEAST_1),
    _opt("keep_checkpoint_max", int, 10, "epoch checkpoints kept, chosen by ckpt_save_policy; 0 keeps all",
         valid=NON_NEGATIVE),
    _opt("ckpt_save_policy", str, "latest_k", "which epoch checkpoints to keep: latest_k (the newest "
         "keep_checkpoint_max) or top_k (the keep_checkpoint_max best by validation top-1, and the newest, which "
         "resume needs; needs val_while_train)", ("latest_k", "top_k")),
    _opt("resume", str, "", "resume from this checkpoint, or 'auto': the newest one in ckpt_save_dir", one_off=True),
    _opt("resume_opt", bool, False, "resume training from ckpt_path, as --resume ckpt_path: weights, optimizer "
         "state and position from one of our {model}-{epoch}_{step}.ckpt (MindCV's checkpoints hold weights only: "
         "their optimizer state is in a separate optim_{model}.ckpt)", one_off=True),
    "loss",
    _opt("loss", str, "ce", "loss: ce (softmax cross entropy), bce (per-class sigmoid cross entropy), "
         "asl_single_label / asl_multi_label (asymmetric loss), jsd (AugMix consistency: needs aug_splits 3)",
         ("ce", "bce", "asl_single_label", "asl_multi_label", "jsd")),
    _opt("label_smoothing", float, 0.0, "label smoothing of the targets (integer or mixed)", valid=BELOW_1),
    _opt("aux_factor", float, 0.0, "weight of auxiliary logits in the loss, for models that return them (ConvNeXt "
         "does not)", valid=NON_NEGATIVE),
    _opt("reduction", str, "mean", "how the loss of a batch is reduced: mean or sum over the images (none: one "
         "value per image)", ("mean", "sum", "none"), supported=("mean", "sum"),
         unsupported="a training step needs one loss value per batch; use mean or sum"),
    "optimizer",
    _opt("opt", str, "adamw", "optimizer (see mindcv.optim.create_optimizer)",
         ("adam", "adamw", "nadam", "adan", "lion", "lamb", "sgd", "momentum", "nesterov", "rmsprop", "adagrad")),
    _opt("momentum", float, 0.9, "momentum (sgd/momentum); beta1 of adam/adamw/lion", valid=BELOW_1),
    _opt("beta2", float, None, "beta2 of adam/adamw/lion, with momentum as beta1 (default: 0.999 for "
         "adam/adamw, 0.99 for lion, and beta1 0.9)", valid=BELOW_1),
    _opt("eps", float, 1e-8, "epsilon of adam, adamw, nadam, adan, lamb, rmsprop and adagrad", valid=POSITIVE),
    _opt("schedule_decay", float, 4e-3, "nadam's momentum decay (PyTorch's momentum_decay)", valid=NON_NEGATIVE),
    _opt("nesterov", bool, False, "Nesterov momentum (sgd/momentum)", aliases=("use_nesterov",)),
    _opt("weight_decay", float, 1e-4, "weight decay", valid=NON_NEGATIVE),
    _opt("weight_decay_filter", str, "disable", "which parameters skip weight decay: disable (none), auto "
         "(names with beta/gamma), norm_and_bias (norms, biases, layer scale)", ("disable", "auto", "norm_and_bias")),
    _opt("layer_decay", float, None, "layer-wise learning-rate decay for fine-tuning, e.g. 0.8", valid=FRACTION),
    _opt("loss_scale_type", str, "fixed", "loss scaling: fixed, dynamic, or auto (dynamic below O0)",
         ("fixed", "dynamic", "auto")),
    _opt("loss_scale", float, 1.0, "loss scale (fixed) or its initial value (dynamic)", valid=POSITIVE),
    _opt("drop_overflow_update", bool, False, "skip the update of a step whose gradients overflow"),
    _opt("clip_grad", bool, False, "clip gradients by global norm"),
    _opt("clip_value", float, 15.0, "maximum global gradient norm when clip_grad", valid=POSITIVE),
    _opt("gradient_accumulation_steps", int, 1, "accumulate gradients over this many steps per update",
         valid=AT_LEAST_1),
    "scheduler",
    _opt("scheduler", str, "cosine_decay", "learning-rate schedule (see mindcv.scheduler.create_scheduler)",
         SCHEDULERS),
    _opt("lr", float, 0.001, "peak learning rate, for the global batch", valid=NON_NEGATIVE),
    _opt("min_lr", float, 1e-6, "final learning rate of cosine decay", valid=NON_NEGATIVE),
    _opt("warmup_epochs", int, 3, "linear warm-up epochs", valid=NON_NEGATIVE),
    _opt("warmup_factor", float, 0.0, "warm-up starts at warmup_factor x lr", valid=PROBABILITY),
    _opt("decay_epochs", int, 10, "epochs of decay after warm-up", valid=AT_LEAST_1),
    _opt("decay_rate", float, 0.9, "multiplier of step decays", valid=POSITIVE),
    _opt("multi_step_decay_milestones", list, [30, 60, 90], "epochs at which multi_step_decay multiplies by decay_rate",
         item=int, valid=NON_NEGATIVE, ordered=True),
    _opt("lr_epoch_stair", bool, False, "change the learning rate once per epoch instead of every step"),
    _opt("num_cycles", int, 1, "cosine_decay: cosine cycles over decay_epochs each, restarting at the peak; "
         "cyclic: triangles", valid=AT_LEAST_1),
    _opt("cycle_decay", float, 1.0, "cosine_decay: each cycle's peak is cycle_decay x the previous one's",
         valid=NON_NEGATIVE),
])
OPTIONS: Dict[str, Option] = {o.name: o for o in SCHEMA}
ALIASES: Dict[str, str] = {alias: o.name for o in SCHEMA for alias in o.aliases}
# A key of MindCV's saved configs that names the recipe file itself; MindCV ignores it when reading a recipe.
RECIPE_KEY = "config"
def _parse_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def coerce(option: Option, value):
    """`value` converted to the option's type; ConfigError when it does not fit."""
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and option.optional):
        if option.optional:
            return None
        raise ConfigError(f"{option.name} may not be empty; default is {option.default!r}")
    try:
        if option.type is bool and option.or_text and isinstance(value, str) and re.fullmatch(option.or_text, value):
            result = value
        elif option.type is bool:
            result = _parse_bool(value)
        elif option.type is list:
            items = value if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
            result = [option.item(float(v)) if option.item is int else float(v) for v in items]
            if option.item is int and any(float(v) != int(float(v)) for v in items):
                raise ValueError("not integers")
        elif option.type is int and isinstance(value, float) and not value.is_integer():
            raise ValueError("not an integer")
        else:
            result = option.type(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer of 1e309 or .inf
        raise ConfigError(f"{option.name}: {value!r} is not a valid {option.type.__name__} ({option.help})") from None
    if option.choices is not None and isinstance(result, str):
        # one spelling per choice: MindCV's recipes write 'CE' and 'o2' as well as 'ce' and 'O2'
        result = {str(c).lower(): c for c in option.choices}.get(result.lower(), result)
    if option.choices is not None and result not in option.choices:
        raise ConfigError(f"{option.name}: {result!r} is not one of {', '.join(map(str, option.choices))} "
                          f"({option.help})")
    return result


def unknown_key_error(key: str, where: str, script: str = "train", own_keys: Sequence[str] = ()) -> ConfigError:
    """ConfigError for an unknown `key` (found in `where`), suggesting the closest of the schema's keys and aliases and
    the script's `own_keys` (infer.py's --topk, ...), if one is close."""
    # only a close match helps (drop_path: drop_path_rate; epochs: epoch_size); a loose one misleads (image_path is
    # not aug_repeats)
    close = difflib.get_close_matches(key, [*OPTIONS, *ALIASES, *own_keys], n=1, cutoff=0.7)
    hint = f"; did you mean '{close[0]}'?" if close else f"; see `{SCRIPTS[script]} --help` for every key"
    return ConfigError(f"unknown config key '{key}' in {where}{hint}")


class _RecipeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also refuses a key repeated in one mapping (YAML keeps the last silently), an
    alias inside the value it names (expanding it never ends), aliases that expand the document to more
    than MAX_NODES values (a "billion laughs" file: 1 KB that expands to millions), and values nested more
    than MAX_DEPTH deep (thousands of brackets exhaust Python's recursion, slowly). Recipes are flat lists
    of a hundred keys or so; the checks run on the parsed document, before any value is built."""

    MAX_NODES = 10_000
    MAX_DEPTH = 50

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > self.MAX_DEPTH:
                raise ConfigError(f"{self.name} nests values more than {self.MAX_DEPTH} levels deep (line "
                                  f"{self.peek_event().start_mark.line + 1}); a recipe needs two or three")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            self._check(node, set())
        return node

    def _check(self, node: yaml.Node, enclosing: set) -> None:
        """Count `node` and what it holds, as many times as aliases repeat them; `enclosing`: the ids of the
        collections it lies in."""
        self._nodes += 1
        if self._nodes > self.MAX_NODES:
            raise ConfigError(f"{self.name} expands to more than {self.MAX_NODES} values through its aliases "
                              "(*name); write the values out")
        if id(node) in enclosing:
            raise ConfigError(f"{self.name}: the value on line {node.start_mark.line + 1} contains itself "
                              "through an alias (*name); write the value out")
        if isinstance(node, yaml.ScalarNode):
            return
        enclosing.add(id(node))
        if isinstance(node, yaml.MappingNode):
            self._check_unique_keys(node)
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value
        for child in children:
            self._check(child, enclosing)
        enclosing.discard(id(node))

    def _check_unique_keys(self, node: yaml.MappingNode) -> None:
        lines = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue  # keys merged in with `<<: *base` may be overridden: that is what merging is for
            line = key.start_mark.line + 1
            if key.value in lines:
                raise ConfigError(f"{self.name}: key '{key.value}' appears twice, on lines {lines[key.value]} and "
                                  f"{line}; keep one")
            lines[key.value] = line


def load_yaml(path: str) -> Dict[str, Any]:
    """The keys of a recipe, checked and typed, under their schema names (an alias such as `use_nesterov` is
    read as its key). Nested sections are flattened (their keys must be known); a `config` key (MindCV's saved
    configs name their own recipe file so) is skipped. Raises ConfigError for a missing file, invalid YAML, a
    repeated key, a key given under two names, aliases that expand without end or beyond reason, deep
    nesting, and unknown keys or values of the wrong type."""
    try:
        with open(path) as f:
            loader = _RecipeLoader(f)
            try:
                data = loader.get_single_data() or {}
            finally:
                loader.dispose()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where} is not valid YAML: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    values, spelled = {}, {}
    for key, value in _flatten(data):
        if key == RECIPE_KEY:
            continue
        name = ALIASES.get(key, key)
        if name not in OPTIONS:
            raise unknown_key_error(key, path)
        if spelled.get(name, key) != key:  # the same key under its two names (nesterov, use_nesterov)
            raise ConfigError(f"{path}: '{spelled[name]}' and '{key}' are the same key; keep one")
        spelled[name] = key
        values[name] = coerce(OPTIONS[name], value)
    return values


def _flatten(data: dict):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flatten(value)
        else:
            yield key, value


def build_parser(description: str = "", script: str = "train") -> argparse.ArgumentParser:
    """An argparse parser with `-c/--config` and one `--key` per schema option, also reachable by its aliases
    (no defaults filled in, so that only the keys given on the command line override the recipe). A bool key
    given without a value (`--pretrained`) is True. Its help shows the keys that `script` (a key of SCRIPTS)
    reads, under their GROUPS headings; the others are accepted too (a training recipe or command line serves
    every script) but left out of the help, which says so."""
    others = "" if script == "train" else (f"{SCRIPTS[script]} also accepts the other keys of a recipe (`python "
                                           "train.py --help` lists them) and does not use them.")
    parser = argparse.ArgumentParser(prog=SCRIPTS[script], description=description, allow_abbrev=False, epilog=others,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-c", "--config", default="", metavar="RECIPE", help="YAML recipe: ours, or MindCV's")
    sections = {}
    for option in SCHEMA:
        bare = dict(nargs="?", const=True) if option.type is bool else dict(nargs="+" if option.type is list else None)
        flags = [f"--{name}" for name in (option.name, *option.aliases)]
        if script in option.scripts:
            if option.group not in sections:
                sections[option.group] = parser.add_argument_group(GROUPS[option.group])
            section = sections[option.group]
            help_text = f"{option.help} (default: {option.default}{_valid_text(option, '; valid: ')})"
        else:
            section, help_text = parser, argparse.SUPPRESS
        section.add_argument(*flags, dest=option.name, default=argparse.SUPPRESS, metavar=option.type.__name__.upper(),
                             help=help_text, **bare)
    return parser


def _short_usage(parser: argparse.ArgumentParser) -> str:
    """The usage line without the key list (argparse's own lists every option: a hundred lines above an error)."""
    positional = " ".join(f"{action.metavar or action.dest} ..." if action.nargs in ("+", "*") else
                          str(action.metavar or action.dest) for action in parser._actions if not action.option_strings)
    return f"%(prog)s [-h] [-c RECIPE] [--KEY VALUE ...]{' ' + positional if positional else ''}"


def _valid_text(option: Option, prefix: str = "") -> str:
    """The values an option takes, in words ('' when any value of its type does), after `prefix`."""
    text = " / ".join(map(str, option.choices)) if option.choices else option.requirement()
    if option.supported is not None:
        text += f"{'; ' if text else ''}training takes only {' / '.join(map(str, option.supported))} so far"
    return prefix + text if text else ""


def parse_config(argv: Optional[List[str]] = None, description: str = "", extra=None,
                 recipe_beside_checkpoint: bool = False, script: str = "train") -> argparse.Namespace:
    """Defaults, then the recipe named by --config, then command-line overrides.

    `extra(parser)` may add script-specific arguments that are not part of the recipe schema. `script` (a key of
    SCRIPTS) chooses the keys that --help shows (`build_parser`).
    `recipe_beside_checkpoint` (validate, infer, export): without --config, a `--ckpt_path` inside a run folder
    takes the recipe from the run's `config.yaml` beside it; `config.run_folder_recipe` is then its path
    (otherwise ""), and `config.config` too.
    Raises ConfigError for an unknown key, a value of the wrong type or out of its range (`validate_config`)."""
    parser = build_parser(description, script)
    if extra is not None:
        extra(parser)
    parser.usage = _short_usage(parser)
    args, unknown = parser.parse_known_args(argv)
    for token in unknown:
        if token.startswith("--"):
            own_keys = [flag[2:] for action in parser._actions for flag in action.option_strings
                        if flag.startswith("--") and flag[2:] not in OPTIONS]
            raise unknown_key_error(token[2:].split("=")[0], "the command line", script, own_keys)
    if unknown:
        raise ConfigError(f"unexpected argument '{unknown[0]}'; options take the form --key value")
    values = {o.name: o.default for o in SCHEMA}
    run_folder_recipe = ""
    if not args.config and recipe_beside_checkpoint and getattr(args, "ckpt_path", ""):
        beside = beside_checkpoint(args.ckpt_path, RUN_RECIPE)
        run_folder_recipe = beside if os.path.isfile(beside) else ""
    if args.config or run_folder_recipe:
        values.update(load_yaml(args.config or run_folder_recipe))
    if run_folder_recipe:  # a file beside a checkpoint never makes a script download (only the user's own settings)
        values["dataset_download"] = False
    for name, value in vars(args).items():
        if name in OPTIONS:
            values[name] = coerce(OPTIONS[name], value)
        else:
            values[name] = value
    config = argparse.Namespace(**values)
    config.run_folder_recipe = run_folder_recipe
    config.config = args.config or run_folder_recipe
    # some keys mean more when typed than when inherited from a recipe (distribute: see setup_context)
    config.command_line_keys = frozenset(name for name in vars(args) if name in OPTIONS)
    validate_config(config)
    return config


def validate_config(config: argparse.Namespace) -> None:
    """ConfigError for the first value outside its option's valid range (`Option.valid`), saying where it was
    set, then for a mean or std that does not fit in_channels: checked on the resolved config, since
    in_channels may come from the recipe and mean from the command line, or the other way round."""
    for option in SCHEMA:
        value = getattr(config, option.name)
        if not option.accepts(value):
            raise ConfigError(f"{option.name} must be {option.requirement()}, got {value}"
                              f"{where_set(config, option.name)}")
    for name in ("mean", "std"):
        values = getattr(config, name)
        # with one channel, three values (ImageNet's) are averaged by the transforms
        if values is not None and len(values) != config.in_channels and (len(values), config.in_channels) != (3, 1):
            raise ConfigError(f"{name} must have one value per channel (in_channels is {config.in_channels}), got "
                              f"{len(values)}: {values}")


def check_supported(config: argparse.Namespace) -> None:
    """ConfigError for the first key whose value training cannot honour (`Option.supported`), saying where it was
    set and what to do instead, then for keys that training cannot honour together. Called by train.py:
    validation and prediction do not depend on these."""
    for option in SCHEMA:
        value = getattr(config, option.name)
        if option.supported is not None and value not in option.supported:
            raise ConfigError(f"{option.name} {value!r}{where_set(config, option.name)} is not supported: "
                              f"{option.unsupported}")
    if config.ckpt_save_policy == "top_k" and not config.val_while_train:
        raise ConfigError("ckpt_save_policy top_k ranks checkpoints by validation top-1: set val_while_train True")
    if config.loss == "jsd" and config.aug_splits != 3:
        raise ConfigError("loss jsd compares each image's clean and augmented views: set aug_splits 3 (and "
                          "auto_augment, e.g. augmix-m3-w3)")
    if config.aug_splits == 3 and (config.mixup > 0 or config.cutmix > 0):
        raise ConfigError("aug_splits 3 keeps each image's three views apart, which mixup and cutmix would mix: set "
                          "mixup 0 and cutmix 0")
    if config.aug_splits == 3 and not config.auto_augment and not config.color_jitter:
        raise ConfigError("aug_splits 3 augments two views of each image with auto_augment or color_jitter, and "
                          "neither is set (the views would equal the clean one): set auto_augment, e.g. augmix-m3-w3")


def resume_checkpoint(config: argparse.Namespace) -> str:
    """The checkpoint training resumes from ("" when it starts afresh): `resume` (a path or "auto"), or
    `ckpt_path` with `resume_opt` (MindCV's spelling of resuming). ConfigError for resume_opt without ckpt_path,
    and for resume and resume_opt naming different checkpoints."""
    if not config.resume_opt:
        return config.resume
    if not config.ckpt_path:
        raise ConfigError("resume_opt True resumes from ckpt_path, which is not set: pass --ckpt_path CHECKPOINT, "
                          "or --resume auto to continue the run in ckpt_save_dir")
    if config.resume and os.path.realpath(config.resume) != os.path.realpath(config.ckpt_path):
        raise ConfigError(f"resume {config.resume} and resume_opt (with ckpt_path {config.ckpt_path}) name different "
                          "checkpoints to resume from: keep one")
    return config.ckpt_path


def where_set(config: argparse.Namespace, name: str) -> str:
    """' (on the command line)' or ' (in RECIPE)': where the value of `name` came from (defaults are valid)."""
    if name in getattr(config, "command_line_keys", ()):
        return " (on the command line)"
    recipe = getattr(config, "config", "")
    return f" (in {recipe})" if recipe else ""


def recipe_of(config: argparse.Namespace) -> Dict[str, Any]:
    """The resolved configuration as a recipe (a run folder's config.yaml): the schema keys and their values, in the
    schema's order of reading, less the one-off instructions to the run that wrote it (`Option.one_off`: resume,
    resume_opt), so that training from the recipe starts a run as the first one did instead of resuming. With
    resume_opt, ckpt_path names the checkpoint resumed, not weights to start from: it is left out too."""
    recipe = {k: v for k, v in vars(config).items() if k in OPTIONS and not OPTIONS[k].one_off}
    if config.resume_opt:
        del recipe["ckpt_path"]
    return recipe


def dump_config(config: argparse.Namespace, path: str) -> None:
    """Write the resolved configuration as YAML (loadable with -c)."""
    with open(path, "w") as f:
        yaml.safe_dump(recipe_of(config), f, sort_keys=False)


def schema_table() -> str:
    """Every key as Markdown, one table per group (GROUPS): key and its aliases, type, default, valid values, the
    scripts that read it, help. `python -m mindcv.config.schema`."""
    sections = []
    for group, title in GROUPS.items():
        rows = [f"### {title}", "", "| key | type | default | valid | read by | what it does |",
                "|---|---|---|---|---|---|"]
        for option in SCHEMA:
            if option.group != group:
                continue
            kind = f"list of {option.item.__name__}" if option.type is list else option.type.__name__
            names = " = ".join(f"`{name}`" for name in (option.name, *option.aliases))
            cells = [names, kind, f"`{option.default}`", _valid_text(option), ", ".join(option.scripts), option.help]
            rows.append(f"| {' | '.join(cells)} |")
        sections.append("\n".join(rows))
    return "\n\n".join(sections)


if __name__ == "__main__":
    print(schema_table())
