"""Training with `mindspore.Model`, as MindCV's user scripts do: `create_trainer` (its plain path), the
metrics it picks, and `AllReduceSum`."""
from typing import Optional, Union

from mindspore import nn, ops
from mindspore.train import DynamicLossScaleManager, FixedLossScaleManager, Model

from ..errors import ConfigError


class AllReduceSum(nn.Cell):
    """Sum of a tensor over every rank of the data-parallel group (MindCV's; needs the communication set up:
    `mindspore.communication.init()`), the same result on each."""

    def __init__(self):
        super().__init__()
        self.all_reduce_sum = ops.AllReduce(ops.ReduceOp.SUM)

    def construct(self, x):
        return self.all_reduce_sum(x)


def get_metrics(num_classes: int) -> dict:
    """MindCV's evaluation metrics for `Model`: top-1 accuracy, and top-5 when there are 5 classes or more."""
    metrics = {"Top_1_Accuracy": nn.Top1CategoricalAccuracy()}
    if num_classes >= 5:
        metrics["Top_5_Accuracy"] = nn.Top5CategoricalAccuracy()
    return metrics


def create_trainer(network: nn.Cell, loss: nn.Cell, optimizer: nn.Cell, metrics: Union[dict, set],
                   amp_level: str = "O0", amp_cast_list: Optional[str] = None, loss_scale_type: str = "fixed",
                   loss_scale: float = 1.0, drop_overflow_update: bool = False, ema: bool = False,
                   ema_decay: float = 0.9999, clip_grad: bool = False, clip_value: float = 15.0,
                   gradient_accumulation_steps: int = 1, method: str = "image") -> Model:
    """MindCV's `create_trainer`, its plain path: `mindspore.Model(network, loss_fn=loss, optimizer=optimizer,
    metrics=metrics, amp_level=amp_level)` with the loss-scale manager `loss_scale_type` names ("fixed":
    FixedLossScaleManager(loss_scale, drop_overflow_update); "dynamic": DynamicLossScaleManager(loss_scale, 2,
    2000); "auto": none given). Train with `model.train(epochs, loader, callbacks=..., dataset_sink_mode=False)`.

    MindCV's custom train step (ema, clip_grad, gradient_accumulation_steps > 1, amp_cast_list, method "token")
    is not offered here: those are train.py's keys (`mindcv.engine.create_train_step` and `Trainer`), and asking
    for them raises ConfigError saying so. The arguments after `metrics` take MindCV's meaning; the defaults of
    amp_level, amp_cast_list and loss_scale_type are added (MindCV requires them).
    """
    custom = [name for name, wanted in (("ema", ema), ("clip_grad", clip_grad),
                                          ("gradient_accumulation_steps", gradient_accumulation_steps > 1),
                                          ("amp_cast_list", bool(amp_cast_list)), ("method", method != "image"))
              if wanted]
    if custom:
        raise ConfigError(f"create_trainer here builds a plain mindspore.Model; {', '.join(custom)} need mindcv's "
                          f"train step: train with train.py (keys of the same names) or mindcv.engine's "
                          f"create_train_step and Trainer")
    if loss_scale < 1.0:
        raise ValueError(f"loss_scale must be >= 1.0, got {loss_scale}")
    kind = loss_scale_type.lower()
    if kind == "dynamic" and not drop_overflow_update:
        raise ValueError("a dynamic loss scale always drops overflowing updates: set drop_overflow_update True")
    kwargs = dict(network=network, loss_fn=loss, optimizer=optimizer, metrics=metrics, amp_level=amp_level)
    if kind == "fixed":
        kwargs["loss_scale_manager"] = FixedLossScaleManager(loss_scale, drop_overflow_update=drop_overflow_update)
    elif kind == "dynamic":
        kwargs["loss_scale_manager"] = DynamicLossScaleManager(init_loss_scale=loss_scale, scale_factor=2,
                                                               scale_window=2000)
    elif kind != "auto":
        raise ValueError(f"loss_scale_type must be 'fixed', 'dynamic' or 'auto', got {loss_scale_type!r}")
    return Model(**kwargs)
