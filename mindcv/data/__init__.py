"""Data pipeline: ImageNet-style folder, CIFAR and MNIST datasets, transforms, mixup/cutmix, loaders."""

from .auto_augment import (AugMix, AutoAugment, RandAugment, TrivialAugmentWide, apply_op, auto_augment_from_policy,
                           rand_augment_from_policy)
from .constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from .dataset import (EpochKeySampler, EpochOrder, RepeatedAugmentationOrder, create_dataset, get_class_names,
                      scan_image_folder)
from .dataset_download import Cifar10Download, Cifar100Download, MnistDownload, get_dataset_download_root
from .loader import create_loader
from .mixup import MixupCutmix
from .transforms import UnreadableImageError, create_transforms

__all__ = [
    "IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD", "AugMix", "AutoAugment", "Cifar10Download", "Cifar100Download",
    "EpochKeySampler", "EpochOrder", "MixupCutmix", "MnistDownload", "RandAugment", "RepeatedAugmentationOrder",
    "TrivialAugmentWide", "UnreadableImageError", "apply_op", "auto_augment_from_policy", "create_dataset",
    "create_loader", "create_transforms", "get_class_names", "get_dataset_download_root", "rand_augment_from_policy",
    "scan_image_folder",
]
