"""Runs of train.py that stop and continue: resume (also MindCV's --ckpt_path --resume_opt) to the weights of an
uninterrupted run, with and without data randomness; Ctrl-C / SIGTERM in a later epoch, stopping at a chunk boundary;
a non-finite loss; and what a run logged to a file prints."""
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
    resumed_run = run("train.py", *SHORT, "--epoch_size", "3", "--ckpt_save_dir", str(tmp_path / "resumed"),
                      "--resume", "auto")
    # no epoch was validated (val_while_train False), before the resume or after: the summary names no best
    assert "done: 2 epochs in" in resumed_run.stdout and "best val_top1" not in resumed_run.stdout
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
    """Mixup/cutmix, RandAugment, random erasing and random crops are keyed by (seed, epoch, sample or batch), and
    drop-path masks by (seed, rank, the train step's saved call count): a resumed run draws what the uninterrupted
    one drew."""
    common = [*TINY, *DETERMINISTIC, *RANDOM_DATA, "--drop_path_rate", "0.3", "--num_samples", "32", "--batch_size",
              "16", "--val_while_train", "False"]
    run("train.py", *common, "--epoch_size", "2", "--ckpt_save_dir", str(tmp_path / "straight"))
    run("train.py", *common, "--epoch_size", "1", "--ckpt_save_dir", str(tmp_path / "resumed"))
    run("train.py", *common, "--epoch_size", "2", "--ckpt_save_dir", str(tmp_path / "resumed"), "--resume", "auto")
    straight = weights(str(tmp_path / "straight" / "convnext_atto-2_2.ckpt"))
    resumed = weights(str(tmp_path / "resumed" / "convnext_atto-2_2.ckpt"))
    assert max(float(np.abs(straight[k] - resumed[k]).max()) for k in straight) <= 1e-5


# Two epochs of ten steps on two data worker threads: MindSpore's GeneratorDataset threads used to take the
# process's SIGTERM handler when an iterator started them (mindcv/engine/stopping.py), so that a stop in the second
# epoch ended the run with status 0 (SIGTERM from the parent) or 143 (Ctrl-C), without saving.
STOPPABLE = [*TINY, *DETERMINISTIC, "--num_samples", "160", "--batch_size", "16", "--epoch_size", "2",
             "--num_parallel_workers", "2", "--val_while_train", "False"]
PROGRESS_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d Epoch: \[(\d+)/2\], batch: \[(\d+)/10\], loss: "
                           r"(\d+\.\d{6}), lr: (\d+\.\d{6}), images/s: \d+\.\d, time: \d+\.\d{3}s$")


@pytest.fixture(scope="module")
def uninterrupted_stoppable_run(tmp_path_factory):
    """The uninterrupted run (validated, for its logs): (its run folder, what it printed)."""
    run_dir = tmp_path_factory.mktemp("straight")
    result = run("train.py", *STOPPABLE, "--val_while_train", "True", "--log_interval", "4",
                 "--ckpt_save_dir", str(run_dir))
    return run_dir, result.stdout


