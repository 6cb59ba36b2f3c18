"""MindCV users: their recipes, command lines and factory calls work here unchanged.

MindCV's published ConvNeXt recipes and the key table of its command line (`mindcv_config_keys.tsv`, every key
with its default) are read from ../shared/mindcv_reference; the recipes train one epoch of a tiny model on the
shipped mnist5k, and validate.py checks the checkpoint with nothing but its path.
"""
import ast
import functools
import hashlib
import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import types

import mindspore as ms
import numpy as np
import pytest
import yaml
from mindspore import Tensor

import infer
import mindcv
import train
import validate
from conftest import DEMO_DATA, ROOT
from mindcv import export
from mindcv.loss import LOSSES
from mindcv.optim import OPTIMIZERS
from mindcv.models import (FeatureExtractWrapper, create_model, is_model, is_model_in_modules, is_model_pretrained,
                           list_models, list_modules, model_entrypoint)
from mindcv.models import convnext as convnext_module
from mindcv.models import layers
from mindcv.scheduler import SCHEDULERS
from mindcv.io.checkpoint import save_checkpoint_atomic
from mindcv.config import factories
from mindcv.config.builders import apply_eval_amp, build_dataset, build_loader, build_transform
from mindcv.config.schema import (ALIASES, OPTIONS, ConfigError, check_supported, dump_config, load_yaml,
                                 parse_config, resume_checkpoint)
from mindcv.engine.train_step import amp_cast_classes, apply_amp

REFERENCE = os.path.join(ROOT, "..", "shared", "mindcv_reference")
RECIPES = ["convnext_tiny_ascend.yaml", "convnext_small_ascend.yaml", "convnext_base_ascend.yaml",
           "convnextv2_tiny_ascend.yaml"]
TINY_SIZE = ["--depths", "1", "1", "1", "1", "--dims", "16", "32", "64", "128", "--image_resize", "32"]
TINY = ["--model", "convnext_atto", *TINY_SIZE, "--num_parallel_workers", "1", "--data_dir", DEMO_DATA]


def reference(name):
    path = os.path.join(REFERENCE, name)
    if not os.path.exists(path):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"MindCV reference {path} is missing (CI=true)", pytrace=False)
        pytest.skip(f"MindCV reference {path} is not available")
    return path


def mindcv_keys():
    """{key: default} of MindCV's command line, the defaults as Python values (tuples as lists, as in YAML)."""
    with open(reference("mindcv_config_keys.tsv")) as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    values = {key: ast.literal_eval(default) for key, default in rows}
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


def main_exit(main, argv, capsys):
    """(exit status, stderr) of a script's main that stops with a user error."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err.strip()


@pytest.fixture
def restore_signals():
    """train.main installs Ctrl-C handlers; put the test process's back."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


# ---------------------------------------------------------------- 1. recipes and the command line

def test_every_mindcv_key_is_a_key_here_with_mindcvs_default_accepted(tmp_path):
    keys = mindcv_keys()
    assert len(keys) == 87
    recipe = tmp_path / "all_keys.yaml"
    recipe.write_text(yaml.safe_dump(keys))
    config = parse_config(["-c", str(recipe)])
    check_supported(config)  # MindCV's defaults are all honoured
    for key, default in keys.items():
        if key == "config":  # names the recipe file itself
            continue
        name = ALIASES.get(key, key)
        assert name in OPTIONS, key
        value = getattr(config, name)
        if key == "loss":
            assert value == "ce"  # 'CE', in our spelling
        elif key == "re_value":
            assert value == "0"
        elif key == "color_jitter":
            assert value == [0.4]
        else:
            assert value == default, key


def test_every_mindcv_key_works_on_the_command_line():
    argv = []
    for key, default in mindcv_keys().items():
        if key == "config" or default is None:
            continue
        values = default if isinstance(default, list) else [default]
        argv += [f"--{key}", *map(str, values)]
    config = parse_config(argv)
    assert (config.nesterov, config.num_cycles, config.reduction, config.ckpt_save_policy) == (False, 1, "mean",
                                                                                             "latest_k")


