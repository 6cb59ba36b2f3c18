"""One training step as a graph-mode cell: forward, loss, backward, gradient all-reduce, unscale, overflow
check, gradient accumulation, clipping, optimizer update, EMA update and dynamic loss scaling.

State for exact resume, all Parameters, so `mindspore.save_checkpoint(train_step, path)` saves everything and
`mindspore.load_checkpoint(path, train_step)` (or `load_param_into_net`) restores it:
- the network's parameters, under their own names;
- the optimizer's: `global_step` (updates taken, skipped ones included: the learning-rate schedule position),
  `learning_rate`, and its moments and counters (`adam_m.*`, `adam_v.*`, `beta1_power`, ...: every name is in
  `mindcv.io.names`, with the rest of this list);
- `loss_scale` (float32 scalar), `current_iterator_step` (int32: calls of the train step, i.e. micro-batches
  seen), `last_overflow_iterator_step` (int32: call index of the last overflow or loss-scale growth);
- `accum.<param>`: gradient sums of the open accumulation window, and `window_overflow` (bool scalar: a
  micro-batch of that window overflowed), when gradient_accumulation_steps > 1;
- `ema.<param>`: EMA of every network parameter (ema=True).
"""
import contextlib
import difflib
import os
from typing import Dict, Optional, Tuple

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops
from mindspore import dtype as mstype

from ..errors import ConfigError
from ..io.names import ACCUM_PREFIX, EMA_PREFIX, ITERATOR_STEP, LAST_OVERFLOW_STEP, LOSS_SCALE, WINDOW_OVERFLOW
from ..models import layers
from ..ops.finite import all_finite_op
from ..ops.switch import fast_cpu_ops_enabled

AMP_LEVELS = ("O0", "O1", "O2", "O3")
# Dynamic scaling doubles the scale after every clean window: unbounded, a long run would reach inf (float32) and
# skip every later update. 2^24 is far above what fp16 training needs (MindSpore's default start is 2^24).
LOSS_SCALE_CAP = 2.0 ** 24


def select_overflow_check(device_target: str, fast_kernels: bool, float32_gradients: bool) -> str:
    """Which gradient overflow check a train step uses: "cpu_kernel" (mindcv's one-launch AllFinite kernel, on the
    CPU back end with the fast kernels on and float32 gradients) or "mindspore" (`mindspore.amp.all_finite`, which
    on Ascend 910A, and 910B in saturation mode, reads the NPU float status register: those chips clamp fp16
    overflow to +-65504, so an isfinite test of the gradients would never see it)."""
    if device_target == "CPU" and fast_kernels and float32_gradients:
        return "cpu_kernel"
    return "mindspore"


def npu_float_status_in_use() -> bool:
    """True on the Ascend chips whose overflow is read from the float status register (910A; 910B with
    MS_ASCEND_CHECK_OVERFLOW_MODE=SATURATION_MODE): the register must be cleared before the forward pass, as
    MindSpore's TrainOneStepWithLossScaleCell.start_overflow_check does, so that the check after backward sees
    this step's overflow only. The SoC features are the ones MindSpore's own amp.all_finite tests."""
    if ms.get_context("device_target") != "Ascend":
        return False
    from mindspore._c_expression import MSContext  # pylint: disable=import-outside-toplevel
    soc = MSContext.get_instance()
    return bool(soc.ascend_soc_supports_feature("amp_loss_scale_train_classic_target") or (
        soc.ascend_soc_supports_feature("train_hq_dtype_line") and
        os.environ.get("MS_ASCEND_CHECK_OVERFLOW_MODE") == "SATURATION_MODE"))

_unscale = ops.MultitypeFuncGraph("unscale")


@_unscale.register("Tensor", "Tensor")
def _unscale_one(scale, grad):
    return grad / scale.astype(grad.dtype)


_accumulate = ops.MultitypeFuncGraph("accumulate")
_after = ops.MultitypeFuncGraph("after")
_reset = ops.MultitypeFuncGraph("reset")
_ema_step = ops.MultitypeFuncGraph("ema_step")


@_accumulate.register("Tensor", "Tensor")
def _accumulate_one(accumulated, grad):
    return ops.assign_add(accumulated, grad.astype(accumulated.dtype))


@_after.register("Tensor", "Tensor")
def _after_one(flag, grad):
    return ops.depend(grad, flag)


@_reset.register("Tensor")
def _reset_one(accumulated):
    return ops.assign(accumulated, ops.zeros_like(accumulated))


