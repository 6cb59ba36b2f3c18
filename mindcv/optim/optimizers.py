"""Optimizers written for graph mode, each with PyTorch's update rule (or, where PyTorch has none, the rule of the
paper as timm writes it): AdamW / Adam, NAdam, RMSprop, Adagrad, SGD with momentum, Lion, Adan and LAMB.

Every optimizer here takes a flat parameter list plus, per parameter, a weight-decay coefficient, a learning-rate
multiplier (layer-wise decay) and the index of its learning rate (0: the optimizer's `lr`; i >= 1: the i-th entry of
`group_lrs`, for parameter groups with their own lr), so decay filters, layer decay and parameter groups need no
group machinery at update time.

State kept as Parameters (one `mindspore.save_checkpoint` of the optimizer, or of a cell holding it, saves it):
- `global_step` (int32 [1]): number of updates taken, dropped ones included; indexes per-step learning-rate lists;
- `learning_rate` (the float lr, or the whole per-step list) and `learning_rate_group_<i>` for each group lr;
- AdamW / Adam: `adam_m.<param>`, `adam_v.<param>` (first and second moments) and `beta1_power`, `beta2_power`
  (beta ** number of updates, for bias correction);
- NAdam: `nadam_m.<param>`, `nadam_v.<param>`, `nadam_step` (updates applied), `nadam_mu_product`;
- RMSprop: `rmsprop_square_avg.<param>`, with momentum `rmsprop_momentum.<param>`, centered
  `rmsprop_grad_avg.<param>`;
- Adagrad: `adagrad_sum.<param>`, `adagrad_step`;
- Lion: `lion_m.<param>`; SGD with momentum: `moments.<param>`;
- Adan: `adan_m.<param>`, `adan_diff.<param>`, `adan_n.<param>`, `adan_prev_grad.<param>`, `adan_step`;
- LAMB: `lamb_m.<param>`, `lamb_v.<param>`, `lamb_step`.
`STATE_PREFIXES` and `STATE_KEYS` list these names.

The per-optimizer step counters (`nadam_step`, ...) count updates applied, as PyTorch's `step` does: an update the
train step drops (overflow) advances `global_step`, so the lr schedule, but not the bias corrections.
"""
from typing import Sequence, Union

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore import dtype as mstype
from mindspore.nn.learning_rate_schedule import LearningRateSchedule

from mindcv.io.names import OPTIMIZER_STATE_KEYS, OPTIMIZER_STATE_PREFIXES

LearningRate = Union[float, Sequence[float], LearningRateSchedule]

# the names of the state above, kept with every other checkpoint entry's name in mindcv.io.names
STATE_PREFIXES, STATE_KEYS = OPTIMIZER_STATE_PREFIXES, OPTIMIZER_STATE_KEYS


def check_learning_rate(lr, what: str = "lr") -> None:
    """ValueError unless `lr` is a non-negative finite float, a non-empty list (or 1-D Tensor / array) of them,
    or a LearningRateSchedule (whose values cannot be checked before it runs)."""
    if isinstance(lr, LearningRateSchedule):
        return
    if isinstance(lr, bool) or isinstance(lr, str):
        raise TypeError(f"{what} must be a float, a per-step list or a LearningRateSchedule, got {lr!r}")
    values = lr.asnumpy() if isinstance(lr, Tensor) else np.asarray(lr, dtype=np.float64)
    if values.ndim > 1 or values.size == 0:
        raise ValueError(f"{what} must be a float or a non-empty 1-D per-step list, got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        bad = values.reshape(-1)[~(np.isfinite(values.reshape(-1)) & (values.reshape(-1) >= 0))][0]
        raise ValueError(f"{what} must be >= 0 and finite, got {float(bad)}")


def check_weight_decay(weight_decay, what: str = "weight_decay") -> float:
    """The decay coefficient as a float; ValueError if negative or not finite (a negative decay would grow the
    weights), TypeError if it is not a number (a weight-decay schedule is not supported)."""
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float, np.floating, np.integer)):
        raise TypeError(f"{what} must be a float, got {weight_decay!r}")
    if not np.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"{what} must be >= 0, got {weight_decay}")
    return float(weight_decay)


def _as_learning_rate(lr: LearningRate, name: str):
    """A float lr as a float; a per-step list (or 1-D Tensor / array) as a StepwiseLR; a schedule as itself."""
    check_learning_rate(lr, name)
    if isinstance(lr, LearningRateSchedule):
        return lr
    values = lr.asnumpy() if isinstance(lr, Tensor) else np.asarray(lr, dtype=np.float64)
    if values.ndim == 0:
        return float(values)
    return StepwiseLR(values, name=name)


class StepwiseLR(LearningRateSchedule):
    """A per-step learning-rate list as a schedule; steps past the end keep the last value.

    Args:
        values: entry i is the learning rate of the i-th update.
        name: name of the Parameter holding the list (checkpoint key). Default "learning_rate".
    """

    def __init__(self, values: Sequence[float], name: str = "learning_rate"):
        super().__init__()
        values = np.asarray(values, np.float32).reshape(-1)
        if values.size == 0:
            raise ValueError("the per-step learning-rate list is empty")
        self.learning_rate = Parameter(Tensor(values), name=name, requires_grad=False)
        self.last_index = values.size - 1

    def construct(self, global_step: Tensor) -> Tensor:
        index = ops.minimum(global_step, self.last_index)
        return ops.gather(self.learning_rate, index, 0)