def test_use_nesterov_is_nesterov(tmp_path):
    assert parse_config(["--use_nesterov"]).nesterov is True
    assert parse_config(["--use_nesterov", "True", "--nesterov", "False"]).nesterov is False  # the last one wins
    recipe = tmp_path / "r.yaml"
    recipe.write_text("use_nesterov: True\n")
    config = parse_config(["-c", str(recipe)])
    assert config.nesterov is True and "use_nesterov" not in vars(config)
    dump_config(config, str(tmp_path / "saved.yaml"))
    assert yaml.safe_load((tmp_path / "saved.yaml").read_text())["nesterov"] is True
    recipe.write_text("nesterov: True\nuse_nesterov: True\n")
    with pytest.raises(ConfigError, match="'nesterov' and 'use_nesterov' are the same key; keep one"):
        load_yaml(str(recipe))


def test_bool_keys_work_bare_and_with_a_value():
    config = parse_config(["--pretrained", "--val_while_train", "--distribute", "False", "--ema=false",
                           "--shuffle", "no"])
    assert (config.pretrained, config.val_while_train, config.distribute, config.ema, config.shuffle) == (
        True, True, False, False, False)
    assert parse_config(["--model", "convnext_atto", "--clip_grad"]).clip_grad is True
    # beside positional arguments (infer.py's images) a bare flag goes after them, or before another option
    with_inputs = parse_config(["--pretrained", "--ckpt_path", "x.ckpt", "a.jpg", "--ema"],
                               extra=lambda parser: parser.add_argument("inputs", nargs="+"))
    assert (with_inputs.pretrained, with_inputs.ema, with_inputs.inputs) == (True, True, ["a.jpg"])
    with pytest.raises(ConfigError, match="distribute: 'maybe' is not a valid bool"):
        parse_config(["--distribute", "maybe"])


@pytest.mark.parametrize("argv,key,value", [(["--loss", "CE"], "loss", "ce"),
                                            (["--amp_level", "o2"], "amp_level", "O2"),
                                            (["--device_target", "cpu"], "device_target", "CPU"),
                                            (["--opt", "AdamW"], "opt", "adamw"),
                                            (["--scheduler", "Cosine_Decay"], "scheduler", "cosine_decay"),
                                            (["--ckpt_save_policy", "LATEST_K"], "ckpt_save_policy", "latest_k"),
                                            (["--interpolation", "BICUBIC"], "interpolation", "bicubic")])
def test_choices_are_case_insensitive_and_take_our_spelling(argv, key, value):
    assert getattr(parse_config(argv), key) == value


