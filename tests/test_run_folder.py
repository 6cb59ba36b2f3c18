"""The run folder keeps the checkpoints that ckpt_save_policy chooses: latest_k the newest keep_checkpoint_max, top_k
the keep_checkpoint_max best by validation top-1 and the newest; the scores, kept beside the checkpoints, outlive
the RunFolder that wrote them (a resumed run ranks the earlier run's checkpoints too)."""
import json
import os

import pytest
from mindspore import nn

from mindcv.engine import RunFolder
from mindcv.errors import ConfigError
from mindcv.io.names import METRICS_FILE, RUN_CLASS_NAMES, RUN_RECIPE, SCORES_FILE, WRITTEN_FILES

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


# ---- files the toolkit did not write (issue 22, items 1 and 2)


def test_a_folder_holding_files_the_toolkit_did_not_write_is_refused_and_left_alone(tmp_path, network):
    """MindCV names its checkpoints as this toolkit does: a resume into a folder of a user's `tiny-5_100.ckpt`
    ... and config.yaml must not rank, delete or overwrite them."""
    for name in ("tiny-5_100.ckpt", "tiny-6_100.ckpt", "config.yaml"):
        (tmp_path / name).write_text(f"the user's {name}")
    (tmp_path / "notes.txt").write_text("not a run file: never named")
    with pytest.raises(ConfigError, match=r"holds files that this toolkit did not write there \(config.yaml, "
                                          r"tiny-5_100.ckpt, tiny-6_100.ckpt\).*move them away"):
        run_folder(tmp_path, 1, "latest_k")
    for name in ("tiny-5_100.ckpt", "tiny-6_100.ckpt", "config.yaml"):
        assert (tmp_path / name).read_text() == f"the user's {name}"


def test_the_keep_policy_deletes_only_what_it_wrote(tmp_path, network):
    run = run_folder(tmp_path, 1, "latest_k")
    save_epochs(run, network, [None])
    (tmp_path / "tiny-9_100.ckpt").write_text("placed meanwhile by someone else")  # newer by its name
    save_epochs(run, network, [None, None], first_epoch=2)
    assert files(tmp_path) == ["tiny-3_5.ckpt", "tiny-9_100.ckpt"]  # the run keeps its own newest, not the other
    assert json.loads((tmp_path / WRITTEN_FILES).read_text())["files"] == [SCORES_FILE, "tiny-3_5.ckpt"]
    assert run.resume_path("auto") == str(tmp_path / "tiny-3_5.ckpt")


def test_a_resume_from_an_older_checkpoint_sets_the_newer_ones_aside(tmp_path, network):
    run = run_folder(tmp_path, 0, "latest_k")
    save_epochs(run, network, [None] * 4)
    for epoch in range(1, 5):
        run.append_metrics({"epoch": epoch, "val_top1": [50.0, 60.0, 90.0, 70.0][epoch - 1]})
    run.save_best(network)  # the best of the records: epoch 3's
    resumed = run_folder(tmp_path, 2, "latest_k")
    aside = resumed.set_aside_newer(2, 0, STEPS)  # redo epochs 3 and 4 from tiny-2_5.ckpt
    assert sorted(os.listdir(aside)) == [METRICS_FILE, "tiny-3_5.ckpt", "tiny-4_5.ckpt", "tiny_best.ckpt"]
    assert [r["epoch"] for r in map(json.loads, open(os.path.join(aside, METRICS_FILE)))] == [1, 2, 3, 4]
    assert [r["epoch"] for r in resumed.keep_metrics_until(2)] == [1, 2]  # as the trainer starts epoch 3
    save_epochs(resumed, network, [None], first_epoch=3)
    # the redone epoch is kept (the set-aside newer ones no longer outrank it) and nothing aside was touched
    assert files(tmp_path) == ["tiny-2_5.ckpt", "tiny-3_5.ckpt"]
    assert sorted(os.listdir(aside)) == [METRICS_FILE, "tiny-3_5.ckpt", "tiny-4_5.ckpt", "tiny_best.ckpt"]
    assert run_folder(tmp_path, 2, "latest_k").set_aside_newer(3, 0, STEPS) == ""  # nothing newer: nothing moves


