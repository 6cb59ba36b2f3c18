"""train.py and validate.py end to end on a slice of the shipped mnist5k, with a tiny ConvNeXt."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

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
                                           "metrics.png"]
    assert json.loads(open(os.path.join(run_dir, "checkpoint_scores.json")).read()) == {
        "convnext_atto-2_4.ckpt": records(run_dir)[-1]["val_top1"]}
    lines = records(run_dir)
    assert [r["epoch"] for r in lines] == [1, 2]
    assert {"train_loss", "lr", "val_top1", "val_top5", "val_loss", "images_per_s"} <= set(lines[0])
    assert open(os.path.join(run_dir, "class_names.txt")).read().split() == [str(i) for i in range(10)]
    with open(os.path.join(run_dir, "metrics.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "loss=" in result.stderr and "lr=" in result.stderr and "img_s=" in result.stderr  # the progress bar
    assert "the CPU back end has no device queue; batches are fed from the host" in result.stderr


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
])
def test_user_mistakes_give_one_line_errors(script, args, message):
    result = run(script, *TINY, *args, check_rc=2, timeout=120)
    assert "Traceback" not in result.stderr
    assert re.search(message, result.stderr.strip().splitlines()[-1])


# Three steps per epoch, no validation: the runs that the resume and non-finite tests continue.
SHORT = [*TINY, *DETERMINISTIC, "--num_samples", "48", "--batch_size", "16", "--val_while_train", "False"]


@pytest.fixture(scope="module")
def first_epoch(tmp_path_factory):
    """The run folder of SHORT's first epoch; a test continues a copy of it."""
    run_dir = tmp_path_factory.mktemp("first_epoch") / "run"
    run("train.py", *SHORT, "--epoch_size", "1", "--ckpt_save_dir", str(run_dir))
    return run_dir


def test_non_finite_loss_stops_training_or_skips_the_step(tmp_path, first_epoch):
    """After a good epoch, a learning rate of 1e35 blows the weights up and the loss stops being finite."""
    shutil.copytree(first_epoch, tmp_path, dirs_exist_ok=True)
    common = [*SHORT, "--ckpt_save_dir", str(tmp_path)]
    good = tmp_path / "convnext_atto-1_3.ckpt"
    before = good.read_bytes()
    stopped = run("train.py", *common, "--epoch_size", "2", "--resume", "auto", "--lr", "1e35", check_rc=3)
    assert "became non-finite at epoch 2" in stopped.stderr and "Traceback" not in stopped.stderr
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == [good.name]
    run("train.py", *common, "--epoch_size", "2", "--resume", str(good), "--lr", "1e35",
        "--drop_overflow_update", "True")
    assert records(str(tmp_path))[-1]["skipped_updates"] >= 1


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, first_epoch):
    run("train.py", *SHORT, "--epoch_size", "3", "--ckpt_save_dir", str(tmp_path / "straight"))
    shutil.copytree(first_epoch, tmp_path / "resumed")
    run("train.py", *SHORT, "--epoch_size", "3", "--ckpt_save_dir", str(tmp_path / "resumed"), "--resume", "auto")
    straight = weights(str(tmp_path / "straight" / "convnext_atto-3_3.ckpt"))
    resumed = weights(str(tmp_path / "resumed" / "convnext_atto-3_3.ckpt"))
    assert straight.keys() == resumed.keys()
    assert max(float(np.abs(straight[k] - resumed[k]).max()) for k in straight) <= 1e-5
    assert [r["epoch"] for r in records(str(tmp_path / "resumed"))] == [1, 2, 3]
    # resuming from an older checkpoint (MindCV's spelling: --ckpt_path with --resume_opt) drops the records of the
    # epochs it redoes, and redoes them as the uninterrupted run did
    run("train.py", *SHORT, "--epoch_size", "3", "--ckpt_save_dir", str(tmp_path / "resumed"), "--resume_opt",
        "--ckpt_path", str(tmp_path / "resumed" / "convnext_atto-2_3.ckpt"))
    assert [r["epoch"] for r in records(str(tmp_path / "resumed"))] == [1, 2, 3]
    redone = weights(str(tmp_path / "resumed" / "convnext_atto-3_3.ckpt"))
    assert max(float(np.abs(straight[k] - redone[k]).max()) for k in straight) <= 1e-5


RANDOM_DATA = ["--mixup", "0.8", "--cutmix", "1.0", "--auto_augment", "randaug-m9-mstd0.5-inc1", "--re_prob", "0.25",
               "--re_value", "random", "--scale", "0.5", "1", "--hflip", "0.5"]