def test_recipe_flag_has_both_spellings_and_a_saved_mindcv_config_loads(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("config: /somewhere/else.yaml\nloss: BCE\n")  # MindCV's save_args writes `config`
    assert parse_config(["-c", str(recipe)]).loss == parse_config(["--config", str(recipe)]).loss == "bce"


def test_unknown_keys_suggest_the_closest_name_or_alias(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'use_nesterv' in the command line; did you mean "
                                          "'use_nesterov'"):
        parse_config(["--use_nesterv", "True"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("ckpt_save_polcy: top_k\n")
    with pytest.raises(ConfigError, match="did you mean 'ckpt_save_policy'"):
        parse_config(["-c", str(recipe)])


def test_choices_cover_our_schedulers_and_losses():
    assert OPTIONS["scheduler"].choices == SCHEDULERS
    assert set(OPTIONS["loss"].choices) == set(LOSSES)
    assert set(OPTIONS["opt"].choices) == set(OPTIMIZERS)  # the schema stays light: its own copy of the names


@pytest.mark.parametrize("argv,message", [
    (["--reduction", "none"], "reduction 'none' (on the command line) is not supported: a training step needs one"),
    (["--ckpt_save_policy", "top_k", "--val_while_train", "False"],
     "ckpt_save_policy top_k ranks checkpoints by validation top-1: set val_while_train True"),
    (["--loss", "jsd"], "loss jsd compares each image's clean and augmented views: set aug_splits 3"),
    (["--aug_splits", "3", "--auto_augment", "augmix-m3-w3", "--cutmix", "1.0"],
     "aug_splits 3 keeps each image's three views apart, which mixup and cutmix would mix: set mixup 0 and cutmix 0"),
    (["--aug_splits", "3"], "aug_splits 3 augments two views of each image with auto_augment or color_jitter, and "
                            "neither is set"),
    (["--resume_opt"], "resume_opt True resumes from ckpt_path, which is not set: pass --ckpt_path CHECKPOINT"),
    (["--resume_opt", "--ckpt_path", "a.ckpt", "--resume", "auto"],
     "resume auto and resume_opt (with ckpt_path a.ckpt) name different checkpoints to resume from: keep one"),
])
def test_values_training_cannot_honour_stop_train_py_with_one_line(argv, message, capsys):
    status, err = main_exit(train.main, [*TINY, *argv], capsys)
    assert status == 2 and err.startswith("error: ") and message in err and "\n" not in err
    parse_config(argv)  # validation and prediction take them: they do not depend on these keys


def test_supported_values_pass(tmp_path):
    check_supported(parse_config(["--drop_rate", "0.2", "--reduction", "sum", "--ckpt_save_policy", "top_k",
                                  "--aug_repeats", "3", "--eval_shuffle", "True", "--loss", "jsd", "--aug_splits", "3",
                                  "--color_jitter", "0.4", "--amp_cast_list", "[nn.Dense]"]))


def test_aug_splits_takes_0_or_3():
    with pytest.raises(ConfigError, match=r"^aug_splits: 2 is not one of 0, 3 \(AugMix split batches, for the jsd "
                                          "loss: 3 puts every image in its batch three times, clean and as 2 views"):
        parse_config(["--aug_splits", "2"])


def test_aug_splits_3_makes_split_batches_clean_views_first():
    """MindCV's separate loader: each image clean, then twice augmented (the AugMix policy), as [3B, C, H, W] with
    the labels repeated; evaluation batches are not split."""
    config = parse_config([*TINY, "--num_samples", "8", "--batch_size", "4", "--aug_splits", "3", "--auto_augment",
                           "augmix-m3-w3"])
    dataset = build_dataset(config, "train", True)
    images, labels = next(build_loader(config, dataset, True, 10).create_tuple_iterator(num_epochs=1,
                                                                                          output_numpy=True))
    assert images.shape == (12, 3, 32, 32) and labels.tolist() == labels[:4].tolist() * 3
    primary, _, final = build_transform(config, is_training=True)
    index = int(dataset.epoch_order.indices(0)[0])
    clean = final(primary(dataset.image_source.read_bytes(index), np.random.default_rng([config.seed, 0, 0, index])),
                  None, erase=False)
    np.testing.assert_array_equal(images[0], clean)
    assert not np.array_equal(images[0], images[4]) and not np.array_equal(images[4], images[8])
    val_images, _ = next(build_loader(config, build_dataset(config, "val", False), False, 10).create_tuple_iterator(
        num_epochs=1, output_numpy=True))
    assert val_images.shape == (4, 3, 32, 32)
    mnist = parse_config([*TINY, "--dataset", "mnist", "--aug_splits", "3", "--color_jitter", "0.4"])
    with pytest.raises(ConfigError, match="aug_splits 3 augments views with the ImageNet-style transform, which "
                                          "dataset mnist does not use: set aug_splits 0"):
        build_transform(mnist, is_training=True)


def test_resume_opt_resumes_from_ckpt_path():
    """MindCV's resume_opt with ckpt_path is --resume ckpt_path; without resume_opt, ckpt_path only gives weights."""
    assert resume_checkpoint(parse_config(["--resume_opt", "--ckpt_path", "run/m-3_10.ckpt"])) == "run/m-3_10.ckpt"
    assert resume_checkpoint(parse_config(["--resume_opt", "--ckpt_path", "run/m-3_10.ckpt", "--resume",
                                           "./run/m-3_10.ckpt"])) == "run/m-3_10.ckpt"
    assert resume_checkpoint(parse_config(["--ckpt_path", "run/m-3_10.ckpt"])) == ""
    assert resume_checkpoint(parse_config(["--resume", "auto"])) == "auto"


def test_resume_opt_from_weights_only_says_to_fine_tune(tmp_path, capsys, restore_signals):
    """MindCV's own checkpoints hold weights only (their optimizer state is in a separate optim_{model}.ckpt)."""
    weights = save_checkpoint_atomic(create_model("convnext_atto", num_classes=10, depths=(1, 1, 1, 1),
                                                  dims=(16, 32, 64, 128)), str(tmp_path / "mindcv.ckpt"))
    status, err = main_exit(train.main, [*TINY, "--num_samples", "16", "--batch_size", "16", "--val_while_train",
                                         "False", "--ckpt_save_dir", str(tmp_path / "run"), "--ckpt_path", weights,
                                         "--resume_opt"], capsys)
    assert status == 2 and err == (f"error: {weights} holds no training state (epoch, optimizer); to start from its "
                                   "weights (fine-tuning) set resume_opt False")


@pytest.mark.parametrize("text", ["[nn.Dense, nn.Conv2d]", "['nn.Dense', 'nn.Conv2d']", " [Dense,Conv2d] "])
def test_amp_cast_list_names_cell_classes(text):
    assert amp_cast_classes(text) == (ms.nn.Dense, ms.nn.Conv2d)


def test_amp_cast_list_from_a_yaml_list_and_of_both_modules(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("amp_cast_list: [nn.Dense, LayerNorm2d]\n")
    assert amp_cast_classes(parse_config(["-c", str(recipe)]).amp_cast_list) == (ms.nn.Dense, layers.LayerNorm2d)
    assert amp_cast_classes("[GELU]") == (ms.nn.GELU, layers.GELU)  # a bare name: mindspore.nn's and ours
    assert amp_cast_classes("[nn.GELU]") == (ms.nn.GELU,)
    assert amp_cast_classes("[]") == ()


def test_amp_cast_list_is_never_evaluated(tmp_path):
    with pytest.raises(ConfigError, match=r"^amp_cast_list: 'nn.Dence' is not a cell class; did you mean nn.Dense\?"):
        amp_cast_classes("[nn.Conv2d, nn.Dence]")
    marker = tmp_path / "evaluated"
    with pytest.raises(ConfigError, match="is not a cell class .cell classes of mindspore.nn or mindcv.models.layers"):
        amp_cast_classes(f"[__import__('pathlib').Path('{marker}').touch()]")
    assert not marker.exists()
    # validate.py and infer.py read it as well, whatever amp level this back end runs
    with pytest.raises(ConfigError, match="'nn.Dence' is not a cell class"):
        apply_eval_amp(ms.nn.Dense(1, 1), parse_config(["--amp_level", "O2", "--amp_cast_list", "[nn.Dence]"]))


@pytest.fixture
def pynative():
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=mode)


@pytest.mark.parametrize("level,cast_list,dense_runs_in", [
    ("O1", "[Dense]", ms.float16), ("O1", "[nn.Conv2d]", ms.float32),  # O1: the listed cells in float16
    ("O2", "[nn.Dense]", ms.float32), ("O2", "[ReLU]", ms.float16),  # O2: all but the listed cells in float16
    ("O0", "[Dense]", ms.float32), ("O3", "[Dense]", ms.float16)], ids=str)  # O0 and O3 ignore the list
def test_amp_cast_list_sets_the_precision_of_the_listed_cells(pynative, level, cast_list, dense_runs_in):
    """300 x 300 - 60000 is 30000 in float32; in float16 the product overflows to inf."""
    net = ms.nn.SequentialCell([ms.nn.Dense(1, 1, weight_init=300.0, bias_init=-60000.0), ms.nn.ReLU()])
    x = Tensor([[300.0]], ms.float32)
    out = apply_amp(net, level, cast_list)(x)
    assert out.dtype == ms.float32 and net[0](x).dtype == dense_runs_in
    assert out.asnumpy()[0, 0] == (np.inf if dense_runs_in == ms.float16 else 30000.0)


def test_drop_rate_drops_features_before_the_classifier_in_training_only():
    """MindCV's drop_rate: dropout on the pooled, normalised features (timm's head dropout); identity in eval."""
    net = create_model("convnext_atto", num_classes=1, depths=(1, 1, 1, 1), dims=(8, 8, 8, 64), drop_rate=0.5)
    plain = create_model("convnext_atto", num_classes=1, depths=(1, 1, 1, 1), dims=(8, 8, 8, 64))
    ms.load_param_into_net(plain, {p.name: p for p in net.get_parameters()}, strict_load=True)
    x = Tensor(np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32))
    features = net.norm(net.forward_features(x).mean((2, 3))).asnumpy()
    net.set_train(True)
    dropped = net.head_drop(Tensor(features)).asnumpy()
    assert set(np.unique(np.round(dropped / features, 4))) <= {0.0, 2.0}  # zeroed, or scaled by 1 / (1 - 0.5)
    assert 0 < (dropped == 0).mean() < 1
    net.set_train(False)
    plain.set_train(False)
    np.testing.assert_allclose(net(x).asnumpy(), plain(x).asnumpy(), rtol=1e-6)


def test_train_wires_loss_schedule_and_amp_keys(monkeypatch, restore_signals, tmp_path):
    """reduction, label_smoothing, aux_factor reach create_loss; num_cycles, cycle_decay reach create_scheduler;
    amp_cast_list reaches create_train_step."""
    seen = {}

    class Stop(Exception):
        pass

    def recorded(name, function, then=None):
        @functools.wraps(function)  # the config reaches a factory by its signature: keep the real one
        def record(*args, **kwargs):
            seen[name] = (args, kwargs)
            if then:
                raise then
            return function(*args, **kwargs)
        return record

    monkeypatch.setattr(factories, "create_scheduler", recorded("scheduler", factories.create_scheduler))
    monkeypatch.setattr(factories, "create_loss", recorded("loss", factories.create_loss))
    monkeypatch.setattr(factories, "create_train_step", recorded("train_step", factories.create_train_step, Stop))
    with pytest.raises(Stop):
        train.main([*TINY, "--num_samples", "16", "--batch_size", "16", "--ckpt_save_dir", str(tmp_path), "--loss",
                    "BCE", "--reduction", "sum", "--label_smoothing", "0.2", "--aux_factor", "0.4", "--num_cycles",
                    "2", "--cycle_decay", "0.5", "--scheduler", "cosine_decay", "--warmup_epochs", "0",
                    "--decay_epochs", "1", "--epoch_size", "2", "--val_while_train", "False", "--amp_cast_list",
                    "[nn.LayerNorm]"])
    assert seen["loss"][1] == dict(name="bce", reduction="sum", label_smoothing=0.2, aux_factor=0.4)
    assert (seen["scheduler"][1]["num_cycles"], seen["scheduler"][1]["cycle_decay"]) == (2, 0.5)
    assert seen["train_step"][1]["amp_cast_list"] == "[nn.LayerNorm]"


def test_one_color_jitter_number_is_brightness_contrast_and_saturation():
    transform = build_transform(parse_config(["--color_jitter", "0.4"]), is_training=True)
    assert transform.color_jitter.strengths == (0.4, 0.4, 0.4, 0.0)
    transform = build_transform(parse_config(["--color_jitter", "0.1", "0.2", "0.3"]), is_training=True)
    assert transform.color_jitter.strengths == (0.1, 0.2, 0.3, 0.0)


def test_aug_repeats_shows_each_image_repeatedly_augmented_differently():
    """MindCV's RepeatAugSampler on one device (selected_round 0): the epoch's order with each sample 3 times in a
    row, as many samples as without repetition; the copies of an image are augmented apart."""
    config = parse_config([*TINY, "--num_samples", "8", "--aug_repeats", "3", "--batch_size", "3", "--mixup", "0"])
    dataset = build_dataset(config, "train", True)
    plain = build_dataset(parse_config([*TINY, "--num_samples", "8"]), "train", True).epoch_order.indices(0)
    order = dataset.epoch_order.indices(0)
    n = len(dataset.image_source)
    assert len(order) == len(plain) == 8
    assert list(order % n) == [plain[0]] * 3 + [plain[1]] * 3 + [plain[2]] * 2
    assert len(set(order)) == 8  # three distinct keys per image: distinct augmentation draws
    loader = build_loader(config, dataset, True, 10)
    images, labels = next(loader.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert len(set(labels)) == 1 and not np.array_equal(images[0], images[1])
    # two ranks: each image on up to three ranks, 4 samples each, as MindCV's sampler gives them
    sharded = [build_dataset(config, "train", True, rank, 2).epoch_order.indices(0) % n for rank in (0, 1)]
    assert [list(s) for s in sharded] == [[plain[0], plain[0], plain[1], plain[2]],
                                          [plain[0], plain[1], plain[1], plain[2]]]


def test_eval_shuffle_orders_the_validation_set():
    fixed = build_dataset(parse_config([*TINY, "--num_samples", "8"]), "val", False).epoch_order.indices(0)
    shuffled = build_dataset(parse_config([*TINY, "--num_samples", "8", "--eval_shuffle"]), "val",
                             False).epoch_order.indices(0)
    assert list(fixed) == list(range(8)) and sorted(shuffled) != list(range(8))


# Two of the runs also set MindCV keys that the recipes leave at their defaults: AugMix split batches with the jsd
# loss (the recipe's randaug policy augments the views; its mixup and cutmix cannot mix split batches), and keeping
# the best checkpoints.
RECIPE_EXTRAS = {"convnext_small_ascend.yaml": ["--loss", "jsd", "--aug_splits", "3", "--mixup", "0", "--cutmix", "0"],
                 "convnext_base_ascend.yaml": ["--ckpt_save_policy", "top_k", "--keep_checkpoint_max", "1"]}


@pytest.mark.parametrize("recipe", RECIPES)
def test_mindcv_recipe_trains_and_validates_unchanged(recipe, tmp_path):
    """The recipe as published, with the data, a tiny size of its model and a run folder given on the command
    line (and RECIPE_EXTRAS); validate.py then needs only the checkpoint's path (the run folder's config.yaml does
    the rest)."""
    with open(reference(recipe)) as f:
        family = yaml.safe_load(f)["model"].split("_")[0]
    model = f"{family}_atto"
    args = ["-c", reference(recipe), "--data_dir", DEMO_DATA, "--model", model, *TINY_SIZE, "--num_samples", "32",
            "--epoch_size", "1", "--batch_size", "16", "--num_classes", "10", "--device_target", "CPU",
            "--ckpt_save_dir", str(tmp_path), *RECIPE_EXTRAS.get(recipe, [])]
    trained = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "no launcher (msrun) started this process: running on one device" in trained.stderr
    checkpoint = tmp_path / f"{model}-1_2.ckpt"
    assert checkpoint.is_file()
    with open(tmp_path / "metrics.jsonl") as f:
        top1 = json.loads(f.readline())["val_top1"]
    with open(tmp_path / "checkpoint_scores.json") as f:
        assert json.load(f) == {checkpoint.name: top1}  # what top_k ranks by
    checked = subprocess.run([sys.executable, "validate.py", "--ckpt_path", str(checkpoint)], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert f"{model} on {DEMO_DATA}/val (32 images): top-1 {top1:.2f}%" in checked.stdout


# ---------------------------------------------------------------- 3. models

def test_create_model_has_mindcvs_signature():
    parameters = inspect.signature(create_model).parameters
    assert [(p.name, p.default) for p in parameters.values()][:7] == [
        ("model_name", inspect.Parameter.empty), ("num_classes", 1000), ("pretrained", False), ("in_channels", 3),
        ("checkpoint_path", ""), ("ema", False), ("auto_mapping", False)]
    assert list(parameters.values())[-1].kind is inspect.Parameter.VAR_KEYWORD
    assert mindcv.create_model is create_model and mindcv.list_models is list_models


def test_positional_arguments_in_mindcvs_order():
    net = create_model("convnext_atto", 7, False, 1, depths=(1, 1, 1, 1), dims=(8, 8, 8, 8))
    assert net.feature[0][0].weight.shape == (8, 1, 4, 4) and net.classifier.weight.shape == (7, 8)


def test_entry_points_take_pretrained_num_classes_in_channels():
    for name in list_models():
        parameters = inspect.signature(model_entrypoint(name)).parameters
        assert [(p.name, p.default) for p in parameters.values()][:3] == [("pretrained", False), ("num_classes", 1000),
                                                                          ("in_channels", 3)], name
    net = convnext_module.convnext_tiny(False, 5, 1, depths=(1, 1, 1, 1), dims=(8, 8, 8, 8))
    assert net.classifier.weight.shape == (5, 8) and net.feature[0][0].weight.shape == (8, 1, 4, 4)


def test_arguments_given_as_none_take_the_models_defaults():
    net = create_model("convnext_atto", depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), drop_path_rate=None,
                       layer_scale_init_value=None, features_only=None)
    assert np.all(net.feature[1][0].gamma_.asnumpy() == np.float32(1e-6))


def test_pretrained_loads_the_published_file_from_the_cache(tmp_path, monkeypatch):
    small = dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), num_classes=10)
    source = create_model("convnext_atto", **small)
    saved = save_checkpoint_atomic(source, str(tmp_path / "weights.ckpt"))
    # a cached file must match the hash prefix of its published name (ae5ff8d7): this one is published under its own
    prefix = hashlib.sha256(open(saved, "rb").read()).hexdigest()[:8]
    url = convnext_module.model_cfgs["convnext_tiny"]["url"].replace("ae5ff8d7", prefix)
    monkeypatch.setitem(convnext_module.model_cfgs["convnext_tiny"], "url", url)
    os.rename(saved, tmp_path / os.path.basename(url))
    monkeypatch.setattr(convnext_module, "PRETRAINED_DIR", str(tmp_path))
    monkeypatch.setenv("MINDCV_DOWNLOAD_BASE", "http://127.0.0.1:9/")  # nothing may be fetched
    for net in (create_model("convnext_tiny", pretrained=True, **small),
                convnext_module.convnext_tiny(pretrained=True, **small)):
        assert all(np.array_equal(a.asnumpy(), b.asnumpy())
                   for a, b in zip(net.get_parameters(), source.get_parameters()))
    with pytest.raises(ValueError, match="checkpoint_path and pretrained both name the weights"):
        create_model("convnext_tiny", pretrained=True, checkpoint_path=str(tmp_path / "x.ckpt"), **small)
    monkeypatch.setattr(convnext_module, "PRETRAINED_DIR", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=f"cannot download http://127.0.0.1:9/convnext/convnext_tiny-{prefix}.ckpt "
                                         rf".*fetch convnext_tiny-{prefix}.ckpt by hand and put it in {tmp_path / 'empty'}"):
        create_model("convnext_tiny", pretrained=True, **small)


def test_sizes_without_mindcv_weights_come_from_the_hub(tmp_path, monkeypatch):
    """convnext_atto has no MindCV weights: pretrained=True asks the Hugging Face Hub (through huggingface_hub, an
    optional dependency) for timm's; a text names another published variant."""
    small = dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), num_classes=10)
    source = create_model("convnext_atto", **small)
    weights = {p.name: p.asnumpy() for p in source.get_parameters()}
    path = str(tmp_path / "model.safetensors")
    from safetensors.numpy import save_file
    save_file(weights, path)
    asked = []

    def hf_hub_download(repo_id, filename, cache_dir=None):
        asked.append((repo_id, filename))
        return path

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=hf_hub_download))
    net = create_model("convnext_atto", pretrained=True, **small)
    create_model("convnext_atto", pretrained="timm/convnext_atto.d2_in1k_ft_in22k", **small)
    assert asked == [("timm/convnext_atto.d2_in1k", "model.safetensors"),
                     ("timm/convnext_atto.d2_in1k_ft_in22k", "model.safetensors")]
    assert all(np.array_equal(p.asnumpy(), weights[p.name]) for p in net.get_parameters())
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match="come from the Hugging Face Hub: `pip install huggingface_hub`"):
        create_model("convnextv2_atto", pretrained=True, **small)


