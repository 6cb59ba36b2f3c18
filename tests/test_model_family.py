"""A model family besides ConvNeXt takes two files: its model file, registering constructors through the registry,
and its recipe. Here a few-layer CNN (this test stands for its model file; it is not shipped) is trained by train.py
and loaded back through validate.py's code path, with none of ConvNeXt's keywords reaching it."""
import glob
import os
import signal
from collections import defaultdict

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

import train
import validate
from conftest import DEMO_DATA
from mindcv.config.builders import build_eval_model
from mindcv.config.schema import parse_config
from mindcv.models import registry
from mindcv.models.registry import model_keywords, register_model


class TinyCNN(nn.Cell):
    """Two 3x3 convolutions, global average pooling and the classifier (named `classifier`, as the scripts expect
    of every family: validate, infer and export read the number of classes from it)."""

    def __init__(self, num_classes: int, in_channels: int, width: int, drop_rate: float):
        super().__init__()
        self.features = nn.SequentialCell(nn.Conv2d(in_channels, width, 3, has_bias=True), nn.ReLU(),
                                          nn.Conv2d(width, width, 3, stride=2, has_bias=True), nn.ReLU())
        self.head_drop = nn.Dropout(p=drop_rate) if drop_rate > 0 else nn.Identity()
        self.classifier = nn.Dense(width, num_classes)

    def construct(self, x):
        return self.classifier(self.head_drop(self.features(x).mean((2, 3))))


def tiny_cnn(pretrained: bool = False, num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.0,
             width: int = 8) -> TinyCNN:
    """The family's constructor: MindCV's three arguments and its own keywords (no ConvNeXt layer scale)."""
    assert not pretrained, "tiny_cnn has no published weights"
    return TinyCNN(num_classes, in_channels, width, drop_rate)


@pytest.fixture
def tiny_cnn_registered(monkeypatch):
    """tiny_cnn registered as a model file registers its models, for this test only (the registry's tables are
    copies that the monkeypatch puts back)."""
    for table in ("_model_entrypoints", "_model_to_module", "_model_has_pretrained"):
        monkeypatch.setattr(registry, table, type(getattr(registry, table))(getattr(registry, table)))
    monkeypatch.setattr(registry, "_module_to_models",
                        defaultdict(set, {k: set(v) for k, v in registry._module_to_models.items()}))
    register_model(tiny_cnn)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in handlers.items():  # train.main installs Ctrl-C handlers
        signal.signal(signum, handler)


RUN = ["--model", "tiny_cnn", "--image_resize", "32", "--num_parallel_workers", "1", "--data_dir", DEMO_DATA,
       "--mode", "0", "--num_samples", "16", "--batch_size", "16"]


def test_second_family_trains_through_train_py_and_loads_back(tiny_cnn_registered, tmp_path, capsys):
    assert model_keywords("tiny_cnn") == {"pretrained", "num_classes", "in_channels", "drop_rate", "width"}
    assert model_keywords("convnext_atto") is None  # takes any: ConvNeXt's constructors hand them on
    run_dir = str(tmp_path / "run")
    assert train.main([*RUN, "--epoch_size", "1", "--val_while_train", "False", "--ckpt_save_dir", run_dir,
                       "--warmup_epochs", "0", "--drop_rate", "0.1"]) == 0
    (checkpoint,) = glob.glob(os.path.join(run_dir, "tiny_cnn-*.ckpt"))
    saved = {k: v.asnumpy() for k, v in ms.load_checkpoint(checkpoint).items() if k.startswith(("features.",
                                                                                               "classifier."))}
    assert sorted(saved) == ["classifier.bias", "classifier.weight", "features.0.bias", "features.0.weight",
                             "features.2.bias", "features.2.weight"]
    # validate.py's model: the run folder's recipe, the checkpoint's weights (names as they are)
    network = build_eval_model(parse_config(["--ckpt_path", checkpoint], recipe_beside_checkpoint=True))
    assert isinstance(network, TinyCNN)
    assert all(np.array_equal(p.asnumpy(), saved[p.name]) for p in network.get_parameters())
    capsys.readouterr()
    assert validate.main(["--ckpt_path", checkpoint, "--data_dir", DEMO_DATA, "--num_samples", "16"]) == 0
    assert "tiny_cnn" in capsys.readouterr().out


def test_a_keyword_the_family_does_not_take_is_a_one_line_error(tiny_cnn_registered, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main([*RUN, "--layer_scale_init_value", "0.1", "--epoch_size", "1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: model tiny_cnn takes no layer_scale_init_value: leave "
                                               "--layer_scale_init_value out")