def test_a_nan_score_never_costs_the_best_checkpoint(tmp_path, network):
    save_epochs(run_folder(tmp_path, 0, "top_k"), network, [None, None, None])
    (tmp_path / SCORES_FILE).write_text('{"tiny-1_5.ckpt": NaN, "tiny-2_5.ckpt": 90.0, "tiny-3_5.ckpt": 10.0}')
    save_epochs(run_folder(tmp_path, 1, "top_k"), network, [20.0], first_epoch=4)
    assert files(tmp_path) == ["tiny-2_5.ckpt", "tiny-4_5.ckpt"]  # the best (90) and the newest


def test_run_files_replace_planted_links_and_metrics_append_only_to_a_regular_file(tmp_path, network):
    """A link planted in a run folder (shared with other users) must not make the run write into its target."""
    run = run_folder(tmp_path / "run", 0, "latest_k")
    victims = {name: tmp_path / f"victim-{name}" for name in (RUN_RECIPE, RUN_CLASS_NAMES, METRICS_FILE)}
    for name, victim in victims.items():
        victim.write_text("precious\n")
        (tmp_path / "run" / name).symlink_to(victim)
    run.write_run_files({"model": "tiny"}, ["a", "b"])
    assert (tmp_path / "run" / RUN_CLASS_NAMES).read_text() == "a\nb\n"
    assert not (tmp_path / "run" / RUN_RECIPE).is_symlink()
    with pytest.raises(OSError, match="metrics.jsonl is not a regular file|Too many levels of symbolic links"):
        run.append_metrics({"epoch": 1})
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "run" / METRICS_FILE).unlink()
    os.symlink(tmp_path / "fifo", tmp_path / "run" / METRICS_FILE)
    with pytest.raises(OSError):  # never blocks on a FIFO
        run.append_metrics({"epoch": 1})
    with pytest.raises(ConfigError, match="cannot read .*metrics.jsonl"):  # nor when reading it
        run.read_metrics()
    (tmp_path / "run" / METRICS_FILE).unlink()
    run.append_metrics({"epoch": 1})
    assert run.read_metrics() == [{"epoch": 1}]
    assert all(victim.read_text() == "precious\n" for victim in victims.values())
    assert not list((tmp_path / "run").glob(".tmp-*"))


@pytest.mark.parametrize("line", ['{"step": 3}', '{"epoch": "1"}', '[1]', '{"epoch": 1, "val_top1": "x"}', "{"])
def test_a_metrics_line_that_is_not_a_record_is_a_one_line_error(tmp_path, line):
    run = run_folder(tmp_path, 0, "latest_k")
    run.keep_metrics_until(0)
    (tmp_path / METRICS_FILE).write_text('{"epoch": 1}\n' + line + "\n")
    with pytest.raises(ConfigError, match=f"{METRICS_FILE} line 2 is not a record of this toolkit.*fix or delete"):
        run.keep_metrics_until(1)


@pytest.mark.parametrize("resume", [["--resume", "runA/convnext_atto-1_3.ckpt"], []], ids=["resumed", "fresh"])
def test_train_py_refuses_a_folder_of_the_users_files_with_one_line(tmp_path, capsys, resume):
    """Issue 22, item 1 as reproduced: train.py --resume runA/convnext_atto-1_3.ckpt into a folder of a user's
    convnext_atto-5_100.ckpt ... -16_100.ckpt and config.yaml deleted two of them and overwrote config.yaml; a
    fresh run overwrote config.yaml."""
    import train
    from conftest import DEMO_DATA
    users = [f"convnext_atto-{epoch}_100.ckpt" for epoch in range(5, 17)] + ["config.yaml"]
    for name in users:
        (tmp_path / name).write_text(f"the user's {name}")
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--model", "convnext_atto", "--data_dir", DEMO_DATA, "--epoch_size", "3", "--ckpt_save_dir",
                    str(tmp_path), "--keep_checkpoint_max", "10", *resume])
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in error
    assert error.startswith(f"error: {tmp_path} holds files that this toolkit did not write there (config.yaml, "
                            "convnext_atto-10_100.ckpt")
    assert sorted(os.listdir(tmp_path)) == sorted(users)
    assert all((tmp_path / name).read_text() == f"the user's {name}" for name in users)