def test_resume_with_data_randomness_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    """Mixup/cutmix, RandAugment, random erasing and random crops are keyed by (seed, epoch, sample or batch): a
    resumed run draws what the uninterrupted one drew. (Drop-path masks are not: MindSpore's random operators keep
    their state inside the kernel, which no checkpoint holds; a resumed run draws new masks.)"""
    common = [*TINY, *DETERMINISTIC, *RANDOM_DATA, "--num_samples", "32", "--batch_size", "16",
              "--val_while_train", "False"]
    run("train.py", *common, "--epoch_size", "2", "--ckpt_save_dir", str(tmp_path / "straight"))
    run("train.py", *common, "--epoch_size", "1", "--ckpt_save_dir", str(tmp_path / "resumed"))
    run("train.py", *common, "--epoch_size", "2", "--ckpt_save_dir", str(tmp_path / "resumed"), "--resume", "auto")
    straight = weights(str(tmp_path / "straight" / "convnext_atto-2_2.ckpt"))
    resumed = weights(str(tmp_path / "resumed" / "convnext_atto-2_2.ckpt"))
    assert max(float(np.abs(straight[k] - resumed[k]).max()) for k in straight) <= 1e-5


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


def test_the_quick_start_recipe_learns_the_digits(tmp_path):
    """The README's quick start, shortened to 2 epochs on 1,600 images: it must still learn (the full 8-epoch run
    reaches 96.5 %)."""
    run("train.py", "-c", "configs/convnext/convnext_mnist_cpu.yaml", "--epoch_size", "2", "--decay_epochs", "1",
        "--num_samples", "1600", "--ckpt_save_dir", str(tmp_path))
    assert records(str(tmp_path))[-1]["val_top1"] > 80.0


STOPPABLE = [*TINY, *DETERMINISTIC, "--num_samples", "320", "--batch_size", "16", "--epoch_size", "1",
             "--val_while_train", "False"]


@pytest.fixture(scope="module")
def uninterrupted_stoppable_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    run("train.py", *STOPPABLE, "--ckpt_save_dir", str(run_dir))
    return weights(str(run_dir / "convnext_atto-1_20.ckpt"))


@pytest.mark.parametrize("signum, sink_size", [(signal.SIGINT, 1), (signal.SIGTERM, 3)])
def test_a_stop_request_saves_a_resumable_state_that_resumes_exactly(tmp_path, uninterrupted_stoppable_run, signum,
                                                                     sink_size):
    """Ctrl-C or SIGTERM, sent once the progress bar shows a loss (the end of the first chunk of sink_size steps),
    stops the run at a chunk boundary with its state saved; resuming gives the uninterrupted run's weights."""
    run_dir = tmp_path / "interrupted"
    args = [*STOPPABLE, "--sink_size", str(sink_size)]
    process = subprocess.Popen([sys.executable, "train.py", *args, "--ckpt_save_dir", str(run_dir)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    seen = ""
    while time.time() < deadline and "loss=" not in seen:  # wait for the first finished chunk
        seen += process.stderr.read(1)
    process.send_signal(signum)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 130, stdout
    saved = [name for name in os.listdir(run_dir) if name.endswith(".ckpt")]
    assert len(saved) == 1 and "interrupted: saved resumable state" in stdout
    state = ms.load_checkpoint(str(run_dir / saved[0]))
    steps_done = int(state["step_num"].asnumpy())
    assert sink_size <= steps_done < 20 and steps_done % sink_size == 0 and int(state["epoch_num"].asnumpy()) == 0
    run("train.py", *args, "--ckpt_save_dir", str(run_dir), "--resume", str(run_dir / saved[0]))
    # the resumed epoch trains only the batches the interrupted run had not reached
    resumed, straight = weights(str(run_dir / "convnext_atto-1_20.ckpt")), uninterrupted_stoppable_run
    assert int(resumed["global_step"][0]) == int(straight["global_step"][0]) == 20
    assert max(float(np.abs(straight[k] - resumed[k]).max()) for k in straight) <= 1e-5


def test_a_fresh_run_does_not_overwrite_an_earlier_one(trained_run):
    run_dir, _ = trained_run
    result = run("train.py", *TINY, "--num_samples", "64", "--ckpt_save_dir", run_dir, check_rc=2, timeout=120)
    assert f"{run_dir} holds checkpoints of an earlier run: pass --resume auto" in result.stderr
    assert "Traceback" not in result.stderr
