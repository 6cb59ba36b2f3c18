"""Reading checkpoints of any origin and loading them into our models.

Supported sources, told apart by their key names:
- MindSpore `.ckpt` in our / MindCV naming (`feature.1.0.dwconv.weight`); optimizer state is skipped;
- timm / Hugging Face naming (`stem.0.weight`, `stages.0.blocks.0.conv_dw.weight`, `head.fc.weight`);
- official facebookresearch/ConvNeXt naming (`downsample_layers.0.0.weight`, `stages.0.0.dwconv.weight`);
in `.ckpt`, `.safetensors` or `.pth` files (`.pth` needs torch).
"""
import logging
import os
import re
from typing import Dict, List, Tuple

import numpy as np
from mindspore import Tensor, nn

from mindcv.io.checkpoint import load_checkpoint_checked
from mindcv.io.ckpt_check import require_file
from mindcv.io.download import fetch, is_url
from mindcv.io.names import is_training_state

_logger = logging.getLogger(__name__)

# Where each part of the network lives in a foreign naming; `(\d)` captures the stage, `(\d+)` the block.
_NAMINGS = {
    "timm": dict(stem=r"stem\.", downsample=r"stages\.(\d)\.downsample\.", block=r"stages\.(\d)\.blocks\.(\d+)\.",
                 head_norm=r"head\.norm\.", head_fc=r"head\.fc\."),
    "official": dict(stem=r"downsample_layers\.0\.", downsample=r"downsample_layers\.(\d)\.",
                     block=r"stages\.(\d)\.(\d+)\.", head_norm=r"norm\.", head_fc=r"head\."),
}
_NORM_TAILS = {"weight": "gamma", "bias": "beta"}


def _rules(stem, downsample, block, head_norm, head_fc):
    """(pattern, name builder) pairs, first match wins. Stem: conv then LayerNorm; downsampling layers:
    LayerNorm then conv; our feature.{2i} holds downsampling layer i, feature.{2i+1} stage i."""
    return [
        (rf"^{stem}0\.(.+)$", lambda m: f"feature.0.0.{m[1]}"),
        (rf"^{stem}1\.(weight|bias)$", lambda m: f"feature.0.1.{_NORM_TAILS[m[1]]}"),
        (rf"^{downsample}0\.(weight|bias)$", lambda m: f"feature.{2 * int(m[1])}.0.{_NORM_TAILS[m[2]]}"),
        (rf"^{downsample}1\.(.+)$", lambda m: f"feature.{2 * int(m[1])}.1.{m[2]}"),
        (rf"^{block}(.+)$", lambda m: f"feature.{2 * int(m[1]) + 1}.{m[2]}.{_BLOCK_TAILS.get(m[3], m[3])}"),
        (rf"^{head_norm}(weight|bias)$", lambda m: f"norm.{_NORM_TAILS[m[1]]}"),
        (rf"^{head_fc}(.+)$", lambda m: f"classifier.{m[1]}"),
    ]


# Inside a block: timm names on the left, official names map through the same table.
_BLOCK_TAILS = {
    "conv_dw.weight": "dwconv.weight", "conv_dw.bias": "dwconv.bias",
    "norm.weight": "norm.gamma", "norm.bias": "norm.beta",
    "mlp.fc1.weight": "pwconv1.weight", "mlp.fc1.bias": "pwconv1.bias",
    "mlp.fc2.weight": "pwconv2.weight", "mlp.fc2.bias": "pwconv2.bias",
    "mlp.grn.weight": "grn.gamma", "mlp.grn.bias": "grn.beta",
    "gamma": "gamma_",
}


def detect_naming(names) -> str:
    """'timm' or 'official' for ConvNeXt weights in those namings, from the key names of a state dict; else
    'mindcv': the names are the model's own (MindCV's ConvNeXt names, or any family's that needs no mapping) and
    are used as they are; weights that fit no model are refused when they are loaded (`match_state`)."""
    names = set(names)
    if any(n.startswith("feature.0.0.") for n in names):
        return "mindcv"
    if any(n.startswith("stem.0.") for n in names):
        return "timm"
    if any(n.startswith("downsample_layers.0.0.") for n in names):
        return "official"
    return "mindcv"


def _apply_rules(name: str, rules) -> str:
    for pattern, build in rules:
        match = re.match(pattern, name)
        if match:
            return build(match)
    return name


def to_mindcv_names(state: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], List[Tuple[str, str]]]:
    """Rename a state dict into our naming. Returns (renamed state, [(source name, our name), ...])."""
    naming = detect_naming(state)
    if naming == "mindcv":
        return dict(state), [(k, k) for k in state]
    rules = _rules(**_NAMINGS[naming])
    renamed, mapping = {}, []
    for name, value in state.items():
        new = _apply_rules(name, rules)
        renamed[new] = value
        mapping.append((name, new))
    return renamed, mapping


