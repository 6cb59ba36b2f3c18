"""Models: the registry, `create_model`, the ConvNeXt family, weight loading and feature extraction."""
from typing import Dict

import numpy as np

from mindcv.io.checkpoint import load_checkpoint_checked
from mindcv.io.ckpt_check import require_file
from mindcv.io.names import EMA_PREFIX

from . import convnext  # noqa: F401  (registers the ConvNeXt constructors)
from .convnext import PRETRAINED_DIR, ConvNeXt
from .features import FeatureExtractWrapper
from .registry import (is_model, is_model_in_modules, is_model_pretrained, list_models, list_modules,
                       model_entrypoint, register_model)
from .weights import load_state, load_weights

__all__ = ["PRETRAINED_DIR", "ConvNeXt", "FeatureExtractWrapper", "create_model", "is_model", "is_model_in_modules",
           "is_model_pretrained", "list_models", "list_modules", "load_weights", "model_entrypoint",
           "register_model"]


def create_model(model_name: str, num_classes: int = 1000, pretrained: bool = False, in_channels: int = 3,
                 checkpoint_path: str = "", ema: bool = False, auto_mapping: bool = False, **kwargs):
    """Build a registered model; MindCV's arguments, order and defaults.

    Args:
        model_name: a name from `list_models()`, e.g. "convnext_tiny".
        num_classes: classifier outputs. Default 1000.
        pretrained: load the published weights of `model_name` from `PRETRAINED_DIR` ($MINDCV_HOME, default
            ~/.cache/mindcv), downloaded and verified on first use. Default False.
        in_channels: input image channels. Default 3.
        checkpoint_path: weights to load, of any supported origin (see `mindcv.models.weights`); a classifier
            that does not fit `num_classes` is left at its initialisation, with a warning. Exclusive with
            `pretrained`. Default "".
        ema: load the exponential moving average of the weights (the `ema.*` entries that training with
            `ema: True` writes into a .ckpt) instead of the trained weights. Default False.
        auto_mapping: MindCV's switch for mapping checkpoint names onto the model's. Here the names of MindCV,
            timm / Hugging Face and official ConvNeXt checkpoints are always mapped, so it changes nothing.
            Default False.
        **kwargs: reach the model's constructor: drop_path_rate, layer_scale_init_value, head_init_scale, depths,
            dims, features_only, out_indices, ...; those given as None are left out (the model's defaults
            apply), as in MindCV.

    Raises ValueError for an unknown model, both `pretrained` and `checkpoint_path`, or weights that do not fit.
    """
    if pretrained and checkpoint_path:
        raise ValueError("checkpoint_path and pretrained both name the weights to load; pass one")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model = model_entrypoint(model_name)(pretrained=pretrained, num_classes=num_classes, in_channels=in_channels,
                                         **kwargs)
    if checkpoint_path and ema:
        load_state(model, _ema_state(checkpoint_path), source=f"{checkpoint_path} (EMA weights)")
    elif checkpoint_path:
        load_weights(model, checkpoint_path)
    return model


def _ema_state(path: str) -> Dict[str, np.ndarray]:
    """The `ema.<name>` entries of a MindSpore .ckpt, as {name: array}; ValueError when there are none."""
    require_file(path)
    entries = load_checkpoint_checked(path) if path.lower().endswith(".ckpt") else {}
    prefix = f"{EMA_PREFIX}."
    state = {name[len(prefix):]: value.asnumpy() for name, value in entries.items()
             if name.startswith(prefix) and not isinstance(value, str)}
    if not state:
        raise ValueError(f"{path} holds no EMA weights (ema.* entries of a .ckpt trained with ema: True); "
                         "pass ema=False")
    return state
