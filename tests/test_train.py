"""train.py and validate.py end to end on a slice of the shipped mnist5k, with a tiny ConvNeXt."""
import json
import os
import re
import stat
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

from conftest import DEMO_DATA, ROOT

TINY = ["--model", "convnext_atto", "--depths", "1", "1", "1", "1", "--dims", "16", "32", "64", "128",
        "--image_resize", "32", "--num_parallel_workers", "1", "--data_dir", DEMO_DATA, "--mode", "0"]
# No randomness left but the seeded shuffle: exact crops, no flips, no drop path.
DETERMINISTIC = ["--scale", "1", "1", "--ratio", "1", "1", "--hflip", "0", "--drop_path_rate", "0",
                 "--crop_pct", "1", "--scheduler", "constant", "--lr", "0.002", "--weight_decay", "0.05",
                 "--weight_decay_filter", "norm_and_bias", "--label_smoothing", "0.1"]


def run(script, *args, timeout=600, check_rc=0):
    result = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if check_rc is not None:
        assert result.returncode == check_rc, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def weights(path):
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items()}


def user_file_mode():
    mask = os.umask(0o077)
    os.umask(mask)
    return 0o666 & ~mask


def records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """Two epochs of 64 images: checkpoints, metrics, plot and best weights."""
    run_dir = str(tmp_path_factory.mktemp("run"))
    result = run("train.py", *TINY, "--num_samples", "64", "--batch_size", "16", "--epoch_size", "2",
                 "--keep_checkpoint_max", "1", "--ckpt_save_dir", run_dir, "--warmup_epochs", "0")
    return run_dir, result


