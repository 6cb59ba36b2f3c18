"""A config reaches the training factories by name: each factory argument named like a config key (or renamed to
MindCV's key) takes its value, so a new key needs its schema entry and its factory argument only."""
import mindspore as ms
import pytest
from mindspore import nn

from mindcv.config import factories, schema
from mindcv.config.factories import build_loss, build_optimizer, build_scheduler, build_train_step, config_kwargs
from mindcv.config.schema import parse_config
from mindcv.engine.train_step import create_train_step

ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")


def test_every_key_reaches_its_factory_argument():
    config = parse_config(["--scheduler", "multi_step_decay", "--multi_step_decay_milestones", "1", "3",
                           "--epoch_size", "4", "--lr", "0.5", "--decay_rate", "0.1", "--warmup_epochs", "0"])
    assert build_scheduler(config, 2) == pytest.approx([0.5] * 2 + [0.05] * 4 + [0.005] * 2)
    kwargs = config_kwargs(create_train_step, config)
    for key in ("amp_level", "loss_scale_type", "loss_scale", "drop_overflow_update", "clip_grad", "clip_value",
                "gradient_accumulation_steps", "ema", "ema_decay", "distribute", "amp_cast_list"):
        assert kwargs[key] == getattr(config, key)


def test_the_optimizer_gets_the_schedule_and_betas_and_never_the_loss_scale():
    # the train step unscales the gradients: an optimizer that divided by loss_scale again would shrink every update
    config = parse_config(["--opt", "adamw", "--weight_decay", "0.05", "--loss_scale", "1024", "--momentum", "0.8",
                           "--beta2", "0.95", "--eps", "1e-6"])
    optimizer = build_optimizer(config, nn.Dense(3, 2), [0.1, 0.2])
    assert optimizer.loss_scale == 1.0
    assert (optimizer.beta1, optimizer.beta2, optimizer.eps) == pytest.approx((0.8, 0.95, 1e-6))
    assert optimizer.learning_rate.learning_rate.asnumpy().tolist() == pytest.approx([0.1, 0.2])


def test_the_loss_is_named_by_the_loss_key():
    loss = build_loss(parse_config(["--loss", "bce", "--label_smoothing", "0.1"]))
    assert type(loss).__name__ == "BinaryCrossEntropySmooth" and loss.smoothing == pytest.approx(0.1)


def test_a_new_key_named_like_a_factory_argument_reaches_it(monkeypatch):
    """loss_scale_window is an argument of create_train_step that the schema does not have: adding the schema
    entry alone must carry it to the factory."""
    config = parse_config([])
    assert "loss_scale_window" not in config_kwargs(create_train_step, config)
    option = schema.Option(name="loss_scale_window", type=int, default=1000, help="steps between scale growths")
    monkeypatch.setitem(factories.OPTIONS, "loss_scale_window", option)
    config.loss_scale_window = 50
    network = nn.Dense(3, 2)
    optimizer = build_optimizer(config, network, [0.1])
    train_step = build_train_step(config, network, build_loss(config), optimizer)
    assert train_step.loss_scale_window == 50