class _ConstantLR(LearningRateSchedule):
    """A fixed group learning rate, kept as a Parameter named `name`."""

    def __init__(self, value: float, name: str):
        super().__init__()
        self.learning_rate = Parameter(Tensor(value, mstype.float32), name=name, requires_grad=False)

    def construct(self, global_step: Tensor) -> Tensor:
        return self.learning_rate


# The per-parameter updates are mapped over the parameter list with HyperMap, not unrolled in a Python loop:
# parameters of one shape then share one compiled subgraph, which compiles several times faster.
# Every update takes, after its constant arguments: lr, weight_decay, lr_scale, param, its state, grad.
_pick = ops.MultitypeFuncGraph("pick")
_adamw_update = ops.MultitypeFuncGraph("adamw_update")
_adamw_fused_update = ops.MultitypeFuncGraph("adamw_fused_update")
_fused_step_lr = ops.MultitypeFuncGraph("fused_step_lr")
_nadam_update = ops.MultitypeFuncGraph("nadam_update")
_rmsprop_update = ops.MultitypeFuncGraph("rmsprop_update")
_adagrad_lr = ops.MultitypeFuncGraph("adagrad_lr")
_adagrad_update = ops.MultitypeFuncGraph("adagrad_update")
_lion_update = ops.MultitypeFuncGraph("lion_update")
_sgd_update = ops.MultitypeFuncGraph("sgd_update")
_adan_update = ops.MultitypeFuncGraph("adan_update")
_square_sum = ops.MultitypeFuncGraph("square_sum")
_lamb_update = ops.MultitypeFuncGraph("lamb_update")
_centralize = ops.MultitypeFuncGraph("centralize")


@_centralize.register("Bool", "Tensor", "Tensor", "Tensor")
def _centralize_one(centralize, folded_decay, param, grad):
    if not centralize:
        return grad
    grad = grad + folded_decay * param.astype(grad.dtype)
    axes = tuple(range(1, len(grad.shape)))
    return grad - grad.mean(axis=axes, keep_dims=True)


@_pick.register("Tuple", "Number")
def _pick_one(values, index):
    return values[index]


@_adamw_update.register("Bool", "Number", "Number", "Number", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                        "Tensor", "Tensor", "Tensor", "Tensor")
def _adamw_one(decoupled, beta1, beta2, eps, bias_correction1, bias_correction2_sqrt, lr, weight_decay, lr_scale,
               param, m, v, grad):
    param_lr = lr * lr_scale
    value = param.astype(mstype.float32)
    grad = grad.astype(mstype.float32)
    if decoupled:
        value = value * (1.0 - param_lr * weight_decay)
    else:
        grad = grad + weight_decay * value
    new_m = beta1 * m.astype(mstype.float32) + (1.0 - beta1) * grad
    new_v = beta2 * v.astype(mstype.float32) + (1.0 - beta2) * grad * grad
    denom = ops.sqrt(new_v) / bias_correction2_sqrt + eps
    value = value - (param_lr / bias_correction1) * new_m / denom
    ops.assign(m, new_m.astype(m.dtype))
    ops.assign(v, new_v.astype(v.dtype))
    ops.assign(param, value.astype(param.dtype))
    return True


# MindSpore's AdamWeightDecay primitive updates param, m and v in place in one kernel, but has no bias correction:
# p -= L * (m / (sqrt(v) + eps') + d * p). PyTorch's AdamW, p -= lr * wd * p + lr / bc1 * m / (sqrt(v) / sqrt(bc2)
# + eps), is that with L = lr * sqrt(bc2) / bc1, eps' = eps * sqrt(bc2) and d = wd * bc1 / sqrt(bc2).
@_fused_step_lr.register("Tensor", "Tensor", "Tensor")
def _fused_step_lr_one(bias_correction1, bias_correction2_sqrt, lr):
    return lr * bias_correction2_sqrt / bias_correction1


@_adamw_fused_update.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                              "Tensor", "Tensor", "Tensor", "Tensor")
def _adamw_fused_one(fused_op, beta1, beta2, step_eps, decay_factor, step_lr, weight_decay, lr_scale, param, m, v,
                     grad):
    fused_op(param, m, v, step_lr * lr_scale, beta1, beta2, step_eps, weight_decay * decay_factor,
             grad.astype(param.dtype))
    return True


@_nadam_update.register("Number", "Number", "Number", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                        "Tensor", "Tensor", "Tensor", "Tensor")
def _nadam_one(beta1, beta2, eps, grad_coef, m_coef, bias_correction2, lr, weight_decay, lr_scale, param, m, v,
               grad):
    param_lr = lr * lr_scale
    value = param.astype(mstype.float32)
    grad = grad.astype(mstype.float32) + weight_decay * value
    new_m = beta1 * m.astype(mstype.float32) + (1.0 - beta1) * grad
    new_v = beta2 * v.astype(mstype.float32) + (1.0 - beta2) * grad * grad
    denom = ops.sqrt(new_v / bias_correction2) + eps
    value = value - param_lr * grad_coef * grad / denom - param_lr * m_coef * new_m / denom
    ops.assign(m, new_m.astype(m.dtype))
    ops.assign(v, new_v.astype(v.dtype))
    ops.assign(param, value.astype(param.dtype))
    return True


