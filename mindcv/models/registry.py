"""Model registry: constructors register themselves by name; `create_model` builds them. The functions are
MindCV's (`list_models`, `is_model`, `model_entrypoint`, `list_modules`, `is_model_in_modules`,
`is_model_pretrained`), with MindCV's arguments."""
import difflib
import fnmatch
import inspect
import sys
from collections import defaultdict
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Set, Union

_model_entrypoints: Dict[str, Callable] = {}
_model_to_module: Dict[str, str] = {}
_module_to_models: Dict[str, Set[str]] = defaultdict(set)
_model_has_pretrained: Set[str] = set()
# MindCV's name: each model's entry of its module's cfgs, with "classifier" (the name of its classifier cell, whose
# parameters a fine-tuning script leaves out or trains alone; "classifier" unless the cfg says otherwise)
_model_pretrained_cfgs: Dict[str, dict] = {}


def register_model(fn: Callable) -> Callable:
    """Decorator: register a model constructor under its function name, in the module that defines it (the last
    part of its dotted name, e.g. "convnext"). The model has published weights when that module's `model_cfgs`
    (or, as in MindCV, `default_cfgs`) gives it a "url" (or a Hugging Face Hub repository, "hub")."""
    name = fn.__name__
    if name in _model_entrypoints:
        raise ValueError(f"model '{name}' is registered twice")
    module = sys.modules[fn.__module__]
    cfgs = getattr(module, "model_cfgs", None) or getattr(module, "default_cfgs", {})
    _model_entrypoints[name] = fn
    _model_to_module[name] = fn.__module__.split(".")[-1]
    _module_to_models[_model_to_module[name]].add(name)
    _model_pretrained_cfgs[name] = {"classifier": "classifier", **cfgs.get(name, {})}
    if cfgs.get(name, {}).get("url") or cfgs.get(name, {}).get("hub"):
        _model_has_pretrained.add(name)
    return fn


def list_models(filter: Union[str, Iterable[str]] = "", module: str = "", pretrained: bool = False,
                exclude_filters: Union[str, Iterable[str]] = "") -> List[str]:
    """Sorted names of the registered models.

    Args:
        filter: a shell-style pattern ("convnextv2_*") or several (a model matching any is listed); "" lists all.
        module: only the models of this module (see `list_modules`), e.g. "convnext".
        pretrained: only the models with published weights.
        exclude_filters: pattern(s) of models to leave out.
    """
    names = _module_to_models.get(module, ()) if module else _model_entrypoints.keys()
    if filter:
        patterns = [filter] if isinstance(filter, str) else list(filter)
        names = [name for name in names if any(fnmatch.fnmatch(name, p) for p in patterns)]
    if exclude_filters:
        patterns = [exclude_filters] if isinstance(exclude_filters, str) else list(exclude_filters)
        names = [name for name in names if not any(fnmatch.fnmatch(name, p) for p in patterns)]
    return sorted(name for name in names if not pretrained or name in _model_has_pretrained)


def list_modules() -> List[str]:
    """Sorted names of the modules that register models."""
    return sorted(_module_to_models)


def is_model(model_name: str) -> bool:
    """Whether `model_name` is registered."""
    return model_name in _model_entrypoints


def is_model_in_modules(model_name: str, module_names: Iterable[str]) -> bool:
    """Whether `model_name` is registered by one of `module_names` (a tuple, list or set)."""
    return any(model_name in _module_to_models.get(module, ()) for module in module_names)


def is_model_pretrained(model_name: str) -> bool:
    """Whether `model_name` has published weights (`create_model(..., pretrained=True)` loads them)."""
    return model_name in _model_has_pretrained


def model_entrypoint(model_name: str) -> Callable:
    """The constructor registered as `model_name`; an unknown name raises ValueError listing close matches."""
    if model_name not in _model_entrypoints:
        close = difflib.get_close_matches(model_name, _model_entrypoints, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model '{model_name}'.{hint} `mindcv.models.list_models()` lists all models.")
    return _model_entrypoints[model_name]


def model_keywords(model_name: str) -> Optional[FrozenSet[str]]:
    """The keyword arguments the constructor of `model_name` takes, or None when it takes any (`**kwargs`, as the
    ConvNeXt constructors, which hand them to `ConvNeXt`). The scripts pass a config's model keys
    (drop_path_rate, layer_scale_init_value, ...) only to a model that takes them, so a family's own keywords
    stay its own."""
    parameters = inspect.signature(model_entrypoint(model_name)).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                              inspect.Parameter.KEYWORD_ONLY))
