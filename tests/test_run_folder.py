"""The run folder keeps the checkpoints that ckpt_save_policy chooses: latest_k the newest keep_checkpoint_max, top_k
the keep_checkpoint_max best by validation top-1 and the newest; the scores, kept beside the checkpoints, outlive
the RunFolder that wrote them (a resumed run ranks the earlier run's checkpoints too)."""
import json

import pytest
from mindspore import nn

from mindcv.engine import RunFolder
from mindcv.engine.run_folder import SCORES_FILE

STEPS = 5  # steps per epoch: epoch e ends with "tiny-{e}_5.ckpt"


@pytest.fixture(scope="module")
def network():
    return nn.Dense(2, 2)


def run_folder(tmp_path, keep, policy):
    return RunFolder(str(tmp_path), "tiny", keep, writes_records=True, keeps_state=True, policy=policy)


def save_epochs(run, network, scores, first_epoch=1):
    for epoch, score in enumerate(scores, start=first_epoch):
        run.save_state(network, epoch, 0, STEPS, score=score)


def files(tmp_path):
    return sorted(path.name for path in tmp_path.glob("tiny-*.ckpt"))


def test_top_k_keeps_the_best_and_the_newest(tmp_path, network):
    run = run_folder(tmp_path, 2, "top_k")
    save_epochs(run, network, [50.0, 70.0, 60.0, 40.0])
    assert files(tmp_path) == ["tiny-2_5.ckpt", "tiny-3_5.ckpt", "tiny-4_5.ckpt"]  # 70 and 60, and the newest
    assert json.loads((tmp_path / SCORES_FILE).read_text()) == {"tiny-2_5.ckpt": 70.0, "tiny-3_5.ckpt": 60.0,
                                                                "tiny-4_5.ckpt": 40.0}
    assert not list(tmp_path.glob(".tmp-*"))


def test_scores_survive_a_new_run_folder(tmp_path, network):
    save_epochs(run_folder(tmp_path, 2, "top_k"), network, [50.0, 70.0, 60.0, 40.0])
    resumed = run_folder(tmp_path, 2, "top_k")
    assert resumed.scores == {"tiny-2_5.ckpt": 70.0, "tiny-3_5.ckpt": 60.0, "tiny-4_5.ckpt": 40.0}
    save_epochs(resumed, network, [65.0], first_epoch=5)
    # ranked with the first run's scores: 70 (epoch 2) and 65 (epoch 5, also the newest)
    assert files(tmp_path) == ["tiny-2_5.ckpt", "tiny-5_5.ckpt"]


def test_top_k_drops_unscored_checkpoints_once_a_newer_one_is_saved(tmp_path, network):
    run = run_folder(tmp_path, 2, "top_k")
    save_epochs(run, network, [50.0])
    run.save_state(network, 1, 3, STEPS)  # interrupted 3 steps into epoch 2
    assert files(tmp_path) == ["tiny-1_5.ckpt", "tiny-2_3.ckpt"]  # the newest stays: resume needs it
    save_epochs(run, network, [None], first_epoch=2)  # an epoch without validation
    assert files(tmp_path) == ["tiny-1_5.ckpt", "tiny-2_5.ckpt"]
    save_epochs(run, network, [60.0], first_epoch=3)
    assert files(tmp_path) == ["tiny-1_5.ckpt", "tiny-3_5.ckpt"]
    assert run.scores == {"tiny-1_5.ckpt": 50.0, "tiny-3_5.ckpt": 60.0}


def test_top_k_of_equal_scores_keeps_the_older_and_0_keeps_all(tmp_path, network):
    save_epochs(run_folder(tmp_path / "ties", 1, "top_k"), network, [60.0, 60.0, 50.0])
    assert files(tmp_path / "ties") == ["tiny-1_5.ckpt", "tiny-3_5.ckpt"]
    save_epochs(run_folder(tmp_path / "all", 0, "top_k"), network, [60.0, None, 50.0])
    assert files(tmp_path / "all") == ["tiny-1_5.ckpt", "tiny-2_5.ckpt", "tiny-3_5.ckpt"]


def test_latest_k_keeps_the_newest_whatever_their_scores(tmp_path, network):
    save_epochs(run_folder(tmp_path, 2, "latest_k"), network, [50.0, 70.0, 60.0, 40.0])
    assert files(tmp_path) == ["tiny-3_5.ckpt", "tiny-4_5.ckpt"]


def test_scores_of_deleted_checkpoints_are_forgotten_and_a_damaged_file_is_named(tmp_path, network):
    save_epochs(run_folder(tmp_path, 2, "top_k"), network, [50.0, 70.0])
    (tmp_path / "tiny-2_5.ckpt").unlink()
    assert run_folder(tmp_path, 2, "top_k").scores == {"tiny-1_5.ckpt": 50.0}
    (tmp_path / SCORES_FILE).write_text("{")
    with pytest.raises(ValueError, match=f"{SCORES_FILE} is not valid JSON .*; delete it"):
        run_folder(tmp_path, 2, "top_k")
    for crafted in ('["tiny-1_5.ckpt"]', '{"tiny-1_5.ckpt": "70"}', '{"tiny-1_5.ckpt": true}'):
        (tmp_path / SCORES_FILE).write_text(crafted)
        with pytest.raises(ValueError, match=f"{SCORES_FILE} is not a mapping of checkpoint names to numbers"):
            run_folder(tmp_path, 2, "top_k")
