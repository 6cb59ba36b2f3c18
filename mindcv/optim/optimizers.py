"""AdamW / Adam, Lion and SGD with momentum, written for graph mode, with PyTorch's update rules.

Every optimizer here takes a flat parameter list plus, per parameter, a weight-decay coefficient and a
learning-rate multiplier (layer-wise decay), so decay filters and layer decay need no parameter groups.

State kept as Parameters (one `mindspore.save_checkpoint` of the optimizer, or of a cell holding it, saves it):
- `global_step` (int32 [1]): number of updates taken; indexes a per-step learning-rate list;
- `learning_rate`: the float lr, or the whole per-step list;
- AdamW / Adam: `adam_m.<param>`, `adam_v.<param>` (first and second moments) and `beta1_power`, `beta2_power`
  (beta ** number of updates, for bias correction);
- Lion: `lion_m.<param>`; SGD with momentum: `moments.<param>`.
"""
from typing import Sequence, Union

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore import dtype as mstype
from mindspore.nn.learning_rate_schedule import LearningRateSchedule


LearningRate = Union[float, Sequence[float], LearningRateSchedule]


class StepwiseLR(LearningRateSchedule):
    """A per-step learning-rate list as a schedule; steps past the end keep the last value."""

    def __init__(self, values: Sequence[float]):
        super().__init__()
        values = np.asarray(values, np.float32).reshape(-1)
        if values.size == 0:
            raise ValueError("the per-step learning-rate list is empty")
        self.learning_rate = Parameter(Tensor(values), name="learning_rate", requires_grad=False)
        self.last_index = values.size - 1

    def construct(self, global_step: Tensor) -> Tensor:
        index = ops.minimum(global_step, self.last_index)
        return ops.gather(self.learning_rate, index, 0)


# The per-parameter updates are mapped over the parameter list with HyperMap, not unrolled in a Python loop:
# parameters of one shape then share one compiled subgraph, which compiles several times faster.
_adamw_update = ops.MultitypeFuncGraph("adamw_update")
_adamw_fused_update = ops.MultitypeFuncGraph("adamw_fused_update")
_lion_update = ops.MultitypeFuncGraph("lion_update")
_sgd_update = ops.MultitypeFuncGraph("sgd_update")


@_adamw_update.register("Bool", "Number", "Number", "Number", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                        "Tensor", "Tensor", "Tensor", "Tensor")
def _adamw_one(decoupled, beta1, beta2, eps, lr, bias_correction1, bias_correction2_sqrt, weight_decay, lr_scale,
               param, m, v, grad):
    param_lr = lr * lr_scale
    value = param.astype(mstype.float32)
    grad = grad.astype(mstype.float32)
    if decoupled:
        value = value * (1.0 - param_lr * weight_decay)
    else:
        grad = grad + weight_decay * value
    new_m = beta1 * m + (1.0 - beta1) * grad
    new_v = beta2 * v + (1.0 - beta2) * grad * grad
    denom = ops.sqrt(new_v) / bias_correction2_sqrt + eps
    value = value - (param_lr / bias_correction1) * new_m / denom
    ops.assign(m, new_m)
    ops.assign(v, new_v)
    ops.assign(param, value.astype(param.dtype))
    return True


# MindSpore's AdamWeightDecay primitive updates param, m and v in place in one kernel, but has no bias correction:
# p -= L * (m / (sqrt(v) + eps') + d * p). PyTorch's AdamW, p -= lr * wd * p + lr / bc1 * m / (sqrt(v) / sqrt(bc2)
# + eps), is that with L = lr * sqrt(bc2) / bc1, eps' = eps * sqrt(bc2) and d = wd * bc1 / sqrt(bc2).
@_adamw_fused_update.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                              "Tensor", "Tensor", "Tensor", "Tensor")
def _adamw_fused_one(fused_op, beta1, beta2, step_eps, step_lr, decay_factor, weight_decay, lr_scale, param, m, v,
                     grad):
    fused_op(param, m, v, step_lr * lr_scale, beta1, beta2, step_eps, weight_decay * decay_factor,
             grad.astype(param.dtype))
    return True


