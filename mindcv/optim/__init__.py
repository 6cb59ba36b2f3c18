"""Optimizers: `create_optimizer` builds AdamW / Adam / Lion / SGD with decay filters and layer-wise lr decay."""
from typing import Optional, Tuple

from mindspore import nn

from .optimizers import SGD, AdamW, LearningRate, Lion, StepwiseLR
from .param_groups import convnext_layer_ids, layer_decay_scales, weight_decay_mask

__all__ = ["SGD", "AdamW", "Lion", "StepwiseLR", "convnext_layer_ids", "create_optimizer", "layer_decay_scales",
           "weight_decay_mask"]

OPTIMIZERS = ("adamw", "adam", "sgd", "momentum", "lion")


def create_optimizer(params_or_model, opt: str = "adamw", lr: LearningRate = 1e-3, weight_decay: float = 0.0,
                     momentum: float = 0.9, nesterov: bool = False, weight_decay_filter: str = "disable",
                     layer_decay: Optional[float] = None, eps: float = 1e-8,
                     betas: Optional[Tuple[float, float]] = None, loss_scale: float = 1.0) -> nn.Optimizer:
    """Build an optimizer.

    Args:
        params_or_model: an nn.Cell (its trainable parameters are used) or a sequence of Parameters.
        opt: "adamw" (decoupled decay, PyTorch AdamW), "adam" (L2 decay added to the gradient, PyTorch Adam),
            "sgd" / "momentum" (the same algorithm: PyTorch SGD, heavy-ball momentum `momentum`, optional
            Nesterov; momentum 0 is plain SGD), "lion". Default "adamw".
        lr: learning rate: a float, a per-step list (e.g. from `create_scheduler`; entry i is used by the
            i-th update, the last entry after the end) or a LearningRateSchedule of the step. Default 1e-3.
        weight_decay: decay coefficient (decoupled for adamw and lion: p -= lr * wd * p). Default 0.0.
        momentum: SGD momentum. Default 0.9.
        nesterov: Nesterov momentum for SGD. Default False.
        weight_decay_filter: "disable" | "auto" | "norm_and_bias", see `weight_decay_mask`. Default "disable".
        layer_decay: layer-wise lr decay factor for ConvNeXt fine-tuning (e.g. 0.8): each parameter's lr is
            multiplied by layer_decay ** (head_id - layer_id), see `convnext_layer_ids`. Default None (off).
        eps: Adam epsilon. Default 1e-8.
        betas: (beta1, beta2); default (0.9, 0.999) for Adam/AdamW, (0.9, 0.99) for Lion.
        loss_scale: gradients are divided by this inside the optimizer; leave 1.0 with `create_train_step`,
            which unscales gradients itself. Default 1.0.
    """
    params = params_or_model.trainable_params() if isinstance(params_or_model, nn.Cell) else list(params_or_model)
    if not params:
        raise ValueError("no trainable parameters to optimize")
    name = opt.lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {opt!r}; choose one of {OPTIMIZERS}")
    decays = [weight_decay if decayed else 0.0 for decayed in weight_decay_mask(params, weight_decay_filter)]
    scales = layer_decay_scales(params, layer_decay) if layer_decay is not None else [1.0] * len(params)
    common = dict(weight_decays=decays, lr_scales=scales, loss_scale=loss_scale)
    if name in ("adamw", "adam"):
        return AdamW(params, lr, betas=betas or (0.9, 0.999), eps=eps, decoupled=name == "adamw", **common)
    if name == "lion":
        return Lion(params, lr, betas=betas or (0.9, 0.99), **common)
    return SGD(params, lr, momentum=momentum, nesterov=nesterov, **common)