def test_run_folder_holds_config_metrics_plot_and_checkpoints(trained_run):
    run_dir, result = trained_run
    assert sorted(os.listdir(run_dir)) == ["checkpoint_scores.json", "class_names.txt", "config.yaml",
                                           "convnext_atto-2_4.ckpt", "convnext_atto_best.ckpt", "metrics.jsonl",
                                           "metrics.png", "result.log", "written_files.json"]
    assert json.loads(open(os.path.join(run_dir, "checkpoint_scores.json")).read()) == {
        "convnext_atto-2_4.ckpt": records(run_dir)[-1]["val_top1"]}
    lines = records(run_dir)
    assert [r["epoch"] for r in lines] == [1, 2]
    assert {"train_loss", "lr", "val_top1", "val_top5", "val_loss", "images_per_s"} <= set(lines[0])
    assert open(os.path.join(run_dir, "class_names.txt")).read().split() == [str(i) for i in range(10)]
    with open(os.path.join(run_dir, "metrics.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # captured, not a terminal: MindCV's dated progress lines instead of the bar
    assert re.search(r"Epoch: \[2/2\], batch: \[4/4\], loss: [\d.]+, lr: [\d.]+, images/s: ", result.stdout)
    assert "the CPU back end has no device queue; batches are fed from the host" in result.stderr
    # readable as any file the user writes (MindSpore writes checkpoints 0400: no other account could read them)
    for name in ("convnext_atto-2_4.ckpt", "convnext_atto_best.ckpt"):
        assert stat.S_IMODE(os.stat(os.path.join(run_dir, name)).st_mode) == user_file_mode(), name


def test_validate_reproduces_the_best_accuracy(trained_run, tmp_path):
    run_dir, _ = trained_run
    best = max(records(run_dir), key=lambda r: r["val_top1"])
    output = tmp_path / "val.json"
    result = run("validate.py", *TINY, "--num_samples", "64", "--batch_size", "16", "--ckpt_path",
                 os.path.join(run_dir, "convnext_atto_best.ckpt"), "--json", str(output))
    assert f"top-1 {best['val_top1']:.2f}%" in result.stdout
    assert json.loads(output.read_text())["top1"] == pytest.approx(best["val_top1"])
    # the resumable checkpoint (weights + optimizer state) is accepted too
    run("validate.py", *TINY, "--num_samples", "64", "--ckpt_path", os.path.join(run_dir, "convnext_atto-2_4.ckpt"))


def test_validate_with_the_8_device_recipe_runs_on_one_device(trained_run):
    """MindCV users check a checkpoint with the recipe they trained with: its distribute: True needs a launcher,
    so without msrun the run is on one device; its amp_level O2 becomes float32 on the CPU kernel path."""
    run_dir, _ = trained_run
    result = run("validate.py", "-c", os.path.join(ROOT, "configs", "convnext", "convnext_tiny_ascend.yaml"), *TINY,
                 "--num_samples", "16", "--num_classes", "10", "--device_target", "CPU",
                 "--ckpt_path", os.path.join(run_dir, "convnext_atto_best.ckpt"))
    assert "top-1" in result.stdout
    assert "no launcher (msrun) started this process: running on one device" in result.stderr
    assert "jit_level O0 (O2 needs Ascend)" in result.stderr
    # on the CPU kernel path O2 runs as float32, with a message; the device path keeps O2
    kernels = os.environ.get("MINDCV_FAST_CPU_OPS", "1") != "0"
    assert ("amp_level O2: the CPU back end has no fast float16 kernels" in result.stderr) == kernels


@pytest.mark.parametrize("script,args,message", [
    ("train.py", ["--data_dir", ""], "error: data_dir is not set: pass --data_dir"),
    ("train.py", ["--data_dir", "/no/such/folder"], "error: data_dir /no/such/folder does not exist"),
    ("train.py", ["--epochs", "3"], "error: unknown config key 'epochs' in the command line; did you mean"),
    ("validate.py", ["--ckpt_path", os.path.join(ROOT, "..", "shared", "fixtures", "convnext_reference",
                                                 "convnextv2_mini.timm.safetensors")],
     "error: .*does not fit this model; .*unexpected"),
    ("validate.py", [], "error: nothing to evaluate: pass --ckpt_path"),
    ("train.py", ["--batch_size", "100000"], "error: batch_size 100000 is larger than this rank's share"),
    # the toolkit's own NPU recipe on a machine without an NPU: no 35-line RuntimeError
    ("train.py", ["-c", "configs/convnext/convnext_tiny_ascend.yaml"], r"^error: device_target Ascend \(in "
     r"configs/convnext/convnext_tiny_ascend.yaml\): this machine has no Ascend device that MindSpore can use "
     r"\(MindSpore here runs on CPU\); pass --device_target CPU \(or auto\) to run here$"),
    # a MindCV recipe of another family
    ("validate.py", ["--model", "resnet50"], r"^error: unknown model 'resnet50' \(on the command line\): this toolkit "
     r"has the ConvNeXt and ConvNeXt V2 families .*; pass --model convnext_tiny \(or another convnext_\*\) to run "
     r"the rest of the recipe with it$"),
])
def test_user_mistakes_give_one_line_errors(script, args, message):
    result = run(script, *TINY, *args, check_rc=2, timeout=120)
    assert "Traceback" not in result.stderr
    assert re.search(message, result.stderr.strip().splitlines()[-1])


RANDOM_DATA = ["--mixup", "0.8", "--cutmix", "1.0", "--auto_augment", "randaug-m9-mstd0.5-inc1", "--re_prob", "0.25",
               "--re_value", "random", "--scale", "0.5", "1", "--hflip", "0.5"]


def test_the_recipe_features_train_together_on_the_device_path(tmp_path):
    """The Ascend recipe's features in one short run on the device path (stock operators, MindSpore's overflow
    check, AMP O2 kept): EMA, O2 with dynamic loss scale, gradient accumulation, mixup/cutmix, RandAugment, random
    erasing, drop path."""
    result = subprocess.run(
        [sys.executable, "train.py", *TINY, *RANDOM_DATA, "--num_samples", "64", "--batch_size", "8",
         "--epoch_size", "2", "--ema", "True", "--ema_decay", "0.9", "--amp_level", "O2", "--loss_scale_type",
         "dynamic", "--loss_scale", "1024", "--gradient_accumulation_steps", "2", "--drop_path_rate", "0.1",
         "--label_smoothing", "0.1", "--warmup_epochs", "1", "--ckpt_save_dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "MINDCV_FAST_CPU_OPS": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = records(str(tmp_path))
    assert [r["epoch"] for r in lines] == [1, 2] and all(np.isfinite(r["train_loss"]) for r in lines)
    assert all(0 <= r["val_top1"] <= 100 for r in lines)
    state = ms.load_checkpoint(str(tmp_path / "convnext_atto-2_8.ckpt"))
    assert {"loss_scale", "ema.feature.0.0.weight", "accum.feature.0.0.weight"} <= set(state)
    assert int(state["global_step"].asnumpy()[0]) == 8  # 16 micro-batches, 2 per update
    assert 1.0 <= float(state["loss_scale"].asnumpy()) <= 1024.0
    # validate.py scores the weights that training scored and ranked: the EMA ones (the run's recipe is beside it)
    scored = json.loads((tmp_path / "checkpoint_scores.json").read_text())["convnext_atto-2_8.ckpt"]
    validated = subprocess.run(
        [sys.executable, "validate.py", "--ckpt_path", str(tmp_path / "convnext_atto-2_8.ckpt")], cwd=ROOT,
        capture_output=True, text=True, timeout=300, env={**os.environ, "MINDCV_FAST_CPU_OPS": "0"})
    assert validated.returncode == 0, validated.stderr[-3000:]
    assert f"top-1 {scored:.2f}%" in validated.stdout, (scored, validated.stdout)
    assert "weights: the EMA weights of" in validated.stderr


def test_the_quick_start_recipe_learns_the_digits(tmp_path):
    """The README's quick start, shortened to 2 epochs on 1,600 images: it must still learn (the full 8-epoch run
    reaches 96.5 %)."""
    run("train.py", "-c", "configs/convnext/convnext_mnist_cpu.yaml", "--epoch_size", "2", "--decay_epochs", "1",
        "--num_samples", "1600", "--ckpt_save_dir", str(tmp_path))
    assert records(str(tmp_path))[-1]["val_top1"] > 80.0


def test_a_fresh_run_does_not_overwrite_an_earlier_one(trained_run):
    run_dir, _ = trained_run
    result = run("train.py", *TINY, "--num_samples", "64", "--ckpt_save_dir", run_dir, check_rc=2, timeout=120)
    assert f"{run_dir} holds checkpoints of an earlier run: pass --resume auto" in result.stderr
    assert "Traceback" not in result.stderr


def test_resuming_a_run_past_its_epoch_size_is_an_error_not_a_silent_no_op(trained_run):
    run_dir, _ = trained_run
    before = {name: open(os.path.join(run_dir, name), "rb").read() for name in os.listdir(run_dir)}
    result = run("train.py", *TINY, "--num_samples", "64", "--batch_size", "16", "--epoch_size", "1",
                 "--ckpt_save_dir", run_dir, "--resume", "auto", check_rc=2, timeout=120)
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: nothing to train: {os.path.join(run_dir, 'convnext_atto-2_4.ckpt')} has done 2 epochs and epoch_size "
        "is 1; pass --epoch_size N with N > 2 to train on")
    assert "are not loaded" not in result.stderr  # MindSpore's warning of the learning-rate table, which stays
    assert {name: open(os.path.join(run_dir, name), "rb").read() for name in os.listdir(run_dir)} == before


def test_more_classes_than_folders_are_warned(tmp_path):
    """MindCV's ImageNet recipes say num_classes 1000; on 10 class folders that is 990 outputs no label names."""
    result = run("train.py", *TINY, "--num_classes", "12", "--num_samples", "8", "--batch_size", "16",
                 "--ckpt_save_dir", str(tmp_path), check_rc=2, timeout=120)  # stops before the loader: no training
    assert f"num_classes is 12 but {DEMO_DATA}/train has 10 class folders: 2 outputs will never be a label" in \
        result.stderr
