"""Data-parallel training under msrun on this CPU: two workers with batch B step like one process with batch 2B;
SIGTERM to msrun and `python -m mindcv.stop` leave a resumable state that resumes exactly;
two single-worker launches (two "nodes" on 127.0.0.1, each with its own run folder) resume from their own disks;
ranks draw their own drop-path masks and mixing."""
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import mindspore as ms
import numpy as np
import pytest

from conftest import DEMO_DATA, ROOT
from mindcv.data import create_dataset, create_loader, create_transforms
from mindcv.engine import seed_graph_randomness
from mindcv.models import create_model
from mindcv.models.layers import DropPath
from mindcv.io.checkpoint import save_checkpoint_atomic
from test_train import DETERMINISTIC, TINY, records, run, weights


def find_msrun():
    """msrun beside this Python first: `python -m pytest` from a virtual environment that is not activated does
    not have the environment's bin/ on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "msrun")
    return beside if os.access(beside, os.X_OK) else shutil.which("msrun")


MSRUN = find_msrun()
needs_msrun = pytest.mark.skipif(MSRUN is None, reason="msrun (installed with mindspore) is neither beside "
                                                       f"{sys.executable} nor on PATH")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def msrun(*args, log_dir, worker_num=2, local_worker_num=2, port=None, node_rank=None, new_session=False):
    """msrun --join True: it waits for its workers (and they follow it: mindcv/engine/stopping.py)."""
    command = [MSRUN, "--worker_num", str(worker_num), "--local_worker_num", str(local_worker_num),
               "--master_addr", "127.0.0.1", "--master_port", str(port or free_port()), "--log_dir", str(log_dir),
               "--join", "True"]
    if node_rank is not None:
        command += ["--node_rank", str(node_rank)]
    # msrun starts its workers with the `python` on PATH: this interpreter's, also from a venv not activated
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return subprocess.Popen([*command, "train.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PATH": path},
                            start_new_session=new_session)


def wait_for_listener(port, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port}")


def finish(*processes):
    for process in processes:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-3000:]


@pytest.fixture(scope="module")
def common(tmp_path_factory):
    init = str(tmp_path_factory.mktemp("init") / "init.ckpt")
    save_checkpoint_atomic(create_model("convnext_atto", num_classes=10, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)),
                           init)
    # distribute comes from a recipe, as the Ascend recipes give it: msrun also starts its scheduler with the
    # command, and that process must see itself launched for distribution, not train alone
    recipe = tmp_path_factory.mktemp("recipe") / "distributed.yaml"
    recipe.write_text("distribute: True\n")
    # one step per epoch, so the per-epoch loss is the loss of each step
    return ["-c", str(recipe), *TINY, *DETERMINISTIC, "--shuffle", "False", "--num_samples", "32", "--ckpt_path", init,
            "--batch_size", "16"]


@pytest.fixture(scope="module")
def two_workers(common, tmp_path_factory):
    """Three epochs with two workers on one node: its run folder and log folder."""
    folder = tmp_path_factory.mktemp("pair")
    finish(msrun(*common, "--epoch_size", "3", "--ckpt_save_dir", str(folder / "run"), log_dir=folder / "logs"))
    return folder


@needs_msrun
def test_two_workers_match_one_process_with_the_global_batch(common, two_workers, tmp_path):
    single = list(common)  # the recipe's distribute: True applies only under a launcher
    single[single.index("--batch_size") + 1] = "32"
    run("train.py", *single, "--epoch_size", "3", "--ckpt_save_dir", str(tmp_path / "single"))

    alone, pair = records(str(tmp_path / "single")), records(str(two_workers / "run"))
    assert [r["step"] for r in pair] == [1, 2, 3]
    np.testing.assert_allclose([r["train_loss"] for r in pair], [r["train_loss"] for r in alone], rtol=1e-5)
    assert pair[-1]["val_top1"] == pytest.approx(alone[-1]["val_top1"])

    start = weights(common[common.index("--ckpt_path") + 1])
    by_one, by_two = weights(str(tmp_path / "single" / "convnext_atto-3_1.ckpt")), \
        weights(str(two_workers / "run" / "convnext_atto-3_1.ckpt"))
    for name, initial in start.items():
        reference_update = by_one[name] - initial
        error = np.linalg.norm((by_two[name] - initial) - reference_update)
        assert error <= 1e-3 * max(np.linalg.norm(reference_update), 1e-12), name

    logs = glob.glob(str(two_workers / "logs" / "worker_*.log"))
    digests = {d for log in logs for d in re.findall(r"final weights sha256 ([0-9a-f]{64})", open(log).read())}
    assert len(logs) == 2 and len(digests) == 1
    assert len(pair) == 3  # rank 0 alone appended metrics


@needs_msrun
def test_two_nodes_resume_each_from_its_own_run_folder(common, two_workers, tmp_path):
    """Two launches of one worker each (node ranks 0 and 1, no shared folder) resume to the third epoch with
    --resume auto: each node finds its own checkpoint, and the weights are the uninterrupted run's. Each node's
    folder starts as a two-epoch run leaves it (the two-worker run's epoch-2 state, which is the same on every
    rank); that each node's first rank writes its own checkpoints is what the resumed epoch shows."""
    def launch(node, port, args):
        return msrun(*common, *args, "--ckpt_save_dir", str(tmp_path / f"node{node}"), worker_num=2,
                     local_worker_num=1, port=port, node_rank=node, log_dir=tmp_path / f"logs{node}")

    def launch_both(*args):
        # On one host both launches take 127.0.0.1 for their own address and start a scheduler; node 0's must own
        # the port first. Node 1's scheduler then fails (port taken), which fails its msrun, while its worker joins
        # node 0's scheduler and trains: that worker's log is what tells how node 1 did.
        port = free_port()
        node0 = launch(0, port, args)
        wait_for_listener(port)
        node1 = launch(1, port, args)
        finish(node0)
        node1.communicate(timeout=600)
        log = open(tmp_path / "logs1" / "worker_1.log").read()
        assert "final weights sha256" in log and "Traceback" not in log and "error:" not in log, log[-3000:]

    for node in (0, 1):
        os.makedirs(tmp_path / f"node{node}")
        # with the list of the files the toolkit wrote: a resume refuses files it did not write
        for name in ("convnext_atto-2_1.ckpt", "written_files.json"):
            shutil.copy(two_workers / "run" / name, tmp_path / f"node{node}")
    shutil.copy(two_workers / "run" / "metrics.jsonl", tmp_path / "node0")  # rank 0's records
    launch_both("--epoch_size", "3", "--resume", "auto")
    uninterrupted = weights(str(two_workers / "run" / "convnext_atto-3_1.ckpt"))
    for node in (0, 1):
        assert os.path.exists(tmp_path / f"node{node}" / "convnext_atto-2_1.ckpt")  # resumed from its own folder
        resumed = weights(str(tmp_path / f"node{node}" / "convnext_atto-3_1.ckpt"))
        assert max(float(np.abs(resumed[k] - uninterrupted[k]).max()) for k in uninterrupted) <= 1e-5
    assert [r["epoch"] for r in records(str(tmp_path / "node0"))] == [1, 2, 3]  # records: rank 0 only
    assert not os.path.exists(tmp_path / "node1" / "metrics.jsonl")


