"""Data-parallel training under msrun on this CPU: two workers with batch B step like one process with batch 2B."""
import glob
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import ROOT
from mindcv.models import create_model
from mindcv.utils.checkpoint import save_checkpoint_atomic
from test_train import DETERMINISTIC, TINY, records, run, weights

pytestmark = pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun is not installed")


def test_two_workers_match_one_process_with_the_global_batch(tmp_path):
    init = str(tmp_path / "init.ckpt")
    save_checkpoint_atomic(create_model("convnext_atto", num_classes=10, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)),
                           init)
    # one step per epoch, so the per-epoch loss is the loss of each step
    common = [*TINY, *DETERMINISTIC, "--shuffle", "False", "--num_samples", "32", "--epoch_size", "3",
              "--ckpt_path", init]
    run("train.py", *common, "--batch_size", "32", "--ckpt_save_dir", str(tmp_path / "single"))
    result = subprocess.run(["msrun", "--worker_num", "2", "--local_worker_num", "2", "--master_port", "8297",
                             "--log_dir", str(tmp_path / "logs"), "--join", "True", "train.py",
                             *common, "--batch_size", "16", "--distribute", "True",
                             "--ckpt_save_dir", str(tmp_path / "pair")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]

    single, pair = records(str(tmp_path / "single")), records(str(tmp_path / "pair"))
    assert [r["step"] for r in pair] == [1, 2, 3]
    np.testing.assert_allclose([r["train_loss"] for r in pair], [r["train_loss"] for r in single], rtol=1e-5)
    assert pair[-1]["val_top1"] == pytest.approx(single[-1]["val_top1"])

    start = weights(init)
    alone, together = weights(str(tmp_path / "single" / "convnext_atto-3_3.ckpt")), \
        weights(str(tmp_path / "pair" / "convnext_atto-3_3.ckpt"))
    for name, initial in start.items():
        reference_update = alone[name] - initial
        error = np.linalg.norm((together[name] - initial) - reference_update)
        assert error <= 1e-3 * max(np.linalg.norm(reference_update), 1e-12), name

    digests = set()
    for log in glob.glob(str(tmp_path / "logs" / "worker_*.log")):
        digests.update(re.findall(r"final weights sha256 ([0-9a-f]{64})", open(log).read()))
    assert len(glob.glob(str(tmp_path / "logs" / "worker_*.log"))) == 2 and len(digests) == 1
    assert len(pair) == 3  # rank 0 alone appended metrics
