"""The top layer: what train.py, validate.py and the other scripts share: device set-up, data and model from a
config, and turning a user's mistake into a one-line error instead of a traceback."""
import difflib
import functools
import logging
import os
import re
import sys
from typing import List, Sequence, Tuple

import mindspore as ms

from mindcv.config.schema import where_set
from mindcv.data import create_dataset, create_loader, create_transforms
from mindcv.engine.train_step import apply_amp
from mindcv.errors import ConfigError
from mindcv.io.ckpt_check import validate_checkpoint_file
from mindcv.io.names import EMA_PREFIX, RUN_RECIPE, beside_checkpoint
from mindcv.models import _ema_state, create_model, is_model, list_models
from mindcv.models.convnext import use_eval_kernels
from mindcv.models.registry import model_keywords
from mindcv.models.weights import load_state, read_state, to_mindcv_names
from mindcv.ops.switch import fast_cpu_ops_enabled

_logger = logging.getLogger("mindcv")

# The keys that shape a network's parameters: a checkpoint fits only the values it was trained with.
MODEL_KEYS = frozenset({"model", "depths", "dims", "in_channels", "layer_scale_init_value"})

# Errors that mean "the input is wrong" (a missing folder, a bad key, a checkpoint of another model).
USER_ERRORS = (ConfigError, FileNotFoundError, NotADirectoryError, ValueError, ImportError)


