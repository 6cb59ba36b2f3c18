"""The batched training / evaluation pipeline.

How epochs and determinism work:
    `create_loader` returns a MindSpore pipeline; every pass over it (one epoch
    of `create_tuple_iterator(num_epochs=...)` or of `Model.train`) is the next
    epoch, counting from `start_epoch` (each new iterator starts again at
    `start_epoch`). Epoch e's sample order comes from (dataset seed, e), see
    `EpochShardSampler`; every augmentation draw of a sample comes from
    `numpy.random.default_rng([seed, 0, e, sample_index])` and every
    mixup/cutmix draw of a batch from `default_rng([seed, 1, e * dataset_size +
    first_sample_index])`. So epoch e is the same data whatever the number of
    workers or epochs before it: a run resumed at epoch k passes
    `start_epoch=k` and sees what the uninterrupted run saw.
"""

import logging
import os

import mindspore.dataset as ds
import numpy as np

from .mixup import MixupCutmix
from .transforms import UnreadableImageError, create_transforms

_logger = logging.getLogger(__name__)
AUGMENT_STREAM, MIX_STREAM = 0, 1


class SkippedImages:
    """Running count of unreadable images replaced by another sample (main process).

    Shared, not copied, by the pipeline copies that MindSpore makes per iterator.
    """

    def __init__(self):
        self.count = 0

    def __deepcopy__(self, memo):
        return self


class AugmentedSource:
    """Random-access source: key -> (image float32 CHW, label int32, key int64, skipped int32).

    An image that cannot be read or decoded is skipped with a warning naming the
    file, and the next sample of the dataset is used in its place, so every rank
    still yields the same number of rows; "skipped" counts the files passed over.
    """

    def __init__(self, image_source, transform, seed):
        self.image_source = image_source
        self.transform = transform
        self.seed = seed

    def __len__(self):
        return len(self.image_source)

    def __getitem__(self, key):
        epoch, index = self.image_source.split_key(key)
        rng = np.random.default_rng([self.seed, AUGMENT_STREAM, epoch, index])
        size = len(self.image_source)
        for skipped in range(size):
            current = (index + skipped) % size
            try:
                image = self.transform(self.image_source.read_bytes(current), rng)
            except (UnreadableImageError, OSError) as err:
                _logger.warning("skipping unreadable image %s (%s)", self.image_source.paths[current], err)
                continue
            return image, self.image_source.labels[current], np.int64(key), np.int32(skipped)
        raise RuntimeError(f"none of the {size} images of the dataset could be decoded")


class BatchCollator:
    """per_batch_map: stacks a batch, reports skipped images, applies mixup/cutmix."""

    def __init__(self, mix, seed, skipped_images):
        self.mix = mix
        self.seed = seed
        self.skipped_images = skipped_images

    def __call__(self, images, labels, keys, skipped, batch_info):
        labels = np.asarray(labels, np.int32)
        newly_skipped = int(np.sum(skipped))
        if newly_skipped:
            self.skipped_images.count += newly_skipped
            _logger.warning("%d unreadable image(s) skipped in this run so far", self.skipped_images.count)
        if self.mix is None:
            return np.stack(images), labels
        return self.mix(images, labels, np.random.default_rng([self.seed, MIX_STREAM, int(keys[0])]))


def create_loader(dataset, batch_size, drop_remainder=False, is_training=False, mixup=0.0, cutmix=0.0,
                  cutmix_prob=1.0, label_smoothing=0.0, num_classes=1000, transform=None, num_parallel_workers=None,
                  seed=0, start_epoch=0):
    """Batched pipeline over a dataset made by `create_dataset`.

    Args:
        dataset: the result of `create_dataset` (its files, order and sharding are reused).
        batch_size: images per batch.
        drop_remainder: drop the last incomplete batch.
        is_training: only used to pick the default transform.
        mixup, cutmix: Beta-distribution alphas; > 0 enables each. With both on,
            each batch uses cutmix with probability 0.5, else mixup.
        cutmix_prob: probability that a batch is mixed at all (timm's mixup prob).
        label_smoothing: folded into the soft targets when mixing is on
            (otherwise labels stay integers and the loss applies it).
        num_classes: width of the soft targets.
        transform: `transform(encoded_bytes, rng) -> float32 [C, H, W]`, from
            `create_transforms` (default: its defaults for `is_training`).
        num_parallel_workers: decode/augment worker processes (default:
            min(8, CPU count)).
        seed: seed of the augmentation and mixing draws.
        start_epoch: epoch number of the first pass (see the module docstring).

    Returns:
        mindspore.dataset pipeline of ("image": float32 [B, C, H, W], "label":
        int32 [B], or float32 [B, num_classes] soft targets when mixup or cutmix
        is on), with attributes `class_names` and `skipped_images` (`.count`:
        unreadable images skipped so far).
    """
    if not hasattr(dataset, "image_source"):
        raise TypeError("create_loader needs a dataset made by mindcv.data.create_dataset")
    if transform is None:
        transform = create_transforms("imagefolder", is_training)
    workers = num_parallel_workers or min(8, os.cpu_count() or 1)
    pipeline = ds.GeneratorDataset(
        AugmentedSource(dataset.image_source, transform, seed),
        column_names=["image", "label", "key", "skipped"],
        sampler=dataset.epoch_sampler.starting_at(start_epoch),
        num_parallel_workers=workers,
        python_multiprocessing=workers > 1,
    )
    mix = None
    if mixup > 0 or cutmix > 0:
        mix = MixupCutmix(mixup, cutmix, cutmix_prob, 0.5, label_smoothing, num_classes)
    skipped_images = SkippedImages()
    loader = pipeline.batch(
        batch_size, drop_remainder=drop_remainder, per_batch_map=BatchCollator(mix, seed, skipped_images),
        input_columns=["image", "label", "key", "skipped"], output_columns=["image", "label"],
    )
    loader.class_names = dataset.class_names
    loader.skipped_images = skipped_images
    return loader