def test_ema_loads_the_moving_average_and_auto_mapping_changes_nothing(tmp_path):
    small = dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), num_classes=10)
    source = create_model("convnext_atto", **small)
    entries = [{"name": p.name, "data": p.data} for p in source.get_parameters()]
    entries += [{"name": f"ema.{p.name}", "data": p.data + 1} for p in source.get_parameters()]
    path = str(tmp_path / "with_ema.ckpt")
    ms.save_checkpoint(entries, path)
    trained = {p.name: p.asnumpy() for p in source.get_parameters()}
    for ema, offset in ((False, 0), (True, 1)):
        for auto_mapping in (False, True):
            net = create_model("convnext_atto", checkpoint_path=path, ema=ema, auto_mapping=auto_mapping, **small)
            assert all(np.allclose(p.asnumpy(), trained[p.name] + offset) for p in net.get_parameters())
    plain = str(tmp_path / "plain.ckpt")
    save_checkpoint_atomic(source, plain)
    with pytest.raises(ValueError, match="holds no EMA weights"):
        create_model("convnext_atto", checkpoint_path=plain, ema=True, **small)


def test_registry_functions():
    assert list_modules() == ["convnext"]
    assert list_models(module="convnext") == list_models() and list_models(module="resnet") == []
    assert list_models(pretrained=True) == list_models()  # MindCV's weights, or timm's on the Hub
    assert list_models(["convnext_a*", "convnextv2_a*"]) == ["convnext_atto", "convnextv2_atto"]
    assert list_models("convnext*", exclude_filters=["convnextv2*", "*_xlarge"])[-1] == "convnext_tiny"
    assert is_model_in_modules("convnext_tiny", ["convnext"]) and not is_model_in_modules("convnext_tiny", ("vit",))
    assert is_model_pretrained("convnext_tiny") and is_model_pretrained("convnextv2_tiny")
    assert not is_model_pretrained("resnet50")
    assert is_model("convnextv2_huge") and model_entrypoint("convnext_tiny") is convnext_module.convnext_tiny


