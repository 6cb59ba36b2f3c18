"""Runs of train.py that stop and continue: resume (also MindCV's --ckpt_path --resume_opt) to the weights of an
uninterrupted run, with and without data randomness; Ctrl-C / SIGTERM at a chunk boundary; a non-finite loss."""
import os
import shutil
import signal
import subprocess
import sys
import time

import mindspore as ms
import numpy as np
import pytest

from conftest import ROOT
from test_train import DETERMINISTIC, RANDOM_DATA, TINY, records, run, weights

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