@_lion_update.register("Number", "Number", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _lion_one(beta1, beta2, lr, weight_decay, lr_scale, param, m, grad):
    param_lr = lr * lr_scale
    value = param.astype(mstype.float32)
    grad = grad.astype(mstype.float32)
    value = value * (1.0 - param_lr * weight_decay)
    value = value - param_lr * ops.sign(beta1 * m + (1.0 - beta1) * grad)
    ops.assign(m, beta2 * m + (1.0 - beta2) * grad)
    ops.assign(param, value.astype(param.dtype))
    return True


@_sgd_update.register("Number", "Bool", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _sgd_one(momentum, nesterov, lr, weight_decay, lr_scale, param, buf, grad):
    value = param.astype(mstype.float32)
    grad = grad.astype(mstype.float32) + weight_decay * value
    if momentum > 0.0:
        new_buf = momentum * buf + grad
        ops.assign(buf, new_buf)
        grad = grad + momentum * new_buf if nesterov else new_buf
    ops.assign(param, (value - lr * lr_scale * grad).astype(param.dtype))
    return True


class _PerParameterOptimizer(nn.Optimizer):
    """Common part: per-parameter weight decay and lr multipliers, lr lookup, step counting.

    Args:
        params: parameters to update.
        lr: float, per-step list (indexed by `global_step`, last value held) or LearningRateSchedule.
        weight_decays: decay coefficient of each parameter (0.0 = none), same order as `params`.
        lr_scales: learning-rate multiplier of each parameter (layer decay), same order as `params`.
        loss_scale: gradients are divided by this before use (for a loss scale handled by the optimizer;
            leave 1.0 when the train step unscales). Default 1.0.
    """

    def __init__(self, params, lr: LearningRate, weight_decays: Sequence[float], lr_scales: Sequence[float],
                 loss_scale: float = 1.0):
        if not isinstance(lr, (float, int, LearningRateSchedule, Tensor)):
            lr = StepwiseLR(lr)
        super().__init__(lr, list(params), 0.0, loss_scale)
        if not len(weight_decays) == len(lr_scales) == len(self.parameters):
            raise ValueError("weight_decays and lr_scales need one value per parameter")
        self.weight_decays = tuple(float(w) for w in weight_decays)
        self.lr_scales = tuple(float(s) for s in lr_scales)
        # a decay of 0 multiplies by exactly 1.0: the same result as skipping it
        self.weight_decay_tensors = tuple(Tensor(w, mstype.float32) for w in self.weight_decays)
        self.lr_scale_tensors = tuple(Tensor(s, mstype.float32) for s in self.lr_scales)
        self.map = ops.HyperMap()

    def _next_lr(self) -> Tensor:
        """The learning rate of this update; advances `global_step`."""
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        return lr


class AdamW(_PerParameterOptimizer):
    """Adam with bias-corrected moments, as PyTorch's `torch.optim.AdamW` (decoupled=True:
    p <- p * (1 - lr * wd), then p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps))
    or `torch.optim.Adam` (decoupled=False: wd * p is added to the gradient).

    Args: see `_PerParameterOptimizer`; betas (b1, b2) default (0.9, 0.999); eps added to the
        bias-corrected sqrt(v), default 1e-8.
    """

    def __init__(self, params, lr: LearningRate, weight_decays, lr_scales, betas=(0.9, 0.999), eps: float = 1e-8,
                 decoupled: bool = True, loss_scale: float = 1.0):
        super().__init__(params, lr, weight_decays, lr_scales, loss_scale)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.decoupled = decoupled
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
        gradients = self.scale_grad(gradients)
        lr = self._next_lr()
        beta1_power = self.beta1_power * self.beta1
        beta2_power = self.beta2_power * self.beta2
        ops.assign(self.beta1_power, beta1_power)
        ops.assign(self.beta2_power, beta2_power)
        bias_correction1, bias_correction2_sqrt = 1.0 - beta1_power, ops.sqrt(1.0 - beta2_power)
        if self.fused_op is not None:
            update = ops.partial(_adamw_fused_update, self.fused_op, self.beta1_tensor, self.beta2_tensor,
                                 self.eps * bias_correction2_sqrt, lr * bias_correction2_sqrt / bias_correction1,
                                 bias_correction1 / bias_correction2_sqrt)
        else:
            update = ops.partial(_adamw_update, self.decoupled, self.beta1, self.beta2, self.eps, lr,
                                 bias_correction1, bias_correction2_sqrt)
        return self.map(update, self.weight_decay_tensors, self.lr_scale_tensors, self.parameters, self.moments1,
                        self.moments2, gradients)


class Lion(_PerParameterOptimizer):
    """Lion (Chen et al., 2023): p <- p * (1 - lr * wd) - lr * sign(b1 * m + (1 - b1) * g);
    m <- b2 * m + (1 - b2) * g. Default betas (0.9, 0.99). Use a 3-10x smaller lr than AdamW."""

    def __init__(self, params, lr: LearningRate, weight_decays, lr_scales, betas=(0.9, 0.99), loss_scale: float = 1.0):
        super().__init__(params, lr, weight_decays, lr_scales, loss_scale)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.moments = self.parameters.clone(prefix="lion_m", init="zeros")

    def construct(self, gradients):
        gradients = self.scale_grad(gradients)
        update = ops.partial(_lion_update, self.beta1, self.beta2, self._next_lr())
        return self.map(update, self.weight_decay_tensors, self.lr_scale_tensors, self.parameters, self.moments,
                        gradients)


class SGD(_PerParameterOptimizer):
    """SGD as PyTorch's `torch.optim.SGD` without dampening: g <- g + wd * p; buf <- momentum * buf + g;
    p <- p - lr * (g + momentum * buf if nesterov else buf). momentum 0 is plain SGD (no buffers)."""

    def __init__(self, params, lr: LearningRate, weight_decays, lr_scales, momentum: float = 0.9,
                 nesterov: bool = False, loss_scale: float = 1.0):
        super().__init__(params, lr, weight_decays, lr_scales, loss_scale)
        if momentum < 0.0 or (nesterov and momentum == 0.0):
            raise ValueError(f"momentum must be >= 0 (> 0 with nesterov), got {momentum}")
        self.momentum = float(momentum)
        self.nesterov = nesterov
        self.moments = self.parameters.clone(prefix="moments", init="zeros") if momentum > 0.0 else None

    def construct(self, gradients):
        gradients = self.scale_grad(gradients)
        moments = self.moments if self.momentum > 0.0 else gradients  # placeholder map partner without momentum
        update = ops.partial(_sgd_update, self.momentum, self.nesterov, self._next_lr())
        return self.map(update, self.weight_decay_tensors, self.lr_scale_tensors, self.parameters, moments,
                        gradients)