def drop_path_masks(rank):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        ms.set_seed(7)
        layer = DropPath(0.5).set_train(True)
        seed_graph_randomness(7, rank)
        return [layer.sample_scale(ms.Tensor(np.zeros((64, 1), np.float32))).asnumpy() for _ in range(2)]
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def test_ranks_draw_their_own_drop_path_masks():
    first, again, other = drop_path_masks(0), drop_path_masks(0), drop_path_masks(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))  # reproducible per rank
    assert not any(np.array_equal(a, b) for a, b in zip(first, other))


def test_ranks_mix_their_batches_with_their_own_draws():
    """Batch 0 of epoch 0 on shard 0 and on shard 1, mixup only, no smoothing: sample 0 is mixed with the last
    sample as lam * onehot(y_0) + (1 - lam) * onehot(y_last), so lam is the target's value at y_0."""
    lams = []
    for shard in (0, 1):
        dataset = create_dataset("imagefolder", DEMO_DATA, "train", num_samples=64, num_shards=2, shard_id=shard,
                                 seed=3)
        loader = create_loader(dataset, 8, True, True, mixup=0.8, num_classes=10, num_parallel_workers=1, seed=3,
                               transform=create_transforms("imagefolder", is_training=False, image_resize=8))
        _, targets = next(loader.create_tuple_iterator(num_epochs=1, output_numpy=True))
        labels = dataset.image_source.labels[dataset.epoch_order.indices(0)[:8]]
        assert labels[0] != labels[-1]  # the seed is chosen so that lam can be read off sample 0
        lams.append(float(targets[0, labels[0]]))
    assert 0 < lams[0] < 1 and 0 < lams[1] < 1 and abs(lams[0] - lams[1]) > 1e-3


