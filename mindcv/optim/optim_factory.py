"""`create_optimizer`: MindCV's factory (same name, argument order and defaults), PyTorch's update rules."""
import os
from typing import Dict, List, Optional, Sequence, Tuple

import mindspore as ms
from mindspore import Parameter, nn

from mindcv.io.checkpoint import load_checkpoint_checked

from .optimizers import (SGD, Adagrad, Adan, AdamW, Lamb, LearningRate, Lion, NAdam, RMSprop, check_learning_rate,
                         check_weight_decay)
from .param_groups import WEIGHT_DECAY_FILTERS, layer_decay_scales, weight_decay_mask

__all__ = ["OPTIMIZERS", "create_optimizer", "load_optimizer_state"]

OPTIMIZERS = ("adam", "adamw", "nadam", "adan", "lion", "lamb", "sgd", "momentum", "nesterov", "rmsprop", "adagrad")
_GROUP_KEYS = ("params", "lr", "weight_decay", "grad_centralization", "order_params")
_BETA_COUNT = {"adam": 2, "adamw": 2, "nadam": 2, "lion": 2, "lamb": 2, "adan": 3}
# keyword arguments each optimizer takes besides the named ones; the MindSpore / MindCV spellings on the right
_EXTRA_KWARGS = {
    "adan": ("no_prox",),
    "lamb": ("max_grad_norm", "trust_clip", "always_adapt"),
    "rmsprop": ("alpha", "centered"),
    "adagrad": ("lr_decay", "initial_accumulator_value"),
}
_ALIASES = {"rmsprop": {"decay": "alpha"}, "adagrad": {"accum": "initial_accumulator_value"}}