def exit_on_user_error(main):
    """Run `main`; a USER_ERRORS exception prints `error: <message>` and exits with status 2.
    Set MINDCV_DEBUG=1 to see the traceback instead."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as error:
            if os.environ.get("MINDCV_DEBUG"):
                raise
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def launched_for_distribution() -> bool:
    """Whether a launcher started this process as one of a group: msrun (MS_ROLE=MS_WORKER, or MS_SCHED: msrun
    starts its scheduler with the same command, and that process must join the group too, not train alone), a rank
    table (RANK_TABLE_FILE) or mpirun (OMPI_COMM_WORLD_SIZE)."""
    env = os.environ
    return env.get("MS_ROLE") in ("MS_WORKER", "MS_SCHED") or "RANK_TABLE_FILE" in env or "OMPI_COMM_WORLD_SIZE" in env


def resolve_jit_level(jit_level: str, device_target: str) -> str:
    """The compilation level to use: O2 (whole-graph sinking through the GE back end) exists on Ascend only;
    elsewhere it runs as O0."""
    return jit_level if jit_level != "O2" or device_target == "Ascend" else "O0"


def resolve_amp_level(amp_level: str) -> str:
    """The mixed-precision level to use. On the CPU back end with mindcv's kernels float16 has no fast kernels:
    the stock float16 graph of the 224 px recipe needs over 24 GiB and is slower than float32, so O1-O3 run as
    O0 there (with the kernels off, MINDCV_FAST_CPU_OPS=0, the level is kept: that is the device path)."""
    if amp_level != "O0" and fast_cpu_ops_enabled():
        _logger.info("amp_level %s: the CPU back end has no fast float16 kernels (the float16 graph needs many times "
                     "the memory, and is slower); running in float32 (O0) on the CPU", amp_level)
        return "O0"
    return amp_level


def apply_eval_amp(network, config):
    """`network` in the evaluation precision: val_amp_level (default: amp_level), as `resolve_amp_level` allows it on
    this back end. Returns the network to run (O2/O3 wrap it)."""
    return apply_amp(network, resolve_amp_level(config.val_amp_level or config.amp_level), config.amp_cast_list)


def setup_context(config) -> Tuple[int, int]:
    """Execution mode, device, compilation level and the data-parallel group. Returns (rank, group size).

    `distribute` from a recipe applies only when a launcher started the process (see
    `launched_for_distribution`), so the 8-device recipe also validates or fine-tunes on one device; typed on the
    command line (`--distribute True`) it always applies. Every script calls it first: it also refuses a model this
    toolkit does not have (`check_model_name`) before any data is read."""
    check_model_name(config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(config, "run_folder_recipe", ""):
        _logger.info("config: %s, the recipe of the checkpoint's run folder (the command line overrides it)",
                     config.run_folder_recipe)
    ms.set_context(mode=config.mode)
    if config.device_target != "auto":
        try:
            ms.set_device(config.device_target) if hasattr(ms, "set_device") else ms.set_context(
                device_target=config.device_target)
        except RuntimeError as error:  # 'Unsupported device target Ascend. This process only supports ...'
            supported = re.search(r"supports one of the \[([^]]*)\]", str(error))
            here = f" (MindSpore here runs on {supported.group(1).replace(chr(39), '')})" if supported else ""
            raise ConfigError(f"device_target {config.device_target}{where_set(config, 'device_target')}: this "
                              f"machine has no {config.device_target} device that MindSpore can use{here}; pass "
                              "--device_target CPU (or auto) to run here") from None
    device_target = ms.get_context("device_target")
    jit_level = resolve_jit_level(config.jit_level, device_target)
    ms.set_context(jit_config={"jit_level": jit_level})
    _logger.info("device %s, %s mode, jit_level %s%s", device_target, "graph" if config.mode == 0 else "PyNative",
                 jit_level, "" if jit_level == config.jit_level else f" ({config.jit_level} needs Ascend)")
    config.jit_level = jit_level
    if config.distribute and "distribute" not in getattr(config, "command_line_keys", ()) and \
            not launched_for_distribution():
        _logger.info("distribute: the recipe asks for it, but no launcher (msrun) started this process: running on "
                     "one device (pass --distribute True to insist)")
        config.distribute = False
    if not config.distribute:
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init
    try:
        init()
    except RuntimeError as error:
        raise ConfigError(f"distribute is True but no process group could be set up ({str(error).splitlines()[0]}); "
                          "launch with msrun, or pass --distribute False") from None
    rank, group_size = get_rank(), get_group_size()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=group_size)
    return rank, group_size


def require_data_dir(config) -> None:
    if not config.data_dir:
        raise ConfigError("data_dir is not set: pass --data_dir /path/to/dataset (the folder that holds "
                          f"{config.train_split}/ and {config.val_split}/)")
    if not os.path.isdir(config.data_dir):
        raise FileNotFoundError(f"data_dir {config.data_dir} does not exist; pass --data_dir pointing at the "
                                "dataset root")


def _split_batches(config, is_training: bool) -> bool:
    """Whether the training batches are AugMix split batches (aug_splits 3: clean and 2 augmented views)."""
    return is_training and config.aug_splits == 3


def build_transform(config, is_training: bool):
    """The per-image transform of the config: `transform(encoded_bytes, rng) -> float32 [C, H, W]`
    (training: random resized crop and augmentation; evaluation: resize to image_resize / crop_pct,
    centre crop image_resize pixels, normalize with mean/std, ImageNet's when unset). A color_jitter of one
    number is the strength of brightness, contrast and saturation alike, as MindCV's float. Training with
    aug_splits 3: the transform's stages (primary, secondary, final), from which the loader makes the views."""
    optional = {k: getattr(config, k) for k in ("mean", "std") if getattr(config, k) is not None}
    re_value = "random" if config.re_value == "random" else float(config.re_value)
    jitter = config.color_jitter
    separate = _split_batches(config, is_training)
    transform = create_transforms(dataset_name=config.dataset, is_training=is_training,
                                  image_resize=config.image_resize, separate=separate, scale=tuple(config.scale),
                                  ratio=tuple(config.ratio), hflip=config.hflip, vflip=config.vflip,
                                  color_jitter=jitter[0] if jitter and len(jitter) == 1 else jitter,
                                  interpolation=config.interpolation, auto_augment=config.auto_augment,
                                  re_prob=config.re_prob, re_value=re_value, re_scale=tuple(config.re_scale),
                                  re_ratio=tuple(config.re_ratio), re_max_attempts=config.re_max_attempts,
                                  crop_pct=config.crop_pct, in_channels=config.in_channels, **optional)
    if separate and not isinstance(transform, tuple):  # the cifar / mnist transforms have no augmentation stage
        raise ConfigError(f"aug_splits 3 augments views with the ImageNet-style transform, which dataset "
                          f"{config.dataset} does not use: set aug_splits 0")
    return transform


def build_dataset(config, split: str, is_training: bool, rank: int = 0, group_size: int = 1):
    """The files of one split (scanned once: loaders for later epochs reuse it), in the config's order and
    sharded over `group_size` ranks (training pads shards to equal length, evaluation sees every image once).
    Training shuffles with `shuffle` and repeats samples with `aug_repeats` > 1; evaluation shuffles with
    `eval_shuffle`."""
    sharded = dict(num_shards=group_size, shard_id=rank) if group_size > 1 else {}
    return create_dataset(config.dataset, config.data_dir, split=split,
                          shuffle=config.shuffle if is_training else config.eval_shuffle,
                          num_samples=config.num_samples, download=config.dataset_download,
                          num_aug_repeats=config.aug_repeats if is_training else 0, seed=config.seed,
                          pad_shards=is_training, **sharded)


def read_class_names(path: str) -> List[str]:
    """Class names from a file of one name per line (line i: class i), as a run folder's class_names.txt.
    FileNotFoundError naming the file when it cannot be read."""
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as error:
        raise FileNotFoundError(f"cannot read class names from {path}: {error.strerror}") from None


def check_same_classes(expected: Sequence[str], found: Sequence[str], expected_source: str, found_source: str):
    """ConfigError unless `found` names the classes of `expected` (labels are indices into the sorted names, so
    any difference scores images against the wrong classes); the message names the classes in only one."""
    if list(expected) == list(found):
        return
    found_set, expected_set = frozenset(found), frozenset(expected)
    only_expected = [name for name in expected if name not in found_set]
    only_found = [name for name in found if name not in expected_set]
    parts = [f"only in {source}: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}"
             for source, names in ((expected_source, only_expected), (found_source, only_found)) if names]
    raise ConfigError(f"the classes of {found_source} differ from those of {expected_source} ({'; '.join(parts)})")


def build_loader(config, dataset, is_training: bool, num_classes: int = None, start_epoch: int = 0,
                 skip_batches: int = 0):
    """The batched pipeline over `dataset` (from `build_dataset`) as the config describes it (training:
    augmentation, mixup/cutmix or AugMix split batches of 3 x batch_size images (aug_splits 3), shuffling;
    evaluation: resize + centre crop, fixed order); its first pass is epoch `start_epoch`, less its first
    `skip_batches` batches."""
    # label smoothing is the loss's (it smooths integer and mixed targets alike): the pipeline must not add it too
    mixing = dict(mixup=config.mixup, cutmix=config.cutmix, cutmix_prob=config.cutmix_prob) if is_training else {}
    return create_loader(dataset, config.batch_size, drop_remainder=config.drop_remainder and is_training,
                         is_training=is_training, num_classes=num_classes or len(dataset.class_names),
                         transform=build_transform(config, is_training),
                         num_parallel_workers=config.num_parallel_workers, seed=config.seed,
                         python_multiprocessing=config.python_multiprocessing,
                         separate=_split_batches(config, is_training), start_epoch=start_epoch,
                         skip_batches=skip_batches, **mixing)


def check_model_name(config) -> None:
    """ConfigError for a model this toolkit does not have, saying which it has: a MindCV recipe of another family
    (resnet50) runs here with --model convnext_* and the rest of the recipe as it is."""
    if is_model(config.model):
        return
    close = difflib.get_close_matches(config.model, list_models(), n=1, cutoff=0.7)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ConfigError(f"unknown model '{config.model}'{where_set(config, 'model')}: {hint}this toolkit has the "
                      "ConvNeXt and ConvNeXt V2 families (convnext_tiny, convnextv2_tiny, ...; "
                      "mindcv.models.list_models() lists them); pass --model convnext_tiny (or another convnext_*) "
                      "to run the rest of the recipe with it")


def build_model(config, num_classes: int, checkpoint_path: str = "", pretrained: bool = True):
    """`create_model` with the model keys of the config that the model's constructor takes (`model_keywords`: a
    family's own keywords stay its own; one it does not take, typed on the command line, is a ConfigError); the
    published weights with `config.pretrained` unless `pretrained` is False (the caller loads other weights). Eval
    mode runs the ConvNeXt blocks as two kernels on the CPU (`use_eval_kernels`; training validates this network)."""
    model_keys = dict(drop_path_rate=config.drop_path_rate, layer_scale_init_value=config.layer_scale_init_value,
                      head_init_scale=config.head_init_scale, drop_rate=config.drop_rate,
                      depths=tuple(config.depths) if config.depths else None,
                      dims=tuple(config.dims) if config.dims else None)
    accepted = model_keywords(config.model)
    if accepted is not None:
        refused = sorted(k for k in model_keys if k not in accepted and k in getattr(config, "command_line_keys", ()))
        if refused:
            raise ConfigError(f"model {config.model} takes no {', '.join(refused)}: leave "
                              f"{', '.join('--' + k for k in refused)} out")
        model_keys = {k: v for k, v in model_keys.items() if k in accepted}
    network = create_model(config.model, num_classes=num_classes, in_channels=config.in_channels,
                           pretrained=config.pretrained if pretrained else False, checkpoint_path=checkpoint_path,
                           **model_keys)
    return use_eval_kernels(network)


def build_eval_model(config):
    """The model of the config holding the weights of `config.ckpt_path`, in inference mode.

    The classifier has as many outputs as the checkpoint's (`config.num_classes`, when set, must agree):
    unlike fine-tuning, prediction and export must not run with a freshly initialised classifier.
    Raises ConfigError without ckpt_path, ValueError for a checkpoint without a classifier or of another model
    (naming the run folder's config.yaml, and the model keys that the command line changed in it)."""
    if not config.ckpt_path:
        raise ConfigError("no weights: pass --ckpt_path CHECKPOINT (.ckpt, .safetensors or .pth)")
    holds_ema = _holds_ema(config.ckpt_path)
    if _evaluates_ema(config, holds_ema):
        _logger.info("weights: the EMA weights of %s (its %s.* entries, as training validated them; --ema False "
                     "takes its raw weights)", config.ckpt_path, EMA_PREFIX)
        state = _ema_state(config.ckpt_path)
    else:
        _logger.info("weights: %s%s", config.ckpt_path, " (its raw weights, as --ema False asks; without it, its "
                     "EMA weights)" if holds_ema else "")
        state, _ = to_mindcv_names(read_state(config.ckpt_path))
    if "classifier.weight" not in state:
        raise ValueError(f"{config.ckpt_path} holds no classifier (a backbone-only checkpoint?); "
                         "fine-tune it first with train.py --ckpt_path")
    num_classes = int(state["classifier.weight"].shape[0])
    if config.num_classes and config.num_classes != num_classes:
        raise ValueError(f"num_classes is {config.num_classes} but the classifier in {config.ckpt_path} has "
                         f"{num_classes} outputs")
    network = build_model(config, num_classes, pretrained=False)
    try:
        load_state(network, state, source=config.ckpt_path)  # the file is read once, above
    except ValueError as error:
        # the usual cause: model keys (depths, dims, ...) other than the run's
        recipe = beside_checkpoint(config.ckpt_path, RUN_RECIPE)
        if not os.path.isfile(recipe):
            raise
        if config.config and os.path.samefile(config.config, recipe):
            changed = sorted(MODEL_KEYS & config.command_line_keys)
            raise ValueError(f"{error} The command line changes {', '.join(changed) or 'no model key'} of the "
                             f"run's {recipe}") from None
        raise ValueError(f"{error} The run folder has its recipe: leave -c out to use it ({recipe})") from None
    network.set_train(False)
    return network


def _holds_ema(path: str) -> bool:
    """Whether `path` is a .ckpt with EMA weights (`ema.*` entries: train.py with ema True writes them)."""
    if not (path.lower().endswith(".ckpt") and os.path.isfile(path)):
        return False
    return any(name.startswith(f"{EMA_PREFIX}.") for name in validate_checkpoint_file(path))


def _evaluates_ema(config, holds_ema: bool) -> bool:
    """Whether validate, infer and export take the EMA weights of `config.ckpt_path`: as `--ema` says on the command
    line (True: ValueError later for a checkpoint without them), else whenever the checkpoint holds them
    (`holds_ema`), so that these score the weights that training validated and ranked (checkpoint_scores.json)."""
    if "ema" in getattr(config, "command_line_keys", ()):
        return config.ema
    return holds_ema