def wait_for_line(path, text, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and text in open(path).read():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{path} never showed {text!r}")


def workers_of(port):
    """Pids of the train.py processes of the msrun job on `port` (their environment names it)."""
    pids = []
    for environ in glob.glob("/proc/[0-9]*/environ"):
        try:
            with open(environ, "rb") as f:
                if f"MS_SCHED_PORT={port}\0".encode() not in f.read():
                    continue
            with open(environ.replace("environ", "cmdline"), "rb") as f:
                if b"train.py" in f.read():
                    pids.append(int(environ.split("/")[2]))
        except OSError:  # gone meanwhile, or not ours
            pass
    return pids


@needs_msrun
def test_sigterm_to_msrun_and_the_stop_command_keep_the_work_and_resume_exactly(common, two_workers, tmp_path):
    """A cluster preempting the job sends SIGTERM to msrun, which dies without forwarding it; its workers (in
    sessions of their own) follow it, agree, and save a resumable state on the node's first rank. Resumed, the run
    is stopped again with `python -m mindcv.stop RUN_DIR`, and resumed again to the uninterrupted weights. With one
    step per epoch, each stop is honoured at an epoch's end."""
    run_dir, args = tmp_path / "run", [*common, "--epoch_size", "3", "--ckpt_save_dir", str(tmp_path / "run")]
    log = tmp_path / "logs1" / "worker_0.log"

    port = free_port()
    launcher = msrun(*args, log_dir=tmp_path / "logs1", port=port, new_session=True)
    wait_for_line(log, "Epoch: [1/3], batch: [1/1]")
    launcher.send_signal(signal.SIGTERM)
    launcher.wait(timeout=60)  # not communicate(): msrun's `tail -f` of the worker logs keep its stdout open
    deadline = time.time() + 120
    while workers_of(port) and time.time() < deadline:
        time.sleep(0.5)
    assert not workers_of(port), open(log).read()[-3000:]
    os.killpg(launcher.pid, signal.SIGKILL)  # those tails outlive msrun
    launcher.stdout.close()
    assert "stopped on request" in open(log).read(), open(log).read()[-3000:]
    assert sorted(p.name for p in run_dir.glob("convnext_atto-*.ckpt")) == ["convnext_atto-1_1.ckpt"]

    stopped = msrun(*args, "--resume", "auto", log_dir=tmp_path / "logs2")
    # asked while the resumed run compiles: its first boundary, the end of epoch 2, is where it stops (a request
    # during epoch 2's short validation could miss that end and find the run complete)
    wait_for_line(tmp_path / "logs2" / "worker_0.log", "resumed from")
    command = subprocess.run([sys.executable, "-m", "mindcv.stop", str(run_dir)], cwd=ROOT, capture_output=True,
                             text=True)
    assert command.returncode == 0 and "STOP" in command.stdout, command.stderr
    output, _ = stopped.communicate(timeout=300)
    assert stopped.returncode != 0  # msrun reports a worker's status 130 as a failure
    assert "stopped on request" in open(tmp_path / "logs2" / "worker_0.log").read(), output[-3000:]
    assert not (run_dir / "STOP").exists()
    assert "convnext_atto-2_1.ckpt" in {p.name for p in run_dir.glob("*.ckpt")}

    finish(msrun(*args, "--resume", "auto", log_dir=tmp_path / "logs3"))
    resumed = weights(str(run_dir / "convnext_atto-3_1.ckpt"))
    uninterrupted = weights(str(two_workers / "run" / "convnext_atto-3_1.ckpt"))
    assert max(float(np.abs(resumed[k] - uninterrupted[k]).max()) for k in uninterrupted) <= 1e-5
    assert [r["epoch"] for r in records(str(run_dir))] == [1, 2, 3]