@_ema_step.register("Number", "Tuple", "Tensor", "Tensor")
def _ema_step_one(decay, after, ema_weight, source):
    source = ops.depend(source, after)  # the weights after the update
    return ops.assign(ema_weight, decay * ema_weight + (1.0 - decay) * source.astype(ema_weight.dtype))
LOSS_SCALE_TYPES = ("fixed", "dynamic", "auto")


class NetWithLoss(nn.Cell):
    """network followed by loss_fn: construct(images, labels) -> scalar loss (float32)."""

    def __init__(self, network: nn.Cell, loss_fn: nn.Cell):
        super().__init__(auto_prefix=False)  # keep the network's parameter names unprefixed
        self.network = network
        self.loss_fn = loss_fn

    def construct(self, images: Tensor, labels: Tensor) -> Tensor:
        return self.loss_fn(self.network(images), labels)


class TrainStep(nn.Cell):
    """construct(images, labels) -> (loss, overflow, loss_scale) for one micro-batch.

    - loss: float32 scalar, the batch loss (unscaled) of this call;
    - overflow: bool scalar, True when this call's loss or any of its gradients is not finite, or the NPU's
      float status reports an fp16 overflow (all ranks agree when distributed);
    - loss_scale: float32 scalar, the scale this call used (dynamic scaling may change it for the next call).

    An update happens on every `gradient_accumulation_steps`-th call, with the mean of the window's gradients.
    It is skipped when any micro-batch of the window overflowed, or the window's summed gradients are not finite,
    and `drop_overflow_update` is True (weights, moments and EMA untouched; `global_step` still advances so the lr
    schedule follows the data); with dynamic scaling, the same decides whether the scale halves. Without
    `drop_overflow_update` the update is applied whatever the gradients are, as MindSpore does; the trainer must
    then stop on overflow=True and not save the weights of that step.

    Args:
        network: the model (already converted for mixed precision, see `create_train_step`).
        loss_fn: loss(logits, labels) -> scalar.
        optimizer: an nn.Optimizer over the parameters to train, with loss_scale 1.0.
        loss_scale_type: "fixed" (the scale never changes) or "dynamic": on an update step with non-finite
            gradients the scale is divided by `loss_scale_factor` (not below 1); after `loss_scale_window`
            calls without overflow it is multiplied by `loss_scale_factor`, up to LOSS_SCALE_CAP (2^24).
            Default "fixed". Overflow is detected as MindSpore's loss-scale cells detect it on each back end
            (see `select_overflow_check`).
        loss_scale: initial scale; the loss is multiplied by it before backward and gradients divided after.
        loss_scale_factor, loss_scale_window: dynamic scaling factor (default 2.0) and growth interval in calls
            (default 2000).
        drop_overflow_update: skip updates with non-finite gradients. Default False.
        clip_grad: clip the (unscaled, averaged) gradients to global norm `clip_value` (default 15.0).
        gradient_accumulation_steps: micro-batches per update. Default 1.
        ema: keep an exponential moving average of the network parameters, updated after every applied
            update as ema = ema_decay * ema + (1 - ema_decay) * param (fixed decay, no warm-up). Default False.
        ema_decay: Default 0.9999.
        distribute: average gradients over the data-parallel group (needs `mindspore.communication.init()`).
    """

    def __init__(self, network: nn.Cell, loss_fn: nn.Cell, optimizer: nn.Optimizer, loss_scale_type: str = "fixed",
                 loss_scale: float = 1.0, loss_scale_factor: float = 2.0, loss_scale_window: int = 2000,
                 drop_overflow_update: bool = False, clip_grad: bool = False, clip_value: float = 15.0,
                 gradient_accumulation_steps: int = 1, ema: bool = False, ema_decay: float = 0.9999,
                 distribute: bool = False):
        super().__init__(auto_prefix=False)
        if loss_scale_type not in ("fixed", "dynamic"):
            raise ValueError(f"loss_scale_type must be 'fixed' or 'dynamic' here, got {loss_scale_type!r}")
        if loss_scale <= 0 or gradient_accumulation_steps < 1:
            raise ValueError("loss_scale must be > 0 and gradient_accumulation_steps >= 1")
        if optimizer.loss_scale != 1.0:
            raise ValueError("the train step unscales gradients itself: build the optimizer with loss_scale=1.0")
        self.network = network
        self.net_with_loss = NetWithLoss(network, loss_fn)
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad_fn = ops.GradOperation(get_by_list=True, sens_param=True)
        self.map = ops.HyperMap()
        overflow_check = select_overflow_check(ms.get_context("device_target"), fast_cpu_ops_enabled(),
                                               all(w.dtype == mstype.float32 for w in self.weights))
        # None: MindSpore's check (also where the kernel could not be built)
        self.all_finite = all_finite_op() if overflow_check == "cpu_kernel" else None
        self.clear_float_status = npu_float_status_in_use()
        if self.clear_float_status:
            from mindspore.ops.operations.math_ops import NPUClearFloatStatusV2  # pylint: disable=import-outside-toplevel
            self.npu_clear_float_status = NPUClearFloatStatusV2()
        self.dynamic_loss_scale = loss_scale_type == "dynamic"
        # a fixed scale of 1 (float32 training) needs no division of every gradient; it is then a constant, so that
        # a loss_scale restored from another run's checkpoint cannot scale the gradients unnoticed
        self.unscale = self.dynamic_loss_scale or float(loss_scale) != 1.0
        self.unit_scale = Tensor(1.0, mstype.float32)
        self.loss_scale_factor = float(loss_scale_factor)
        self.loss_scale_window = int(loss_scale_window)
        self.loss_scale = Parameter(Tensor(loss_scale, mstype.float32), name=LOSS_SCALE, requires_grad=False)
        self.current_iterator_step = Parameter(Tensor(0, mstype.int32), name=ITERATOR_STEP,
                                               requires_grad=False)
        self.last_overflow_iterator_step = Parameter(Tensor(0, mstype.int32), name=LAST_OVERFLOW_STEP,
                                                     requires_grad=False)
        self.drop_overflow_update = drop_overflow_update
        self.clip_grad = clip_grad
        self.clip_value = float(clip_value)
        self.accumulation_steps = int(gradient_accumulation_steps)
        if self.accumulation_steps > 1:
            self.accumulated = self.weights.clone(prefix=ACCUM_PREFIX, init="zeros")
            self.window_overflow = Parameter(Tensor(False, mstype.bool_), name=WINDOW_OVERFLOW, requires_grad=False)
        self.ema = ema
        self.ema_decay = float(ema_decay)
        if ema:
            self.ema_sources = ParameterTuple(network.get_parameters())
            self.ema_weights = self.ema_sources.clone(prefix=EMA_PREFIX, init="same")
        self.distribute = distribute
        if distribute:
            from mindspore.communication import get_group_size
            self.grad_reducer = nn.DistributedGradReducer(self.weights, mean=True, degree=get_group_size())
            self.all_reduce_sum = ops.AllReduce()  # CPU all-reduce takes float32/float16 only

    def construct(self, images: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        scale = self.loss_scale * 1.0 if self.unscale else self.unit_scale  # this call's, before any update
        if self.clear_float_status:  # the status register then holds this step's overflow only
            images = ops.depend(images, self.npu_clear_float_status(ops.depend(Tensor([0] * 8, mstype.int32), scale)))
        loss = self.net_with_loss(images, labels)
        sens = scale.astype(loss.dtype)
        grads = self.grad_fn(self.net_with_loss, self.weights)(images, labels, sens)
        if self.distribute:
            grads = self.grad_reducer(grads)
        if self.unscale:
            grads = self.map(ops.partial(_unscale, scale), grads)
        overflow = self._any_non_finite(loss, grads)

        update_grads = grads
        update_overflow = overflow
        # Without accumulation every call updates: a Python constant keeps the graph free of control flow,
        # which compiles several times faster than a tensor-valued branch around the optimizer.
        is_update_step = True
        if self.accumulation_steps > 1:
            is_update_step = ops.equal((self.current_iterator_step + 1) % self.accumulation_steps, 0)
        if self.accumulation_steps > 1:
            # Where the float status register tells overflow (910A; 910B in saturation mode) fp16 overflow is
            # clamped to +-65504: the sums stay finite, and each read clears the register. So every micro-batch's
            # overflow is carried through the window (and saved with it), and the check of the sums reads the
            # register only after this micro-batch's read (ops.depend, as mindspore.amp.all_finite orders its
            # get and clear).
            window_overflow = ops.logical_or(self.window_overflow, overflow)
            ops.assign(self.window_overflow, ops.logical_and(window_overflow, ops.logical_not(is_update_step)))
            self.map(_accumulate, self.accumulated, self.map(ops.partial(_after, overflow), grads))
            update_grads = self.map(ops.partial(_unscale, Tensor(self.accumulation_steps, mstype.float32)),
                                    self.accumulated)
            update_overflow = ops.logical_or(window_overflow, self._any_non_finite(loss, update_grads))

        apply_update = is_update_step
        if self.drop_overflow_update:
            apply_update = ops.logical_and(ops.logical_not(update_overflow), is_update_step)
        if apply_update:
            if self.clip_grad:
                update_grads = ops.clip_by_global_norm(update_grads, self.clip_value)
            updated = self.optimizer(update_grads)
            if self.ema:
                self._update_ema(updated)
        else:
            # a dropped update still moves the lr schedule on; mid-window calls add 0
            ops.assign_add(self.optimizer.global_step, ops.cast(is_update_step, mstype.int32).reshape((1,)))
        if self.accumulation_steps > 1 or self.dynamic_loss_scale:
            if is_update_step:
                if self.accumulation_steps > 1:
                    self.map(_reset, self.accumulated)
                if self.dynamic_loss_scale:
                    self._update_loss_scale(update_overflow)
        ops.assign_add(self.current_iterator_step, Tensor(1, mstype.int32))
        return loss, overflow, scale

    def _any_non_finite(self, loss: Tensor, grads) -> Tensor:
        non_finite = ops.logical_or(ops.logical_not(ops.isfinite(loss).all()),
                                    ops.logical_not(self._grads_finite(grads)))
        if self.distribute:
            non_finite = self.all_reduce_sum(non_finite.astype(mstype.float32)) > 0
        return non_finite

    def _grads_finite(self, grads) -> Tensor:
        """bool scalar: no overflow in `grads`, or (NPU float status) since the register was last cleared."""
        if self.all_finite is not None:
            return self.all_finite(*grads)[0] > 0.5
        return ms.amp.all_finite(grads)

    def _update_ema(self, after):
        self.map(ops.partial(_ema_step, self.ema_decay, after), self.ema_weights, self.ema_sources)

    def _update_loss_scale(self, overflow: Tensor):
        step = self.current_iterator_step
        scale = self.loss_scale
        calls_since_change = step - self.last_overflow_iterator_step
        grow = ops.logical_and(ops.logical_not(overflow), calls_since_change >= self.loss_scale_window)
        shrunk = ops.maximum(scale / self.loss_scale_factor, 1.0)
        grown = ops.minimum(scale * self.loss_scale_factor, LOSS_SCALE_CAP)
        new_scale = ops.select(overflow, shrunk, ops.select(grow, grown, scale))
        ops.assign(self.loss_scale, new_scale)
        ops.assign(self.last_overflow_iterator_step,
                   ops.select(ops.logical_or(overflow, grow), step, self.last_overflow_iterator_step))

    @contextlib.contextmanager
    def ema_weights_swapped(self):
        """Within the block the network holds the EMA weights (for validation or saving the best
        checkpoint); the training weights come back afterwards. Without ema, the block changes nothing."""
        if not self.ema:
            yield
            return
        saved = [source.data.copy() for source in self.ema_sources]
        for source, ema_weight in zip(self.ema_sources, self.ema_weights):
            source.set_data(ema_weight.data.copy())
        try:
            yield
        finally:
            for source, value in zip(self.ema_sources, saved):
                source.set_data(value)


def apply_amp(network: nn.Cell, amp_level: str = "O0", amp_cast_list: Optional[str] = None) -> nn.Cell:
    """Mixed precision through `mindspore.amp.auto_mixed_precision` with float16:
    O0 float32; O1 fp16 for whitelisted ops (conv, matmul, ...), fp32 for precision-sensitive ones, through
    MindSpore's "auto" level (its "O1" rewrites the network's source and fails on ConvNeXt in MindSpore 2.10);
    O2 fp16 except BatchNorm and LayerNorm cells (kept float32), output cast to float32; O3 everything fp16,
    output cast to float32. All run on CPU. Returns the network to use (O2/O3 wrap it; parameter names and
    float32 parameters are unchanged).

    `amp_cast_list` (MindCV's key, see `amp_cast_classes`) replaces the list of O1 or O2: O1 runs the listed
    cells in float16 and the rest in float32, O2 the listed cells in float32 and the rest in float16; the output
    is float32. O0 and O3 ignore it. The cells take their precision through `Cell.to_float`, not through
    `mindspore.amp.custom_mixed_precision`: its white list rewrites the network's source (which fails on ConvNeXt,
    as above) and its black list wraps the listed cells, which hides their attributes (a ConvNeXt block's MLP
    layer reads its pointwise layers' weights). So a listed cell runs in its precision when it is called as a cell:
    the pointwise layers of a ConvNeXt block run in the precision of its `ConvNeXtMlp`, which may be listed."""
    if amp_level not in AMP_LEVELS:
        raise ValueError(f"amp_level must be one of {AMP_LEVELS}, got {amp_level!r}")
    listed = None if amp_cast_list is None else amp_cast_classes(amp_cast_list)  # a typo fails at every level
    if listed is None or amp_level in ("O0", "O3"):
        return ms.amp.auto_mixed_precision(network, "auto" if amp_level == "O1" else amp_level)
    rest, own = (mstype.float32, mstype.float16) if amp_level == "O1" else (mstype.float16, mstype.float32)
    network.to_float(rest)
    for _, cell in network.cells_and_names():
        if isinstance(cell, listed):
            cell.to_float(own)  # and the cells inside it
    return _Float32Output(network)


class _Float32Output(nn.Cell):
    """The network's output cast to float32, whatever precision its last cell ran in (the loss expects float32)."""

    def __init__(self, network: nn.Cell):
        super().__init__(auto_prefix=False)  # the network's parameter names stay as they are
        self.network = network

    def construct(self, x):
        return self.network(x).astype(mstype.float32)


def _castable_cells() -> Dict[str, Tuple[type, ...]]:
    """Name -> the Cell classes it names in amp_cast_list: "nn.X" mindspore.nn's X; a bare "X" mindspore.nn's X
    and mindcv.models.layers' X, as many as exist (both have a GELU and a LayerNorm)."""
    known = {}
    for module in (nn, layers):
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, nn.Cell) and not name.startswith("_"):
                known[name] = known.get(name, ()) + (value,)
                if module is nn:
                    known[f"nn.{name}"] = (value,)
    return known