def create_optimizer(model_or_params, opt: str = "adam", lr: LearningRate = 1e-3, weight_decay: float = 0.0,
                     momentum: float = 0.9, nesterov: bool = False, weight_decay_filter: str = "disable",
                     layer_decay: Optional[float] = None, loss_scale: float = 1.0, schedule_decay: float = 4e-3,
                     checkpoint_path: str = "", eps: float = 1e-10, **kwargs) -> nn.Optimizer:
    """Build an optimizer by name, as MindCV's `create_optimizer` (same arguments, order and defaults), each with
    PyTorch's update rule (timm's for Adan and LAMB).

    Args:
        model_or_params: an nn.Cell (its trainable parameters are used), a list of Parameters, or MindSpore
            parameter groups: a list of dicts with "params" (a list of Parameters) and optionally "weight_decay"
            (default: `weight_decay`), "lr" (float, per-step list or schedule; default: `lr`) and
            "grad_centralization" (bool; default: `grad_centralization`), plus optionally one
            {"order_params": [...]} giving the update order (default: the groups' order).
        opt: case-insensitive name:
            "adam": PyTorch Adam (L2 decay: wd * p added to the gradient);
            "adamw": PyTorch AdamW (decoupled decay: p -= lr * wd * p);
            "nadam": PyTorch NAdam, momentum_decay = `schedule_decay`, L2 decay;
            "adan": timm's Adan (Xie et al. 2022), proximal decay p /= 1 + lr * wd (no_prox=True: decoupled);
            "lion": Lion (Chen et al. 2023), decoupled decay;
            "lamb": timm's Lamb (You et al. 2019): global gradient norm clipped to 1, trust ratio on decayed
                parameters;
            "sgd" / "momentum": PyTorch SGD, heavy-ball `momentum` (0: plain SGD), Nesterov if `nesterov`;
            "nesterov": the same with Nesterov momentum;
            "rmsprop": PyTorch RMSprop with `momentum`, alpha 0.9 (eps outside the square root);
            "adagrad": PyTorch Adagrad.
            Default "adam".
        lr: learning rate: a float, a per-step list (e.g. from `create_scheduler`; entry i is used by the i-th
            update, the last entry after the end) or a LearningRateSchedule of the step. Default 1e-3.
        weight_decay: decay coefficient (how it acts: see `opt`). Default 0.
        momentum: momentum of sgd / momentum / nesterov / rmsprop. Default 0.9.
        nesterov: Nesterov momentum for sgd / momentum. Default False.
        weight_decay_filter: which parameters are spared decay whatever their group says: "disable" (none),
            "auto" (names containing "beta" or "gamma"), "norm_and_bias" (every parameter of fewer than two
            dimensions, and ConvNeXt V2's GRN gamma / beta); with "auto" or "norm_and_bias" also the names a
            model's `no_weight_decay()` returns. See `weight_decay_mask`. Default "disable".
        layer_decay: layer-wise lr decay factor for ConvNeXt fine-tuning (e.g. 0.8): each parameter's lr is
            multiplied by layer_decay ** (head_id - layer_id), see `convnext_layer_ids`. Default None (off).
        loss_scale: gradients are divided by this inside the optimizer; leave 1.0 with `create_train_step`,
            which unscales gradients itself. Default 1.0.
        schedule_decay: NAdam's momentum decay (PyTorch's `momentum_decay`). Default 4e-3.
        checkpoint_path: a checkpoint to resume the optimizer state from (moments, step counters, `global_step`;
            not the learning rates, which come from `lr`, nor the model weights); "" for none. Default "".
        eps: the term added to the denominator by adam, adamw, nadam, adan, lamb, rmsprop and adagrad.
            Default 1e-10.
        **kwargs: grad_centralization (default False): centralize the gradients of every parameter (or group)
            that does not say otherwise: as MindSpore's optimizers, each gradient of a convolution or dense weight
            (two or more dimensions, the second a multiple of 16) loses its mean over all axes but the first,
            after an L2 decay is added and before the update (see `_PerParameterOptimizer.centralize_gradients`);
            betas (b1, b2) for adam / adamw / nadam / lion / lamb (defaults (0.9, 0.999), lion
            (0.9, 0.99)) and (b1, b2, b3) for adan (default (0.98, 0.92, 0.99)), or beta1 / beta2 / beta3 one by
            one; adan: no_prox; lamb: max_grad_norm (default 1.0, None: off), trust_clip, always_adapt;
            rmsprop: alpha (or MindSpore's decay; default 0.9), centered; adagrad: lr_decay,
            initial_accumulator_value (or MindSpore's accum; default 0).

    Raises:
        ValueError: an unknown name or filter, a negative learning rate or weight decay (the float, a list entry
            or a group's value), bad betas, nesterov with adam, or a checkpoint missing optimizer state.
        TypeError: a keyword argument the chosen optimizer does not take.
        FileNotFoundError: `checkpoint_path` names no file.
    """
    name = opt.lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {opt!r}; choose one of {OPTIMIZERS}")
    if weight_decay_filter not in WEIGHT_DECAY_FILTERS:
        raise ValueError(f"weight_decay_filter must be one of {WEIGHT_DECAY_FILTERS}, got {weight_decay_filter!r}")
    check_learning_rate(lr)
    weight_decay = check_weight_decay(weight_decay)
    if layer_decay is not None and not layer_decay > 0:
        raise ValueError(f"layer_decay must be > 0, got {layer_decay}")
    if name == "adam" and nesterov:
        raise ValueError("nesterov applies to sgd / momentum; for Adam with Nesterov momentum use opt='nadam'")
    grad_centralization = kwargs.pop("grad_centralization", False)
    if not isinstance(grad_centralization, bool):
        raise TypeError(f"grad_centralization must be True or False, got {grad_centralization!r}")
    options = _optimizer_options(name, kwargs)

    params, decays, group_lrs, lr_groups, centralize = _parameter_groups(model_or_params, weight_decay,
                                                                         grad_centralization)
    spared = set()
    if weight_decay_filter != "disable" and hasattr(model_or_params, "no_weight_decay"):
        spared = set(model_or_params.no_weight_decay())
    decays = [decay if decayed and p.name not in spared else 0.0
              for p, decay, decayed in zip(params, decays, weight_decay_mask(params, weight_decay_filter))]
    scales = layer_decay_scales(params, layer_decay) if layer_decay is not None else [1.0] * len(params)
    common = dict(weight_decays=decays, lr_scales=scales, loss_scale=loss_scale, group_lrs=group_lrs,
                  lr_groups=lr_groups)

    if name in ("adam", "adamw"):
        optimizer = AdamW(params, lr, eps=eps, decoupled=name == "adamw", **options, **common)
    elif name == "nadam":
        optimizer = NAdam(params, lr, eps=eps, momentum_decay=schedule_decay, **options, **common)
    elif name == "adan":
        optimizer = Adan(params, lr, eps=eps, **options, **common)
    elif name == "lion":
        optimizer = Lion(params, lr, **options, **common)
    elif name == "lamb":
        optimizer = Lamb(params, lr, eps=eps, **options, **common)
    elif name == "rmsprop":
        optimizer = RMSprop(params, lr, eps=eps, momentum=momentum, **{"alpha": 0.9, **options}, **common)
    elif name == "adagrad":
        optimizer = Adagrad(params, lr, eps=eps, **options, **common)
    else:
        optimizer = SGD(params, lr, momentum=momentum, nesterov=nesterov or name == "nesterov", **common)

    if any(centralize):
        optimizer.centralize_gradients(centralize)
    if checkpoint_path:
        load_optimizer_state(optimizer, checkpoint_path)
    return optimizer