def read_state(path: str) -> Dict[str, np.ndarray]:
    """Every tensor of a `.ckpt`, `.safetensors` or `.pth` file as numpy arrays, training state removed.

    A missing file is a FileNotFoundError; a directory, an unreadable file, or one that is damaged or not
    of the format its suffix names is a one-line ValueError naming it (`.ckpt` files are checked before
    MindSpore parses them: see `mindcv.io.ckpt_check`). An http(s) URL is fetched into the cache first
    (`mindcv.io.download.fetch`: a `#sha256=<hex>` suffix is verified)."""
    if is_url(path):
        path = fetch(path)
    require_file(path)
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".safetensors":
            state = _read_safetensors(path)
        elif ext in (".pth", ".pt", ".bin"):
            state = _read_torch(path)
        else:
            # text entries (MindSpore saves strings of append_dict so) are not weights
            state = {k: v.asnumpy() for k, v in load_checkpoint_checked(path).items() if not isinstance(v, str)}
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    return {k: v for k, v in state.items() if not is_training_state(k)}


def _read_safetensors(path: str) -> Dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except SafetensorError as error:
        raise ValueError(f"cannot read {path} as a safetensors file: {str(error).splitlines()[0]}") from None
    except (AttributeError, TypeError) as error:  # a dtype numpy lacks (F8_E4M3): safetensors looks it up
        raise ValueError(f"cannot read {path}: it holds tensors of a type numpy cannot hold ({error}); save them "
                         "as float32 or float16") from None


def _read_torch(path: str) -> Dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path} needs PyTorch: `pip install torch`, or convert it on a machine with "
                          "torch to .safetensors and pass that file instead") from None
    try:  # weights_only: a pickle that would run code (or build anything but tensors) is refused
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot read {path} as a PyTorch file of tensors: {reason}") from None
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a mapping of parameter names to tensors (a "
                         "state_dict)")
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {str(name)[:80]!r} is a {type(value).__name__}, not a tensor; pass a "
                             "file of the model's state_dict only")
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def match_state(model: nn.Cell, state: Dict[str, np.ndarray], source: str = "checkpoint") -> Dict[str, np.ndarray]:
    """Fit a state dict in our naming to `model`: reshape singleton-dimension differences
    (Linear vs 1x1 conv, GRN [C] vs [1,1,1,C]), drop a classifier that does not fit (with a warning),
    ignore a head that a backbone lacks, and raise ValueError for any other mismatch."""
    params = {p.name: p for p in model.get_parameters()}
    backbone = getattr(model, "features_only", False)
    fitted, wrong_shape, unexpected = {}, [], []
    for name, value in state.items():
        if name not in params:
            if not (backbone and name.split(".")[0] in ("norm", "classifier")):
                unexpected.append(name)
            continue
        shape = tuple(params[name].shape)
        if value.shape != shape and value.size == int(np.prod(shape)) and _same_up_to_ones(value.shape, shape):
            value = value.reshape(shape)
        if value.shape != shape:
            wrong_shape.append(f"{name} {tuple(value.shape)} in the checkpoint, {shape} in the model")
            continue
        fitted[name] = value
    classifier_mismatch = [s for s in wrong_shape if s.startswith("classifier.")]
    if classifier_mismatch and len(classifier_mismatch) == len(wrong_shape):
        _logger.warning("%s: classifier %s does not fit this model's num_classes; loading everything else, "
                        "the classifier keeps its fresh initialisation", source, classifier_mismatch[0])
        wrong_shape = []
    missing = [n for n in params if n not in state]
    if missing or unexpected or wrong_shape:
        parts = [f"{label} ({len(names)}): {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
                 for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
                 if names]
        raise ValueError(f"{source} does not fit this model; " + "; ".join(parts) +
                         ". Is it a checkpoint of another model or size?")
    return fitted


def _same_up_to_ones(a, b) -> bool:
    return [d for d in a if d != 1] == [d for d in b if d != 1]


def load_weights(model: nn.Cell, path: str) -> List[Tuple[str, str]]:
    """Load the weights in `path` (any supported origin) into `model`, strictly but for a mismatched
    classifier. Returns the (source name, our name) mapping that was applied."""
    renamed, mapping = to_mindcv_names(read_state(path))
    load_state(model, renamed, source=path)
    return mapping


def load_state(model: nn.Cell, state: Dict[str, np.ndarray], source: str = "checkpoint") -> None:
    """Load a state dict already in our naming into `model`, fitted by `match_state` (same rules, same errors)."""
    fitted = match_state(model, state, source=source)
    for param in model.get_parameters():
        if param.name in fitted:
            param.set_data(Tensor(fitted[param.name], param.dtype))
