"""mindcv: config-driven image classification on MindSpore, built around ConvNeXt.

`mindcv.create_model` and `mindcv.list_models` are MindCV's top-level names for those of `mindcv.models`; they
load it on first use, so that `import mindcv` (and the config schema) does not import MindSpore.
"""
__version__ = "0.1.0"
__all__ = ["create_model", "list_models"]


def __getattr__(name: str):
    if name in __all__:
        from . import models
        return getattr(models, name)
    raise AttributeError(f"module 'mindcv' has no attribute '{name}'")
