"""Model registry: constructors register themselves by name; `create_model` builds them."""
import difflib
import fnmatch
from typing import Callable, Dict, List

_model_entrypoints: Dict[str, Callable] = {}


def register_model(fn: Callable) -> Callable:
    """Decorator: register a model constructor under its function name."""
    name = fn.__name__
    if name in _model_entrypoints:
        raise ValueError(f"model '{name}' is registered twice")
    _model_entrypoints[name] = fn
    return fn


def list_models(pattern: str = "*") -> List[str]:
    """Sorted names of the registered models that match a shell-style `pattern` (e.g. "convnextv2_*")."""
    return sorted(name for name in _model_entrypoints if fnmatch.fnmatch(name, pattern))


def is_model(name: str) -> bool:
    return name in _model_entrypoints


def model_entrypoint(name: str) -> Callable:
    """The constructor registered as `name`; an unknown name raises ValueError listing close matches."""
    if name not in _model_entrypoints:
        close = difflib.get_close_matches(name, _model_entrypoints, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model '{name}'.{hint} `mindcv.models.list_models()` lists all models.")
    return _model_entrypoints[name]