def amp_cast_classes(amp_cast_list: str) -> Tuple[type, ...]:
    """The Cell classes that MindCV's `amp_cast_list` names: "[nn.Dense, nn.Conv2d]" (MindCV's Python list,
    parsed here, never evaluated), the same with quoted names (a YAML list, as the config keeps it), or one name;
    "nn." names mindspore.nn's class, a bare name mindspore.nn's and mindcv.models.layers' of that name.
    ConfigError for anything else, suggesting the closest known name."""
    text = amp_cast_list.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    known = _castable_cells()
    names = [item.strip().strip("'\"").strip() for item in text.split(",")] if text.strip() else []
    classes = []
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else (
                " (cell classes of mindspore.nn or mindcv.models.layers, as [nn.Dense, nn.Conv2d])")
            raise ConfigError(f"amp_cast_list: {name!r} is not a cell class{hint}")
        classes += known[name]
    return tuple(dict.fromkeys(classes))


def create_train_step(network: nn.Cell, loss_fn: nn.Cell, optimizer: nn.Optimizer, amp_level: str = "O0",
                      loss_scale_type: str = "fixed", loss_scale: float = 1.0, drop_overflow_update: bool = False,
                      clip_grad: bool = False, clip_value: float = 15.0, gradient_accumulation_steps: int = 1,
                      ema: bool = False, ema_decay: float = 0.9999, distribute: bool = False,
                      loss_scale_factor: float = 2.0, loss_scale_window: int = 2000,
                      amp_cast_list: Optional[str] = None) -> TrainStep:
    """Build a TrainStep (see its docstring), in training mode.

    amp_level, amp_cast_list: see `apply_amp`; the network is converted in place where MindSpore does so
        (O2/O3 cast its cells), so evaluate with the returned cell's `network` or the same model object.
    loss_scale_type: "fixed", "dynamic", or "auto" = dynamic when amp_level is not O0, else fixed.
    Other arguments: see `TrainStep`.
    """
    if loss_scale_type not in LOSS_SCALE_TYPES:
        raise ValueError(f"loss_scale_type must be one of {LOSS_SCALE_TYPES}, got {loss_scale_type!r}")
    if loss_scale_type == "auto":
        loss_scale_type = "dynamic" if amp_level != "O0" else "fixed"
    train_step = TrainStep(apply_amp(network, amp_level, amp_cast_list), loss_fn, optimizer,
                           loss_scale_type=loss_scale_type, loss_scale=loss_scale, loss_scale_factor=loss_scale_factor,
                           loss_scale_window=loss_scale_window, drop_overflow_update=drop_overflow_update,
                           clip_grad=clip_grad, clip_value=clip_value,
                           gradient_accumulation_steps=gradient_accumulation_steps, ema=ema, ema_decay=ema_decay,
                           distribute=distribute)
    return train_step.set_train(True)
