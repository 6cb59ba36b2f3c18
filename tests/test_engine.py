"""The training loop of mindcv.engine on a tiny network: chunks of K steps fed from the host behave as single
steps do, and the sunk loop (data_sink, replaced by a host-side stand-in since the CPU has no device queue) runs
the same steps, then stops and releases the transfer queue."""
import itertools
import json

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
import pytest
from mindspore import nn

from mindcv.engine import NonFiniteLossError, RunFolder, Trainer
from mindcv.engine.stopping import STOPPED_STATUS
from mindcv.engine.trainer import chunk_size, sunk_steps_per_epoch
from mindcv.errors import ConfigError
from mindcv.loss import create_loss
from mindcv.optim import create_optimizer
from mindcv.engine.train_step import create_train_step

RNG = np.random.default_rng(5)
STEPS, BATCH = 6, 4
IMAGES = RNG.normal(size=(STEPS * BATCH, 4)).astype(np.float32)
LABELS = RNG.integers(0, 3, size=STEPS * BATCH).astype(np.int32)


def make_loader(images=IMAGES):
    def loader(start_epoch, skip):
        return ds.NumpySlicesDataset({"image": images, "label": LABELS}, shuffle=False).batch(BATCH).skip(skip)
    return loader


def trainer(tmp_path, images=IMAGES, drop_overflow_update=True, steps_per_epoch=STEPS, **kwargs):
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    network = nn.SequentialCell(nn.Dense(4, 8), nn.GELU(approximate=False), nn.Dense(8, 3))
    optimizer = create_optimizer(network, "adamw", lr=0.01, weight_decay=0.0)
    step = create_train_step(network, create_loss("ce"), optimizer, drop_overflow_update=drop_overflow_update)
    run = RunFolder(str(tmp_path), "tiny", 0, writes_records=True, keeps_state=True)
    return Trainer(step, run, make_loader(images), epochs=2, steps_per_epoch=steps_per_epoch, batch_size=BATCH,
                   lr_per_step=[0.01], drop_overflow_update=drop_overflow_update, **kwargs)


def records(tmp_path):
    return [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]


def weights(train_step):
    return {p.name: p.asnumpy().copy() for p in train_step.network.get_parameters()}


def test_chunk_sizes():
    assert chunk_size(100, sink=True, sink_size=-1, log_interval=10) == 100  # one sink per epoch, as MindCV
    assert chunk_size(100, sink=True, sink_size=25, log_interval=10) == 25
    assert chunk_size(100, sink=False, sink_size=-1, log_interval=10) == 10
    assert chunk_size(100, sink=False, sink_size=3, log_interval=10) == 3
    assert chunk_size(5, sink=False, sink_size=-1, log_interval=100) == 5


# the third batch of every epoch overflows (a NaN input): its update is skipped, its loss left out
OVERFLOWING = IMAGES.copy()
OVERFLOWING[2 * BATCH, 1] = np.nan


@pytest.fixture(scope="module")
def single_steps(tmp_path_factory):
    path = tmp_path_factory.mktemp("single")
    run = trainer(path, OVERFLOWING, log_interval=1)
    assert run.fit() == 0
    return records(path), weights(run.train_step)


def test_host_chunks_of_three_train_as_single_steps(tmp_path, single_steps):
    expected_records, expected_weights = single_steps
    run = trainer(tmp_path, OVERFLOWING, sink_size=3)
    assert run.chunk == 3 and run.fit() == 0
    got = records(tmp_path)
    assert [r["skipped_updates"] for r in got] == [r["skipped_updates"] for r in expected_records] == [1, 2]
    np.testing.assert_allclose([r["train_loss"] for r in got], [r["train_loss"] for r in expected_records],
                               rtol=1e-6)
    for name, value in weights(run.train_step).items():
        np.testing.assert_array_equal(value, expected_weights[name])
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["tiny-1_6.ckpt", "tiny-2_6.ckpt"]


def test_a_non_finite_step_without_drop_stops_before_saving(tmp_path):
    poisoned = IMAGES.copy()
    poisoned[BATCH + 1, 0] = np.nan  # step 2 of epoch 1
    run = trainer(tmp_path, poisoned, drop_overflow_update=False, sink_size=3)
    with pytest.raises(NonFiniteLossError, match="epoch 1, within steps 1-3"):
        run.fit()
    assert not list(tmp_path.glob("*.ckpt"))


class StandInTransfer:
    def __init__(self):
        self.calls = []

    def stop_send(self):
        self.calls.append("stop_send")

    def release(self):
        self.calls.append("release")


def stand_in_data_sink(sinks, steps_of_sink=lambda index, sink_size: sink_size):
    """A stand-in for mindspore.data_sink, looping in Python: each sink runs steps_of_sink(index of the sink,
    sink_size) steps. Records (sink_size, jit_level, transfer queue) of every call in `sinks`."""
    def data_sink(step, loader, sink_size, jit_config):
        transfer = loader.__transfer_dataset__ = StandInTransfer()
        sinks.append((sink_size, jit_config.jit_config_dict["jit_level"], transfer))
        iterator = loader.create_tuple_iterator(num_epochs=-1)
        batches = (batch for _ in itertools.count() for batch in iterator)
        sinks_run = itertools.count()

        def one_sink():
            for _ in range(steps_of_sink(next(sinks_run), sink_size)):
                step(*next(batches))
        return one_sink
    return data_sink