def test_a_run_logged_to_a_file_prints_dated_lines_in_mindcvs_shape(uninterrupted_stoppable_run):
    """Not on a terminal (msrun's worker logs, nohup): the settings first, one dated line per chunk (no progress
    bar), the epoch's rounded JSON record, a summary last; result.log holds MindCV's table."""
    run_dir, stdout = uninterrupted_stoppable_run
    lines = stdout.splitlines()
    assert "\r" not in stdout
    settings = dict(line.split(": ", 1) for line in lines[lines.index("-" * 40) + 1:lines.index("-" * 40, 1)])
    assert settings["Model"] == "convnext_atto" and settings["Number of devices"] == "1"
    assert settings["Global batch size"] == "16" and settings["Images per epoch"] == "160"
    assert int(settings["Model parameters"]) > 0 and settings["Optimizer"].startswith("adamw")
    progress = [PROGRESS_LINE.match(line) for line in lines if " Epoch: [" in line]
    assert all(progress) and [(int(m[1]), int(m[2])) for m in progress] == [
        (epoch, step) for epoch in (1, 2) for step in (4, 8, 10)]
    epoch_lines = [line for line in lines if line.startswith('{"epoch"')]
    assert len(epoch_lines) == 2 and lines[-2] == epoch_lines[-1]  # the summary follows the last record
    last, record = json.loads(epoch_lines[-1].split("  (best)")[0]), records(str(run_dir))[-1]
    assert last.keys() == record.keys() and isinstance(last["unix_time"], int)
    assert last["train_loss"] == round(record["train_loss"], 4) and last["val_top1"] == round(record["val_top1"], 2)
    best = max(records(str(run_dir)), key=lambda r: r["val_top1"])
    assert re.fullmatch(rf"done: 2 epochs in [\dhms .]+; best val_top1 {best['val_top1']:.2f} at epoch "
                        rf"{best['epoch']} \(.*convnext_atto_best.ckpt\)", lines[-1])
    table = (run_dir / "result.log").read_text().splitlines()
    assert table[0].split("\t") == ["Epoch", "TrainLoss", "ValAcc", "ValAcc5", "Time"]
    rows = [row.split("\t") for row in table[1:]]
    assert [int(row[0]) for row in rows] == [1, 2]
    assert [float(row[2]) for row in rows] == [r["val_top1"] for r in records(str(run_dir))]


def read_until(stream, pattern, timeout=300):
    """What `stream` printed up to and including the first line matching `pattern`."""
    deadline, seen = time.time() + timeout, []
    while time.time() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
    raise AssertionError(f"no line matched {pattern!r}:\n" + "".join(seen)[-3000:])


@pytest.mark.parametrize("signum, to_group, sink_size, validate, after, delay", [
    (signal.SIGTERM, False, 3, True, r"Epoch: \[1/2\], batch: \[10/10\]", 0.3),
    (signal.SIGINT, True, 1, False, r"Epoch: \[2/2\], batch: \[1/10\]", 0.0)])
def test_a_stop_request_after_the_first_epoch_saves_a_resumable_state_that_resumes_exactly(
        tmp_path, uninterrupted_stoppable_run, signum, to_group, sink_size, validate, after, delay):
    """SIGTERM to the process (as a scheduler sends it) during the first epoch's validation, or Ctrl-C to its
    process group (as a terminal sends it) in the second epoch: the run says at once that it stops at the next
    boundary, stops there with its state saved (status 130), and resuming gives the uninterrupted run's weights.
    (The validation's data threads held the process's SIGTERM handler: the run then ended with status 0.)"""
    run_dir = tmp_path / "interrupted"
    args = [*STOPPABLE, "--sink_size", str(sink_size), "--val_while_train", str(validate)]
    process = subprocess.Popen([sys.executable, "train.py", *args, "--ckpt_save_dir", str(run_dir)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = read_until(process.stdout, after)
    time.sleep(delay)
    if to_group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    output = seen + process.communicate(timeout=120)[0]
    assert process.returncode == 130, output[-3000:]
    assert "stopping at the next boundary" in output and "Ctrl-C again to stop now" in output
    assert "stopped on request" in output and "continue with --resume auto" in output
    saved = sorted(name for name in os.listdir(run_dir) if re.fullmatch(r"convnext_atto-\d+_\d+\.ckpt", name))
    state = ms.load_checkpoint(str(run_dir / saved[-1]))
    steps_done = int(state["step_num"].asnumpy())
    assert int(state["epoch_num"].asnumpy()) == 1 and steps_done < 10 and steps_done % sink_size == 0
    run("train.py", *args, "--ckpt_save_dir", str(run_dir), "--resume", "auto")
    # the resumed epoch trains only the batches the interrupted run had not reached
    resumed = weights(str(run_dir / "convnext_atto-2_10.ckpt"))
    straight = weights(str(uninterrupted_stoppable_run[0] / "convnext_atto-2_10.ckpt"))
    assert int(resumed["global_step"][0]) == int(straight["global_step"][0]) == 20
    assert max(float(np.abs(straight[k] - resumed[k]).max()) for k in straight) <= 1e-5