def test_import_mindcv_stays_light():
    probe = "import sys, mindcv, mindcv.config.schema; print('mindspore' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
def test_feature_extract_wrapper_returns_the_backbones_stages(mode):
    ms.set_context(mode=mode)
    small = dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
    net = create_model("convnext_atto", **small)
    backbone = create_model("convnext_atto", features_only=True, out_indices=(1, 3), **small)
    ms.load_param_into_net(backbone, {p.name: p for p in net.get_parameters()}, strict_load=False)
    wrapper = FeatureExtractWrapper(net, out_indices=(1, 3))
    assert wrapper.out_channels == [16, 32]
    assert sorted(p.name for p in wrapper.get_parameters()) == sorted(
        p.name for p in net.get_parameters() if p.name.startswith("feature."))
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 64, 64)), ms.float32)
    for got, expected in zip(wrapper(x), backbone(x)):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got.asnumpy(), expected.asnumpy(), rtol=1e-5, atol=1e-5)
    assert [o.shape for o in FeatureExtractWrapper(net)(x)] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 24, 4, 4),
                                                                (2, 32, 2, 2)]
    with pytest.raises(ValueError, match="out_indices must be increasing stage indices in 0..3"):
        FeatureExtractWrapper(net, out_indices=(2, 4))


# ---------------------------------------------------------------- 9. the run folder describes itself