def _optimizer_options(name: str, kwargs: Dict) -> Dict:
    """The keyword arguments for the optimizer class: betas gathered from betas / beta1 / beta2 / beta3, MindSpore
    spellings renamed; ValueError for betas given to an optimizer without them, TypeError for another keyword the
    optimizer does not take."""
    kwargs = dict(kwargs)
    for alias, target in _ALIASES.get(name, {}).items():
        if alias in kwargs:
            if target in kwargs:
                raise TypeError(f"give {target} or {alias}, not both")
            kwargs[target] = kwargs.pop(alias)
    options = {}
    betas = kwargs.pop("betas", None)
    singles = {key: kwargs.pop(key) for key in ("beta1", "beta2", "beta3") if key in kwargs}
    count = _BETA_COUNT.get(name, 0)
    if betas is not None or singles:
        if not count:  # a value that does not fit the optimizer (beta2 in a recipe for sgd), not a wrong call
            raise ValueError(f"{name} takes no betas; leave beta2 unset")
        if betas is not None and singles:
            raise TypeError("give betas or beta1 / beta2 / beta3, not both")
        if singles:
            defaults = {"adan": (0.98, 0.92, 0.99), "lion": (0.9, 0.99)}.get(name, (0.9, 0.999))
            if "beta3" in singles and count < 3:
                raise TypeError(f"{name} takes no beta3")
            betas = tuple(singles.get(f"beta{i + 1}", default) for i, default in enumerate(defaults))
        options["betas"] = tuple(betas)
    for key in _EXTRA_KWARGS.get(name, ()):
        if key in kwargs:
            options[key] = kwargs.pop(key)
    if kwargs:
        raise TypeError(f"{name} does not take {', '.join(sorted(kwargs))}")
    return options