@_rmsprop_update.register("Number", "Number", "Number", "Bool", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                          "Tensor", "Tensor", "Tensor")
def _rmsprop_one(alpha, eps, momentum, centered, lr, weight_decay, lr_scale, param, square_avg, grad_avg, buf, grad):
    value = param.astype(mstype.float32)
    grad = grad.astype(mstype.float32) + weight_decay * value
    new_square_avg = alpha * square_avg.astype(mstype.float32) + (1.0 - alpha) * grad * grad
    ops.assign(square_avg, new_square_avg.astype(square_avg.dtype))
    if centered:
        new_grad_avg = alpha * grad_avg.astype(mstype.float32) + (1.0 - alpha) * grad
        ops.assign(grad_avg, new_grad_avg.astype(grad_avg.dtype))
        avg = ops.sqrt(new_square_avg - new_grad_avg * new_grad_avg) + eps
    else:
        avg = ops.sqrt(new_square_avg) + eps
    step = grad / avg
    if momentum > 0.0:
        step = momentum * buf.astype(mstype.float32) + step
        ops.assign(buf, step.astype(buf.dtype))
    ops.assign(param, (value - lr * lr_scale * step).astype(param.dtype))
    return True


@_adagrad_lr.register("Tensor", "Tensor")
def _adagrad_lr_one(decay, lr):
    return lr / decay