@pytest.fixture
def run_folder(tmp_path):
    """A run folder as train.py leaves it, written directly: config.yaml of a tiny model, class_names.txt and the
    weights; the model keys (depths, dims, image size) are only in config.yaml."""
    folder = tmp_path / "run"
    folder.mkdir()
    config = parse_config([*TINY, "--num_samples", "16", "--batch_size", "8"])
    dump_config(config, str(folder / "config.yaml"))
    (folder / "class_names.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    network = create_model("convnext_atto", num_classes=10, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))
    return folder, save_checkpoint_atomic(network, str(folder / "convnext_atto_best.ckpt"))


def test_validate_infer_and_export_take_the_run_folders_config(run_folder, tmp_path, capsys, caplog):
    folder, checkpoint = run_folder
    caplog.set_level(logging.INFO, logger="mindcv")
    assert validate.main(["--ckpt_path", checkpoint]) == 0
    assert f"convnext_atto on {DEMO_DATA}/val (16 images)" in capsys.readouterr().out
    assert f"config: {folder / 'config.yaml'}, the recipe of the checkpoint's run folder" in caplog.text
    image = os.path.join(DEMO_DATA, "val", "3", sorted(os.listdir(os.path.join(DEMO_DATA, "val", "3")))[0])
    assert infer.main(["--ckpt_path", checkpoint, image]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: ")
    assert export.main(["--ckpt_path", checkpoint, "--output", str(tmp_path / "model")]) == 0
    assert "input float32 [1, 3, 32, 32], output logits [1, 10]" in capsys.readouterr().out  # image_resize 32


def test_the_command_line_still_overrides_the_run_folders_config(run_folder, capsys):
    folder, checkpoint = run_folder
    status, err = main_exit(validate.main, ["--ckpt_path", checkpoint, "--dims", "8", "8", "8", "8"], capsys)
    assert status == 2 and "does not fit this model" in err
    assert err.endswith(f"The command line changes dims of the run's {folder / 'config.yaml'}")
    assert "\n" not in err


def test_validate_refuses_a_split_with_other_classes_than_the_run(run_folder, capsys):
    folder, checkpoint = run_folder
    (folder / "class_names.txt").write_text("\n".join(["0", "1", "2", "3", "4", "5", "6", "7", "8", "nine"]) + "\n")
    status, err = main_exit(validate.main, ["--ckpt_path", checkpoint], capsys)
    assert status == 2 and err == (f"error: the classes of {DEMO_DATA}/val differ from those of "
                                   f"{folder / 'class_names.txt'} (only in {folder / 'class_names.txt'}: nine; only in "
                                   f"{DEMO_DATA}/val: 9)")


def test_num_classes_below_the_class_folders_stops_training_at_start(tmp_path, capsys):
    status, err = main_exit(train.main, [*TINY, "--num_classes", "5", "--ckpt_save_dir", str(tmp_path)], capsys)
    assert status == 2 and err == (f"error: num_classes is 5 but {DEMO_DATA}/train has 10 class folders: the model "
                                   "needs one output per class")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("val_classes,difference", [(["0", "1", "3"], "only in {data}/train: 2; only in {data}/val: 3"),
                                                    (["0", "1", "2", "3"], "only in {data}/val: 3")])
def test_a_validation_split_with_other_classes_stops_training_at_start(tmp_path, val_classes, difference, capsys):
    data = tmp_path / "data"
    for split, classes in (("train", ["0", "1", "2"]), ("val", val_classes)):
        for name in classes:
            (data / split).mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.join(DEMO_DATA, split, name), data / split / name)
    status, err = main_exit(train.main, [*TINY, "--data_dir", str(data), "--ckpt_save_dir", str(tmp_path / "run")],
                            capsys)
    assert status == 2 and err == (f"error: the classes of {data}/val differ from those of {data}/train "
                                   f"({difference.format(data=data)})")
