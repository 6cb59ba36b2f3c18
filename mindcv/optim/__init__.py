"""Optimizers: `create_optimizer` builds Adam / AdamW / NAdam / Adan / Lion / LAMB / SGD / RMSprop / Adagrad with
PyTorch's update rules, decay filters, layer-wise lr decay and MindSpore parameter groups."""
from .optim_factory import OPTIMIZERS, create_optimizer, load_optimizer_state
from .optimizers import (SGD, STATE_KEYS, STATE_PREFIXES, Adagrad, Adan, AdamW, Lamb, LearningRate, Lion, NAdam,
                         RMSprop, StepwiseLR)
from .param_groups import convnext_layer_ids, layer_decay_scales, weight_decay_mask

__all__ = ["OPTIMIZERS", "SGD", "STATE_KEYS", "STATE_PREFIXES", "Adagrad", "Adan", "AdamW", "Lamb", "LearningRate",
           "Lion", "NAdam", "RMSprop", "StepwiseLR", "convnext_layer_ids", "create_optimizer", "layer_decay_scales",
           "load_optimizer_state", "weight_decay_mask"]