@_adagrad_update.register("Number", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _adagrad_one(eps, lr, weight_decay, lr_scale, param, state_sum, grad):
    value = param.astype(mstype.float32)
    grad = grad.astype(mstype.float32) + weight_decay * value
    new_sum = state_sum.astype(mstype.float32) + grad * grad
    ops.assign(state_sum, new_sum.astype(state_sum.dtype))
    ops.assign(param, (value - lr * lr_scale * grad / (ops.sqrt(new_sum) + eps)).astype(param.dtype))
    return True


@_lion_update.register("Number", "Number", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _lion_one(beta1, beta2, lr, weight_decay, lr_scale, param, m, grad):
    param_lr = lr * lr_scale
    value = param.astype(mstype.float32)
    grad = grad.astype(mstype.float32)
    value = value * (1.0 - param_lr * weight_decay)
    m_value = m.astype(mstype.float32)
    value = value - param_lr * ops.sign(beta1 * m_value + (1.0 - beta1) * grad)
    ops.assign(m, (beta2 * m_value + (1.0 - beta2) * grad).astype(m.dtype))
    ops.assign(param, value.astype(param.dtype))
    return True


@_sgd_update.register("Number", "Bool", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _sgd_one(momentum, nesterov, lr, weight_decay, lr_scale, param, buf, grad):
    value = param.astype(mstype.float32)
    grad = grad.astype(mstype.float32) + weight_decay * value
    if momentum > 0.0:
        new_buf = momentum * buf.astype(mstype.float32) + grad
        ops.assign(buf, new_buf.astype(buf.dtype))
        grad = grad + momentum * new_buf if nesterov else new_buf
    ops.assign(param, (value - lr * lr_scale * grad).astype(param.dtype))
    return True


@_adan_update.register("Number", "Number", "Number", "Number", "Bool", "Tensor", "Tensor", "Tensor", "Tensor",
                       "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _adan_one(beta1, beta2, beta3, eps, no_prox, bias_correction1, bias_correction2, bias_correction3_sqrt, has_prev,
              lr, weight_decay, lr_scale, param, m, diff_avg, n, prev_grad, grad):
    param_lr = lr * lr_scale
    value = param.astype(mstype.float32)
    grad = grad.astype(mstype.float32)
    diff = (grad - prev_grad.astype(mstype.float32)) * has_prev  # 0 on the first update, as in timm
    new_m = beta1 * m.astype(mstype.float32) + (1.0 - beta1) * grad
    new_diff_avg = beta2 * diff_avg.astype(mstype.float32) + (1.0 - beta2) * diff
    nesterov_grad = grad + beta2 * diff
    new_n = beta3 * n.astype(mstype.float32) + (1.0 - beta3) * nesterov_grad * nesterov_grad
    denom = ops.sqrt(new_n) / bias_correction3_sqrt + eps
    step = (param_lr / bias_correction1) * new_m / denom + (param_lr * beta2 / bias_correction2) * new_diff_avg / denom
    if no_prox:
        value = value * (1.0 - param_lr * weight_decay) - step
    else:
        value = (value - step) / (1.0 + param_lr * weight_decay)
    ops.assign(m, new_m.astype(m.dtype))
    ops.assign(diff_avg, new_diff_avg.astype(diff_avg.dtype))
    ops.assign(n, new_n.astype(n.dtype))
    ops.assign(prev_grad, grad.astype(prev_grad.dtype))
    ops.assign(param, value.astype(param.dtype))
    return True


@_square_sum.register("Tensor")
def _square_sum_one(grad):
    grad = grad.astype(mstype.float32)
    return ops.reduce_sum(grad * grad)


@_lamb_update.register("Number", "Number", "Number", "Bool", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                       "Tensor", "Bool", "Tensor", "Tensor", "Tensor", "Tensor")
def _lamb_one(beta1, beta2, eps, trust_clip, bias_correction1, bias_correction2_sqrt, clip_divisor, lr, weight_decay,
              lr_scale, adapt, param, m, v, grad):
    value = param.astype(mstype.float32)
    grad = grad.astype(mstype.float32) / clip_divisor
    new_m = beta1 * m.astype(mstype.float32) + (1.0 - beta1) * grad
    new_v = beta2 * v.astype(mstype.float32) + (1.0 - beta2) * grad * grad
    update = (new_m / bias_correction1) / (ops.sqrt(new_v) / bias_correction2_sqrt + eps)
    update = update + weight_decay * value
    if adapt:
        w_norm = ops.sqrt(ops.reduce_sum(value * value))
        u_norm = ops.sqrt(ops.reduce_sum(update * update))
        one = ops.ones_like(w_norm)
        ratio = ops.select(w_norm > 0, ops.select(u_norm > 0, w_norm / u_norm, one), one)
        if trust_clip:
            ratio = ops.minimum(ratio, one)
        update = update * ratio
    ops.assign(m, new_m.astype(m.dtype))
    ops.assign(v, new_v.astype(v.dtype))
    ops.assign(param, (value - lr * lr_scale * update).astype(param.dtype))
    return True


def _check_betas(betas, count: int, what: str):
    if len(betas) != count:
        raise ValueError(f"{what} takes {count} betas, got {tuple(betas)}")
    for beta in betas:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"betas must lie in [0, 1), got {tuple(betas)}")
    return tuple(float(b) for b in betas)


def _check_eps(eps):
    if not eps >= 0.0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    return float(eps)


class _PerParameterOptimizer(nn.Optimizer):
    """Common part: per-parameter weight decay, lr multipliers and lr choice, lr lookup, step counting.

    Args:
        params: parameters to update.
        lr: float, per-step list (indexed by `global_step`, last value held) or LearningRateSchedule.
        weight_decays: decay coefficient of each parameter (0.0 = none), same order as `params`.
        lr_scales: learning-rate multiplier of each parameter (layer decay), same order as `params`.
        loss_scale: gradients are divided by this before use (for a loss scale handled by the optimizer;
            leave 1.0 when the train step unscales). Default 1.0.
        group_lrs: further learning rates (float, per-step list or schedule), for parameter groups with their own:
            the i-th is kept as `learning_rate_group_<i + 1>`. Default none.
        lr_groups: which learning rate each parameter takes: 0 = `lr`, i >= 1 = group_lrs[i - 1]. Default all 0.
    """

    def __init__(self, params, lr: LearningRate, weight_decays: Sequence[float], lr_scales: Sequence[float],
                 loss_scale: float = 1.0, group_lrs: Sequence[LearningRate] = (), lr_groups: Sequence[int] = None):
        super().__init__(_as_learning_rate(lr, "learning_rate"), list(params), 0.0, loss_scale)
        count = len(self.parameters)
        lr_groups = [0] * count if lr_groups is None else [int(i) for i in lr_groups]
        if not len(weight_decays) == len(lr_scales) == len(lr_groups) == count:
            raise ValueError("weight_decays, lr_scales and lr_groups need one value per parameter")
        if any(not 0 <= i <= len(group_lrs) for i in lr_groups):
            raise ValueError(f"lr_groups must index lr (0) or one of the {len(group_lrs)} group_lrs")
        self.weight_decays = tuple(check_weight_decay(w) for w in weight_decays)
        if any(not s >= 0.0 for s in lr_scales):
            raise ValueError(f"lr_scales must be >= 0, got {min(lr_scales)}")
        self.lr_scales = tuple(float(s) for s in lr_scales)
        self.lr_groups = tuple(lr_groups)
        group_cells = []
        for i, group_lr in enumerate(group_lrs, start=1):
            name = f"learning_rate_group_{i}"
            group_lr = _as_learning_rate(group_lr, name)
            group_cells.append(group_lr if isinstance(group_lr, LearningRateSchedule) else _ConstantLR(group_lr, name))
        self.group_lr_cells = nn.CellList(group_cells, auto_prefix=False)
        # a decay of 0 multiplies by exactly 1.0: the same result as skipping it
        self.weight_decay_tensors = tuple(Tensor(w, mstype.float32) for w in self.weight_decays)
        self.lr_scale_tensors = tuple(Tensor(s, mstype.float32) for s in self.lr_scales)
        self.map = ops.HyperMap()
        self.centralized = False
        self.centralize_flags = tuple(False for _ in self.parameters)
        self.folded_decay_tensors = tuple(Tensor(0.0, mstype.float32) for _ in self.parameters)

    # optimizers whose decay adds wd * p to the gradient (PyTorch's L2 decay); see `centralize_gradients`
    adds_decay_to_gradient = True

    def centralize_gradients(self, flags: Sequence[bool]) -> int:
        """Gradient centralization (Yong et al. 2020), as MindSpore's optimizers apply it to the parameter groups
        with "grad_centralization": True (mindspore/nn/optim/optimizer.py, `_tensor_apply_grad_centralization`):
        the gradient of a parameter whose flag is set, of two or more dimensions and with a second dimension that
        is a multiple of 16 (convolution and dense weights; MindSpore leaves the others as they are), loses its
        mean over every axis but the first before the update. Where the decay is L2 (added to the gradient:
        adam, nadam, rmsprop, adagrad, sgd), the decayed gradient g + wd * p is centralized, as in MindSpore
        (decay before centralization) and the paper's code. Returns the number of parameters centralized.

        Args:
            flags: one bool per parameter, in the optimizer's order.
        """
        if len(flags) != len(self.parameters):
            raise ValueError("centralize_gradients needs one flag per parameter")
        applied = tuple(bool(flag) and len(p.shape) > 1 and p.shape[1] % 16 == 0
                        for flag, p in zip(flags, self.parameters))
        self.centralize_flags = applied
        self.centralized = any(applied)
        if self.adds_decay_to_gradient:  # the decay moves before the centralization; the update then adds none
            self.folded_decay_tensors = tuple(Tensor(w if a else 0.0, mstype.float32)
                                              for a, w in zip(applied, self.weight_decays))
            self.weight_decay_tensors = tuple(Tensor(0.0 if a else w, mstype.float32)
                                              for a, w in zip(applied, self.weight_decays))
        return sum(applied)

    def prepare_gradients(self, gradients):
        """The gradients the update uses: divided by the loss scale, centralized where `centralize_gradients`
        says."""
        gradients = self.scale_grad(gradients)
        if self.centralized:
            gradients = self.map(_centralize, self.centralize_flags, self.folded_decay_tensors, self.parameters,
                                 gradients)
        return gradients

    def _next_lrs(self):
        """The learning rates of this update, one per lr group (`lr` first); advances `global_step`."""
        lrs = (self.get_lr(),)
        for cell in self.group_lr_cells:
            lrs = lrs + (cell(self.global_step),)
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        return lrs

    def _per_parameter(self, lrs):
        """One learning rate per parameter, from the per-group ones."""
        return self.map(ops.partial(_pick, lrs), self.lr_groups)

    def _count_update(self, counter: Parameter) -> Tensor:
        """Advance an update counter; its new value (the PyTorch `step` of this update) as float32 [1]."""
        step = counter + 1
        ops.assign(counter, step)
        return step.astype(mstype.float32)


def _counter(name: str) -> Parameter:
    return Parameter(Tensor([0], mstype.int32), name=name, requires_grad=False)


class AdamW(_PerParameterOptimizer):
    """Adam with bias-corrected moments, as PyTorch's `torch.optim.AdamW` (decoupled=True:
    p <- p * (1 - lr * wd), then p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps))
    or `torch.optim.Adam` (decoupled=False: wd * p is added to the gradient).

    Args: see `_PerParameterOptimizer`; betas (b1, b2) default (0.9, 0.999); eps added to the
        bias-corrected sqrt(v), default 1e-8.
    """

    def __init__(self, params, lr: LearningRate, weight_decays, lr_scales, betas=(0.9, 0.999), eps: float = 1e-8,
                 decoupled: bool = True, loss_scale: float = 1.0, group_lrs=(), lr_groups=None):
        super().__init__(params, lr, weight_decays, lr_scales, loss_scale, group_lrs, lr_groups)
        self.beta1, self.beta2 = _check_betas(betas, 2, "AdamW")
        self.eps = _check_eps(eps)
        self.decoupled = decoupled
        self.adds_decay_to_gradient = not decoupled
        self.moments1 = self.parameters.clone(prefix="adam_m", init="zeros")
        self.moments2 = self.parameters.clone(prefix="adam_v", init="zeros")
        self.beta1_power = Parameter(Tensor(1.0, mstype.float32), name="beta1_power", requires_grad=False)
        self.beta2_power = Parameter(Tensor(1.0, mstype.float32), name="beta2_power", requires_grad=False)
        # With float32 parameters AdamW runs as MindSpore's fused AdamWeightDecay primitive (the one its own
        # nn.AdamWeightDecay uses on Ascend, GPU and CPU): one in-place kernel per parameter instead of ~15 small
        # ones (about 0.4 s of a convnext_tiny step at batch 16 on the CPU)
        self.fused_op = None
        if decoupled and all(p.dtype == mstype.float32 for p in self.parameters):
            self.fused_op = ops.AdamWeightDecay()
            self.beta1_tensor = Tensor([self.beta1], mstype.float32)
            self.beta2_tensor = Tensor([self.beta2], mstype.float32)

    def construct(self, gradients):
        gradients = self.prepare_gradients(gradients)
        lrs = self._next_lrs()
        beta1_power = self.beta1_power * self.beta1
        beta2_power = self.beta2_power * self.beta2
        ops.assign(self.beta1_power, beta1_power)
        ops.assign(self.beta2_power, beta2_power)
        bias_correction1, bias_correction2_sqrt = 1.0 - beta1_power, ops.sqrt(1.0 - beta2_power)
        if self.fused_op is not None:
            step_lrs = self.map(ops.partial(_fused_step_lr, bias_correction1, bias_correction2_sqrt), lrs)
            update = ops.partial(_adamw_fused_update, self.fused_op, self.beta1_tensor, self.beta2_tensor,
                                 self.eps * bias_correction2_sqrt, bias_correction1 / bias_correction2_sqrt)
            return self.map(update, self._per_parameter(step_lrs), self.weight_decay_tensors,
                            self.lr_scale_tensors, self.parameters, self.moments1, self.moments2, gradients)
        update = ops.partial(_adamw_update, self.decoupled, self.beta1, self.beta2, self.eps, bias_correction1,
                             bias_correction2_sqrt)
        return self.map(update, self._per_parameter(lrs), self.weight_decay_tensors, self.lr_scale_tensors,
                        self.parameters, self.moments1, self.moments2, gradients)


class NAdam(_PerParameterOptimizer):
    """NAdam as PyTorch's `torch.optim.NAdam` (L2 decay added to the gradient): with
    mu_t = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay)) and P_t = mu_1 * ... * mu_t,
    p <- p - lr * (1 - mu_t) / (1 - P_t) * g / d - lr * mu_{t+1} / (1 - P_t * mu_{t+1}) * m / d,
    d = sqrt(v / (1 - b2^t)) + eps.

    Args: see `_PerParameterOptimizer`; betas default (0.9, 0.999); eps default 1e-8; momentum_decay (MindCV's
        `schedule_decay`) default 4e-3.
    """

    def __init__(self, params, lr: LearningRate, weight_decays, lr_scales, betas=(0.9, 0.999), eps: float = 1e-8,
                 momentum_decay: float = 4e-3, loss_scale: float = 1.0, group_lrs=(), lr_groups=None):
        super().__init__(params, lr, weight_decays, lr_scales, loss_scale, group_lrs, lr_groups)
        self.beta1, self.beta2 = _check_betas(betas, 2, "NAdam")
        self.eps = _check_eps(eps)
        if not momentum_decay >= 0.0:
            raise ValueError(f"momentum_decay (schedule_decay) must be >= 0, got {momentum_decay}")
        self.momentum_decay = float(momentum_decay)
        self.moments1 = self.parameters.clone(prefix="nadam_m", init="zeros")
        self.moments2 = self.parameters.clone(prefix="nadam_v", init="zeros")
        self.step_count = _counter("nadam_step")
        self.mu_product = Parameter(Tensor([1.0], mstype.float32), name="nadam_mu_product", requires_grad=False)
        self.base_096 = Tensor(0.96, mstype.float32)
        self.beta2_tensor = Tensor(self.beta2, mstype.float32)

    def construct(self, gradients):
        gradients = self.prepare_gradients(gradients)
        lrs = self._next_lrs()
        t = self._count_update(self.step_count)
        mu = self.beta1 * (1.0 - 0.5 * ops.pow(self.base_096, t * self.momentum_decay))
        mu_next = self.beta1 * (1.0 - 0.5 * ops.pow(self.base_096, (t + 1.0) * self.momentum_decay))
        mu_product = self.mu_product * mu
        ops.assign(self.mu_product, mu_product)
        update = ops.partial(_nadam_update, self.beta1, self.beta2, self.eps, (1.0 - mu) / (1.0 - mu_product),
                             mu_next / (1.0 - mu_product * mu_next), 1.0 - ops.pow(self.beta2_tensor, t))
        return self.map(update, self._per_parameter(lrs), self.weight_decay_tensors, self.lr_scale_tensors,
                        self.parameters, self.moments1, self.moments2, gradients)


class RMSprop(_PerParameterOptimizer):
    """RMSprop as PyTorch's `torch.optim.RMSprop`: g <- g + wd * p; s <- alpha * s + (1 - alpha) * g^2;
    d = sqrt(s) + eps (centered: sqrt(s - a^2) + eps with a <- alpha * a + (1 - alpha) * g);
    with momentum: buf <- momentum * buf + g / d, p <- p - lr * buf; without: p <- p - lr * g / d.
    eps is added outside the square root and lr multiplies the momentum buffer's output (MindSpore's RMSProp
    puts eps inside the root and lr inside the buffer, and starts s at 1 instead of 0).

    Args: see `_PerParameterOptimizer`; alpha default 0.99 (PyTorch's; the factory passes 0.9); eps default 1e-8;
        momentum default 0.0; centered default False.
    """

    def __init__(self, params, lr: LearningRate, weight_decays, lr_scales, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, centered: bool = False, loss_scale: float = 1.0, group_lrs=(),
                 lr_groups=None):
        super().__init__(params, lr, weight_decays, lr_scales, loss_scale, group_lrs, lr_groups)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        if not momentum >= 0.0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        self.alpha, self.eps, self.momentum, self.centered = float(alpha), _check_eps(eps), float(momentum), centered
        self.square_avg = self.parameters.clone(prefix="rmsprop_square_avg", init="zeros")
        self.grad_avg = self.parameters.clone(prefix="rmsprop_grad_avg", init="zeros") if centered else None
        self.momentum_buf = self.parameters.clone(prefix="rmsprop_momentum", init="zeros") if momentum > 0 else None

    def construct(self, gradients):
        gradients = self.prepare_gradients(gradients)
        grad_avg = self.grad_avg if self.centered else gradients  # placeholder map partners when unused
        momentum_buf = self.momentum_buf if self.momentum > 0.0 else gradients
        update = ops.partial(_rmsprop_update, self.alpha, self.eps, self.momentum, self.centered)
        return self.map(update, self._per_parameter(self._next_lrs()), self.weight_decay_tensors,
                        self.lr_scale_tensors, self.parameters, self.square_avg, grad_avg, momentum_buf, gradients)


class Adagrad(_PerParameterOptimizer):
    """Adagrad as PyTorch's `torch.optim.Adagrad`: g <- g + wd * p; s <- s + g^2;
    p <- p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps).

    Args: see `_PerParameterOptimizer`; eps default 1e-10; lr_decay default 0; initial_accumulator_value (s at
        the start) default 0.
    """

    def __init__(self, params, lr: LearningRate, weight_decays, lr_scales, eps: float = 1e-10, lr_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, loss_scale: float = 1.0, group_lrs=(), lr_groups=None):
        super().__init__(params, lr, weight_decays, lr_scales, loss_scale, group_lrs, lr_groups)
        if not lr_decay >= 0.0 or not initial_accumulator_value >= 0.0:
            raise ValueError(f"lr_decay and initial_accumulator_value must be >= 0, got {lr_decay}, "
                             f"{initial_accumulator_value}")
        self.eps, self.lr_decay = _check_eps(eps), float(lr_decay)
        self.state_sum = self.parameters.clone(prefix="adagrad_sum", init="zeros")
        if initial_accumulator_value:
            for state in self.state_sum:
                state.set_data(Tensor(np.full(state.shape, initial_accumulator_value, np.float32), state.dtype))
        self.step_count = _counter("adagrad_step")

    def construct(self, gradients):
        gradients = self.prepare_gradients(gradients)
        lrs = self._next_lrs()
        t = self._count_update(self.step_count)
        lrs = self.map(ops.partial(_adagrad_lr, 1.0 + (t - 1.0) * self.lr_decay), lrs)
        return self.map(ops.partial(_adagrad_update, self.eps), self._per_parameter(lrs), self.weight_decay_tensors,
                        self.lr_scale_tensors, self.parameters, self.state_sum, gradients)


class Lion(_PerParameterOptimizer):
    """Lion (Chen et al., 2023): p <- p * (1 - lr * wd) - lr * sign(b1 * m + (1 - b1) * g);
    m <- b2 * m + (1 - b2) * g. Default betas (0.9, 0.99). Use a 3-10x smaller lr than AdamW."""

    adds_decay_to_gradient = False

    def __init__(self, params, lr: LearningRate, weight_decays, lr_scales, betas=(0.9, 0.99), loss_scale: float = 1.0,
                 group_lrs=(), lr_groups=None):
        super().__init__(params, lr, weight_decays, lr_scales, loss_scale, group_lrs, lr_groups)
        self.beta1, self.beta2 = _check_betas(betas, 2, "Lion")
        self.moments = self.parameters.clone(prefix="lion_m", init="zeros")

    def construct(self, gradients):
        gradients = self.prepare_gradients(gradients)
        update = ops.partial(_lion_update, self.beta1, self.beta2)
        return self.map(update, self._per_parameter(self._next_lrs()), self.weight_decay_tensors,
                        self.lr_scale_tensors, self.parameters, self.moments, gradients)


class SGD(_PerParameterOptimizer):
    """SGD as PyTorch's `torch.optim.SGD` without dampening: g <- g + wd * p; buf <- momentum * buf + g;
    p <- p - lr * (g + momentum * buf if nesterov else buf). momentum 0 is plain SGD (no buffers)."""

    def __init__(self, params, lr: LearningRate, weight_decays, lr_scales, momentum: float = 0.9,
                 nesterov: bool = False, loss_scale: float = 1.0, group_lrs=(), lr_groups=None):
        super().__init__(params, lr, weight_decays, lr_scales, loss_scale, group_lrs, lr_groups)
        if not momentum >= 0.0 or (nesterov and momentum == 0.0):
            raise ValueError(f"momentum must be >= 0 (> 0 with nesterov), got {momentum}")
        self.momentum = float(momentum)
        self.nesterov = nesterov
        self.moments = self.parameters.clone(prefix="moments", init="zeros") if momentum > 0.0 else None

    def construct(self, gradients):
        gradients = self.prepare_gradients(gradients)
        moments = self.moments if self.momentum > 0.0 else gradients  # placeholder map partner without momentum
        update = ops.partial(_sgd_update, self.momentum, self.nesterov)
        return self.map(update, self._per_parameter(self._next_lrs()), self.weight_decay_tensors,
                        self.lr_scale_tensors, self.parameters, moments, gradients)


class Adan(_PerParameterOptimizer):
    """Adan (Xie et al., 2022) as timm's `Adan`: with diff = g_t - g_{t-1} (0 at the first update),
    m <- b1 * m + (1 - b1) * g; d <- b2 * d + (1 - b2) * diff; n <- b3 * n + (1 - b3) * (g + b2 * diff)^2;
    step = lr / (1 - b1^t) * m / D + lr * b2 / (1 - b2^t) * d / D, D = sqrt(n) / sqrt(1 - b3^t) + eps;
    p <- (p - step) / (1 + lr * wd) (no_prox: p <- p * (1 - lr * wd) - step).

    Args: see `_PerParameterOptimizer`; betas (b1, b2, b3) default (0.98, 0.92, 0.99) (decay rates, timm's
        convention: the paper's beta_i is 1 - b_i); eps default 1e-8; no_prox default False.
    """

    adds_decay_to_gradient = False

    def __init__(self, params, lr: LearningRate, weight_decays, lr_scales, betas=(0.98, 0.92, 0.99),
                 eps: float = 1e-8, no_prox: bool = False, loss_scale: float = 1.0, group_lrs=(), lr_groups=None):
        super().__init__(params, lr, weight_decays, lr_scales, loss_scale, group_lrs, lr_groups)
        self.beta1, self.beta2, self.beta3 = _check_betas(betas, 3, "Adan")
        self.eps, self.no_prox = _check_eps(eps), bool(no_prox)
        self.moments1 = self.parameters.clone(prefix="adan_m", init="zeros")
        self.diff_avg = self.parameters.clone(prefix="adan_diff", init="zeros")
        self.moments2 = self.parameters.clone(prefix="adan_n", init="zeros")
        self.prev_grads = self.parameters.clone(prefix="adan_prev_grad", init="zeros")
        self.step_count = _counter("adan_step")
        self.betas_tensor = Tensor([self.beta1, self.beta2, self.beta3], mstype.float32)

    def construct(self, gradients):
        gradients = self.prepare_gradients(gradients)
        lrs = self._next_lrs()
        t = self._count_update(self.step_count)
        corrections = 1.0 - ops.pow(self.betas_tensor, t)
        has_prev = (t > 1.0).astype(mstype.float32)
        update = ops.partial(_adan_update, self.beta1, self.beta2, self.beta3, self.eps, self.no_prox,
                             corrections[0], corrections[1], ops.sqrt(corrections[2]), has_prev)
        return self.map(update, self._per_parameter(lrs), self.weight_decay_tensors, self.lr_scale_tensors,
                        self.parameters, self.moments1, self.diff_avg, self.moments2, self.prev_grads, gradients)


class Lamb(_PerParameterOptimizer):
    """LAMB (You et al., 2019) as timm's `Lamb`: the gradients are first divided by
    max(global grad norm / max_grad_norm, 1); then per parameter u = m_hat / (sqrt(v_hat) + eps) + wd * p with
    Adam's bias-corrected moments, u <- u * ||p|| / ||u|| (1 when either norm is 0; capped at 1 with trust_clip)
    for parameters with weight decay (every parameter with always_adapt), p <- p - lr * u.

    Args: see `_PerParameterOptimizer`; betas default (0.9, 0.999); eps default 1e-6; max_grad_norm default 1.0
        (None: no clipping); trust_clip, always_adapt default False.
    """

    adds_decay_to_gradient = False

    def __init__(self, params, lr: LearningRate, weight_decays, lr_scales, betas=(0.9, 0.999), eps: float = 1e-6,
                 max_grad_norm=1.0, trust_clip: bool = False, always_adapt: bool = False, loss_scale: float = 1.0,
                 group_lrs=(), lr_groups=None):
        super().__init__(params, lr, weight_decays, lr_scales, loss_scale, group_lrs, lr_groups)
        self.beta1, self.beta2 = _check_betas(betas, 2, "Lamb")
        self.eps = _check_eps(eps)
        if max_grad_norm is not None and not max_grad_norm > 0.0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.trust_clip = bool(trust_clip)
        self.adapt = tuple(bool(always_adapt or w != 0.0) for w in self.weight_decays)
        self.moments1 = self.parameters.clone(prefix="lamb_m", init="zeros")
        self.moments2 = self.parameters.clone(prefix="lamb_v", init="zeros")
        self.step_count = _counter("lamb_step")
        self.betas_tensor = Tensor([self.beta1, self.beta2], mstype.float32)
        self.one = Tensor(1.0, mstype.float32)

    def construct(self, gradients):
        gradients = self.prepare_gradients(gradients)
        lrs = self._next_lrs()
        t = self._count_update(self.step_count)
        corrections = 1.0 - ops.pow(self.betas_tensor, t)
        clip_divisor = self.one
        if self.max_grad_norm is not None:
            global_norm = ops.sqrt(ops.addn(self.map(_square_sum, gradients)))
            clip_divisor = ops.maximum(global_norm / self.max_grad_norm, self.one)
        update = ops.partial(_lamb_update, self.beta1, self.beta2, self.eps, self.trust_clip, corrections[0],
                             ops.sqrt(corrections[1]), clip_divisor)
        return self.map(update, self._per_parameter(lrs), self.weight_decay_tensors, self.lr_scale_tensors,
                        self.adapt, self.parameters, self.moments1, self.moments2, gradients)
