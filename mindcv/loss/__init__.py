"""Losses: `create_loss` builds cross entropy (softmax or sigmoid), asymmetric loss or AugMix's JSD loss, taking
integer labels or dense (one-hot, multi-hot or soft) targets."""
from .asymmetric import AsymmetricLossMultiLabel, AsymmetricLossSingleLabel
from .cross_entropy import BinaryCrossEntropySmooth, CrossEntropySmooth
from .jsd import JSDCrossEntropy
from .loss_factory import LOSSES, create_loss

__all__ = ["AsymmetricLossMultiLabel", "AsymmetricLossSingleLabel", "BinaryCrossEntropySmooth", "CrossEntropySmooth",
           "JSDCrossEntropy", "LOSSES", "create_loss"]