def test_sunk_loop_runs_the_same_steps_and_releases_the_queue(tmp_path, single_steps):
    """The sunk loop calls mindspore.data_sink once, with sink_size = the chunk and a JitConfig of the run's
    jit_level, runs each sink as one chunk, and stops and releases the transfer queue at the end."""
    sinks = []
    data_sink = stand_in_data_sink(sinks)
    with pytest.raises(ValueError, match="sink_size 4 does not divide the 6 steps"):
        trainer(tmp_path, OVERFLOWING, sink=True, sink_size=4, data_sink=data_sink)
    run = trainer(tmp_path, OVERFLOWING, sink=True, sink_size=3, jit_level="O1", data_sink=data_sink)
    assert run.fit() == 0
    assert [(size, level) for size, level, _ in sinks] == [(3, "O1")]
    assert sinks[0][2].calls == ["stop_send", "release"]
    expected_records, expected_weights = single_steps
    assert [r["skipped_updates"] for r in records(tmp_path)] == [1, 2]
    for name, value in weights(run.train_step).items():
        np.testing.assert_array_equal(value, expected_weights[name])


def test_a_sink_that_runs_fewer_steps_than_asked_stops_the_run(tmp_path):
    """The device counts the steps it ran: the sink after the first (as after the validation network's compile
    under jit_level O2) runs 1 step of 3, and the run stops there with an error naming jit_level and sink_size,
    the first epoch's checkpoint intact."""
    sinks = []
    run = trainer(tmp_path, sink=True, sink_size=3, jit_level="O2",
                  data_sink=stand_in_data_sink(sinks, lambda index, sink_size: sink_size if index < 2 else 1))
    message = r"^a sink of sink_size 3 ran 1 steps on the device \(jit_level O2\)"
    with pytest.raises(ConfigError, match=message) as error:
        run.fit()
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["tiny-1_6.ckpt"]
    assert sinks[0][2].calls == ["stop_send", "release"]


@pytest.mark.parametrize("sink_size, saved", [(2, "tiny-1_2.ckpt"), (-1, "tiny-1_6.ckpt")])
def test_a_stop_file_stops_at_the_next_boundary_with_the_state_saved(tmp_path, sink_size, saved):
    """A STOP file in the run folder (python -m mindcv.stop) is seen at the next chunk boundary: the state is saved
    there (at an epoch's end after its records, even when ckpt_save_interval would skip it), the file is consumed and
    fit returns STOPPED_STATUS."""
    run = trainer(tmp_path, sink_size=sink_size, ckpt_save_interval=5)
    (tmp_path / "STOP").write_text("stop\n")
    assert run.fit() == STOPPED_STATUS
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == [saved]
    assert not (tmp_path / "STOP").exists()
    assert [r["epoch"] for r in records(tmp_path)] == ([] if sink_size == 2 else [1])


def test_a_stop_file_written_during_the_last_epoch_does_not_stop_the_next_run(tmp_path):
    """The run completes (nothing is left to stop) and consumes the request, so `--resume auto` with more epochs
    trains on instead of stopping at its first boundary."""
    run = trainer(tmp_path, sink_size=2)
    run.epochs = 1
    (tmp_path / "STOP").write_text("stop\n")
    assert run.fit(start_epoch=0, steps_done=4) == 0  # the last chunk of the last epoch
    assert not (tmp_path / "STOP").exists()


def test_the_stop_command_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    from mindcv.stop import main
    assert main([str(tmp_path)]) == 2
    assert "is not the folder of a training run" in capsys.readouterr().err and not (tmp_path / "STOP").exists()
    (tmp_path / "config.yaml").write_text("model: x\n")
    assert main([str(tmp_path)]) == 0 and (tmp_path / "STOP").exists()


def test_a_sink_size_that_does_not_divide_the_epoch_trains_its_whole_sinks(tmp_path):
    """Six batches per epoch, sinks of four: each epoch trains its first four batches (the fifth and sixth are left
    out, as drop_remainder leaves out images), exactly as a host-fed run over those four."""
    assert sunk_steps_per_epoch(6, 4) == 4 and sunk_steps_per_epoch(10009, 556) == 10008
    assert sunk_steps_per_epoch(6, 3) == sunk_steps_per_epoch(6, -1) == sunk_steps_per_epoch(6, 8) == 6
    sunk = trainer(tmp_path / "sunk", sink=True, sink_size=4, data_sink=stand_in_data_sink([]), steps_per_epoch=4)
    assert sunk.fit() == 0
    host_fed = trainer(tmp_path / "host", sink_size=4, steps_per_epoch=4)
    host_fed.make_loader = lambda epoch, skip: ds.NumpySlicesDataset(
        {"image": IMAGES[:4 * BATCH], "label": LABELS[:4 * BATCH]}, shuffle=False).batch(BATCH).skip(skip)
    assert host_fed.fit() == 0
    for name, value in weights(host_fed.train_step).items():
        np.testing.assert_array_equal(weights(sunk.train_step)[name], value)