def _parameter_groups(model_or_params, weight_decay: float, grad_centralization: bool = False
                      ) -> Tuple[List[Parameter], List[float], List[LearningRate], List[int], List[bool]]:
    """(parameters in update order, weight decay of each, group learning rates, lr index of each: 0 = `lr`,
    i >= 1 = the i-th group lr, whether each has its gradient centralized) from a Cell, a list of Parameters or
    MindSpore parameter-group dicts."""
    items = model_or_params.trainable_params() if isinstance(model_or_params, nn.Cell) else list(model_or_params)
    if not items:
        raise ValueError("no trainable parameters to optimize")
    if not any(isinstance(item, dict) for item in items):
        _check_parameters(items, "model_or_params")
        return items, [weight_decay] * len(items), [], [0] * len(items), [grad_centralization] * len(items)
    if not all(isinstance(item, dict) for item in items):
        raise TypeError("model_or_params mixes parameter-group dicts with other entries")

    params, decays, group_lrs, lr_groups, centralize, order = [], [], [], [], [], None
    for index, group in enumerate(items):
        unknown = sorted(set(group) - set(_GROUP_KEYS))
        if unknown:
            raise ValueError(f"parameter group {index}: unknown keys {unknown}; a group takes {_GROUP_KEYS}")
        if "order_params" in group:
            if len(group) > 1 or order is not None:
                raise ValueError("order_params must be alone in its dict, and given once")
            order = list(group["order_params"])
            continue
        if "params" not in group:
            raise ValueError(f"parameter group {index} has no 'params'")
        group_centralize = group.get("grad_centralization", grad_centralization)
        if not isinstance(group_centralize, bool):
            raise TypeError(f"parameter group {index}: grad_centralization must be True or False, got "
                            f"{group_centralize!r}")
        group_params = list(group["params"])
        _check_parameters(group_params, f"parameter group {index}")
        decay = check_weight_decay(group.get("weight_decay", weight_decay), f"parameter group {index}: weight_decay")
        lr_index = 0
        if "lr" in group:
            check_learning_rate(group["lr"], f"parameter group {index}: lr")
            group_lrs.append(group["lr"])
            lr_index = len(group_lrs)
        params += group_params
        decays += [decay] * len(group_params)
        lr_groups += [lr_index] * len(group_params)
        centralize += [group_centralize] * len(group_params)
    if not params:
        raise ValueError("no trainable parameters to optimize")
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise ValueError(f"a parameter is in more than one group: "
                         f"{sorted({n for n in names if names.count(n) > 1})}")
    if order is not None:
        order_names = [p.name for p in order]
        if sorted(order_names) != sorted(names):
            raise ValueError("order_params must list exactly the parameters of the groups")
        position = {n: i for i, n in enumerate(names)}
        permutation = [position[n] for n in order_names]
        params = [params[i] for i in permutation]
        decays = [decays[i] for i in permutation]
        lr_groups = [lr_groups[i] for i in permutation]
        centralize = [centralize[i] for i in permutation]
    return params, decays, group_lrs, lr_groups, centralize


def _check_parameters(items: Sequence, what: str) -> None:
    for item in items:
        if not isinstance(item, Parameter):
            raise TypeError(f"{what} must hold Parameters, got {type(item).__name__}")


def load_optimizer_state(optimizer: nn.Optimizer, checkpoint_path: str) -> List[str]:
    """Restore an optimizer's state (moments, step counters, `global_step`) from a checkpoint saved from the
    optimizer or from a cell holding it (the train step); returns the names loaded.

    The model weights and the learning rates (`learning_rate`, `learning_rate_group_<i>`) are left as they are:
    the weights are the model's to load, the learning rates come from the arguments of this run.

    Raises FileNotFoundError for a missing file, ValueError when the checkpoint lacks some of this optimizer's
    state (another optimizer's, or a weights-only file) or holds it with another shape.
    """
    if not os.path.isfile(checkpoint_path):
        raise FileNotFoundError(f"optimizer checkpoint {checkpoint_path!r} not found")
    weights = {p.name for p in optimizer.parameters}
    state = [p for p in optimizer.get_parameters()
             if p.name not in weights and not p.name.startswith("learning_rate")]
    saved = load_checkpoint_checked(checkpoint_path)
    missing = [p.name for p in state if p.name not in saved]
    if missing:
        raise ValueError(f"{checkpoint_path} lacks the optimizer state {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''} ({len(missing)} of {len(state)} entries)")
    for param in state:
        value = saved[param.name]
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"{checkpoint_path}: {param.name} has shape {tuple(value.shape)}, "
                             f"the optimizer's has {tuple(param.shape)}")
        param.set_data(ms.Tensor(value.asnumpy(), param.dtype))
    return [p.name for p in state]
