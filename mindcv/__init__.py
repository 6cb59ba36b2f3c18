"""mindcv: config-driven image classification on MindSpore, built around ConvNeXt.

As in MindCV, the names of `mindcv.models`, `mindcv.data`, `mindcv.loss`, `mindcv.optim`, `mindcv.scheduler` and
`mindcv.utils` are also top-level names (`mindcv.create_model`, `mindcv.list_modules`, `mindcv.create_loader`,
...). They load their package on first use, so that `import mindcv` (and the config schema) does not import
MindSpore.
"""
import importlib
import importlib.util

__version__ = "0.1.0"
_PACKAGES = ("models", "data", "loss", "optim", "scheduler", "utils")


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(f"module 'mindcv' has no attribute '{name}'")
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a submodule: mindcv.models, mindcv.export
        return importlib.import_module(f".{name}", __name__)
    for package in _PACKAGES:
        module = importlib.import_module(f".{package}", __name__)
        if name in getattr(module, "__all__", ()):
            return getattr(module, name)
    raise AttributeError(f"module 'mindcv' has no attribute '{name}'")
