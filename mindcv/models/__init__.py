"""Models: the registry, `create_model`, the ConvNeXt family and weight loading."""
import os

from . import convnext  # noqa: F401  (registers the ConvNeXt constructors)
from .convnext import ConvNeXt
from .registry import is_model, list_models, model_entrypoint, register_model
from .weights import load_weights

__all__ = ["ConvNeXt", "create_model", "is_model", "list_models", "load_weights", "register_model"]

PRETRAINED_DIR = os.path.expanduser(os.environ.get("MINDCV_HOME", "~/.cache/mindcv"))


def create_model(model_name: str, num_classes: int = 1000, in_channels: int = 3, pretrained: bool = False,
                 checkpoint_path: str = "", **kwargs):
    """Build a registered model.

    Args:
        model_name: a name from `list_models()`, e.g. "convnext_tiny".
        num_classes: classifier outputs. Default 1000.
        in_channels: input image channels. Default 3.
        pretrained: load the published weights of `model_name` from `PRETRAINED_DIR`
            ($MINDCV_HOME, default ~/.cache/mindcv); nothing is downloaded at run time.
        checkpoint_path: weights to load, of any supported origin (see `mindcv.models.weights`);
            a classifier that does not fit `num_classes` is left at its initialisation, with a warning.
        **kwargs: reach the model: drop_path_rate, layer_scale_init_value, head_init_scale, depths, dims,
            features_only, out_indices, ...
    """
    model = model_entrypoint(model_name)(num_classes=num_classes, in_channels=in_channels, **kwargs)
    if pretrained and not checkpoint_path:
        url = getattr(model, "pretrained_url", "")
        if not url:
            raise ValueError(f"no published weights for {model_name}; pass checkpoint_path instead")
        checkpoint_path = os.path.join(PRETRAINED_DIR, os.path.basename(url))
        if not os.path.isfile(checkpoint_path):
            raise FileNotFoundError(f"pretrained weights for {model_name} not found at {checkpoint_path}; "
                                    f"download {url} there, or pass checkpoint_path")
    if checkpoint_path:
        load_weights(model, checkpoint_path)
    return model
