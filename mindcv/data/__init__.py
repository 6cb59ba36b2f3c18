"""Data pipeline: ImageNet-style folder datasets, transforms, mixup/cutmix, loaders."""

from .auto_augment import RandAugment, apply_op, rand_augment_from_policy
from .constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from .dataset import EpochKeySampler, EpochOrder, create_dataset, get_class_names, scan_image_folder
from .loader import create_loader
from .mixup import MixupCutmix
from .transforms import UnreadableImageError, create_transforms

__all__ = [
    "IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD", "EpochKeySampler", "EpochOrder", "MixupCutmix", "RandAugment",
    "UnreadableImageError", "apply_op", "create_dataset", "create_loader", "create_transforms", "get_class_names",
    "rand_augment_from_policy", "scan_image_folder",
]
