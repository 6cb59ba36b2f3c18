"""The batched training / evaluation pipeline.

Workers build whole batches: each item of the `GeneratorDataset` that
`create_loader` returns is one batch (decode, augment, stack and mixup/cutmix
all happen in the workers), which keeps MindSpore's per-row overhead out of
the main process. The workers are threads by default: the heavy work runs in
the image kernels (`mindcv.data.kernels`) and in Pillow, which release the
GIL, and threads hand a batch over without the shared-memory copies that
worker processes need (about 1.3 ms of CPU per 224x224 image here).

How epochs and determinism work:
    every pass over the loader (one epoch of `create_tuple_iterator(num_epochs=...)`
    or of `Model.train`) is the next epoch, counting from `start_epoch`; each new
    iterator starts again at `start_epoch`. Epoch e's sample order comes from
    (dataset seed, e), see `EpochOrder`; every augmentation draw of a sample comes
    from `numpy.random.default_rng([seed, 0, e, sample_index])` and every
    mixup/cutmix draw of a batch from `default_rng([seed, 1, shard_id, e, batch_index])`
    (each data-parallel rank mixes its own batches differently).
    So epoch e is the same data whatever the number of workers or the epochs
    before it: a run resumed at epoch k passes `start_epoch=k` (and, in the middle
    of that epoch, `skip_batches`) and sees what the uninterrupted run saw.
"""

import functools
import inspect
import logging
import os
import threading

import mindspore.dataset as ds
import numpy as np

from .dataset import EpochKeySampler
from .mixup import MixupCutmix
from .transforms import UnreadableImageError, create_transforms

_logger = logging.getLogger(__name__)
AUGMENT_STREAM, MIX_STREAM = 0, 1


def _takes_argument(function, name):
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):  # a callable without a signature
        return False


def _takes_out(transform):
    """Whether `transform` accepts `out=` (mindcv's transforms do: they write straight into the batch)."""
    return _takes_argument(transform, "out")


class BatchSource:
    """Random-access source: key `epoch * num_batches + b` -> batch b of that epoch.

    Returns (images float32 [B, C, H, W], labels int32 [B] or float32 [B, classes])
    and, unless `skipped_images` (a `SkippedImages`) counts them in place, a third
    column "skipped" (int32). An image that cannot be read or decoded is skipped
    with a warning naming the file and the next file of the dataset is used in
    its place, so every rank still yields full batches.

    With `splits` (AugMix split batches: `transform` is the tuple (primary, secondary, final) of
    `create_transforms(..., separate=True)`), each image gives `splits` views: a clean one (primary, then final
    without random erasing) and `splits - 1` augmented ones (primary, secondary, final); the batch is the B clean
    views, then the B first augmented views, ... ([splits * B, C, H, W]) and the labels repeat in the same way.
    """

    def __init__(self, image_source, order, transform, batch_size, drop_remainder, mix, seed, skipped_images=None,
                 target_transform=None, splits=1):
        self.image_source = image_source
        self.read = getattr(image_source, "read", None) or image_source.read_bytes
        self.order = order
        self.transform = transform
        self.batch_size = batch_size
        self.mix = mix
        self.seed = seed
        self.skipped_images = skipped_images
        self.target_transform = target_transform
        self.splits = splits
        self.num_batches = len(order) // batch_size if drop_remainder else -(-len(order) // batch_size)
        self.cached = None  # (epoch, sample indices of that epoch)
        if splits > 1:
            self.transform_takes_out = _takes_out(transform[2])
            self.final_takes_erase = _takes_argument(transform[2], "erase")
        else:
            self.transform_takes_out = _takes_out(transform)

    def __len__(self):
        return self.num_batches

    def epoch_indices(self, epoch):
        cached = self.cached  # one attribute, read and replaced whole: worker threads share it
        if cached is None or cached[0] != epoch:
            cached = self.cached = (epoch, self.order.indices(epoch))
        return cached[1]

    def views(self, data, rng, outs):
        """The `splits` views of one image (see the class docstring), written into `outs` where possible."""
        primary, secondary, final = self.transform
        takes_out = self.transform_takes_out and outs is not None
        pixels = primary(data, rng)
        clean_options = {"erase": False} if self.final_takes_erase else {}  # timm: the clean view is not erased
        if takes_out:
            clean_options["out"] = outs[0]
        views = [final(pixels, rng, **clean_options)]
        for k in range(1, self.splits):
            augmented = secondary(pixels, rng)
            views.append(final(augmented, rng, out=outs[k]) if takes_out else final(augmented, rng))
        return views

    def load(self, epoch, index, out=None):
        """(image, label, files skipped) for sample `index` of `epoch`; the image is written into `out` if given.
        With splits, `out` is the list of the views' arrays and the image is the list of views."""
        rng = np.random.default_rng([self.seed, AUGMENT_STREAM, epoch, index])
        size = len(self.image_source)
        for skipped in range(size):
            current = (index + skipped) % size
            try:
                data = self.read(current)
                if self.splits > 1:
                    image = self.views(data, rng, out)
                elif self.transform_takes_out:
                    image = self.transform(data, rng, out=out)
                else:
                    image = self.transform(data, rng)
            except (UnreadableImageError, OSError) as err:
                _logger.warning("skipping unreadable image %s (%s)", self.image_source.paths[current], err)
                continue
            label = self.image_source.labels[current]
            if self.target_transform is not None:
                label = np.asarray(self.target_transform(label))
            return image, label, skipped
        raise RuntimeError(f"none of the {size} images of the dataset could be decoded")

    def __getitem__(self, key):
        epoch, batch = divmod(int(key), self.num_batches)
        indices = self.epoch_indices(epoch)[batch * self.batch_size : (batch + 1) * self.batch_size]
        if self.splits > 1:
            images, labels, skipped = self.split_batch(epoch, indices)
        else:
            # the first image gives the batch's shape; the others are written straight into it
            first, label, skipped = self.load(epoch, int(indices[0]))
            images = np.empty((len(indices),) + first.shape, first.dtype)
            images[0] = first
            labels = [label]
            for position, index in enumerate(indices[1:], start=1):
                out = images[position]
                image, label, more_skipped = self.load(epoch, int(index), out=out)
                if image is not out:  # a transform that returns a new array
                    out[...] = image
                labels.append(label)
                skipped += more_skipped
            labels = self.stack_labels(labels)
        if self.mix is not None:
            rng = np.random.default_rng([self.seed, MIX_STREAM, self.order.shard_id, epoch, batch])
            images, labels = self.mix(images, labels, rng)
        if self.skipped_images is not None:
            self.skipped_images(skipped)
            return images, labels
        return images, labels, np.int32(skipped)

    def split_batch(self, epoch, indices):
        """(images [splits * B, ...], labels [splits * B], files skipped) of AugMix split views."""
        count, images, labels, skipped = len(indices), None, [], 0
        for position, index in enumerate(indices):
            outs = None if images is None else [images[k * count + position] for k in range(self.splits)]
            views, label, more_skipped = self.load(epoch, int(index), out=outs)
            if images is None:
                images = np.empty((self.splits * count,) + views[0].shape, views[0].dtype)
            for k, view in enumerate(views):
                target = images[k * count + position]
                if view is not target:
                    target[...] = view
            labels.append(label)
            skipped += more_skipped
        return images, np.concatenate([self.stack_labels(labels)] * self.splits), skipped

    def stack_labels(self, labels):
        """int32 [B] (the dataset's labels), or whatever the target transform's results stack to."""
        return np.asarray(labels, np.int32) if self.target_transform is None else np.stack(labels)


class SkippedImages:
    """Running count of unreadable images skipped; logs the total when it grows.

    Called by the worker threads, or with worker processes in the main process
    on the "skipped" column; shared, not copied, by the pipeline copies
    MindSpore makes per iterator.
    """

    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()

    def __deepcopy__(self, memo):
        return self

    def __call__(self, skipped):
        if skipped:
            with self.lock:
                self.count += int(skipped)
                _logger.warning("%d unreadable image(s) skipped in this run so far", self.count)
        return skipped


def create_loader(dataset, batch_size, drop_remainder=False, is_training=False, mixup=0.0, cutmix=0.0,
                  cutmix_prob=1.0, num_classes=1000, transform=None, target_transform=None, num_parallel_workers=None,
                  python_multiprocessing=False, separate=False, *, seed=0, start_epoch=0, skip_batches=0,
                  label_smoothing=0.0):
    """Batched pipeline over a dataset made by `create_dataset`: MindCV's signature and argument order, plus
    `seed`, `start_epoch`, `skip_batches` and `label_smoothing` by keyword.

    Args:
        dataset: the result of `create_dataset` (its files, order and sharding are reused).
        batch_size: images per batch.
        drop_remainder: drop the last incomplete batch.
        is_training: picks the default transform (training or evaluation) and allows mixup/cutmix, which
            happen only when training.
        mixup, cutmix: Beta-distribution alphas; > 0 enables each (when training). With both on,
            each batch uses cutmix with probability 0.5, else mixup.
        cutmix_prob: probability that a batch is mixed at all (timm's mixup prob; default 1.0 as timm and
            MindCV's train.py; MindCV's create_loader defaults to 0.0, which never mixes).
        num_classes: width of the soft targets.
        transform: `transform(data, rng) -> float32 [C, H, W]` (data: an encoded image, or CIFAR / MNIST
            pixels), from `create_transforms` (default: its defaults for the dataset and `is_training`); one
            that also takes `out=` writes straight into the batch. With `separate`, the tuple (primary,
            secondary, final) of `create_transforms(..., separate=True)`.
        target_transform: applied to each sample's label (an int32 scalar) before batching (and before
            mixing, which needs integer class indices); default none (labels are int32 already).
        num_parallel_workers: workers building batches (default 8), at most the
            CPU count; 1 runs in the main process.
        python_multiprocessing: run the workers as processes instead of threads
            (for a custom transform that holds the GIL). Default False.
        separate: AugMix split batches (training only, no mixing): each batch holds every image three times,
            clean and twice augmented, as [3 * B, C, H, W] (the B clean views first), with the labels
            repeated likewise: MindCV's `separate` loader, for the jsd loss.
        seed: seed of the augmentation and mixing draws.
        start_epoch: epoch number of the first pass (see the module docstring).
        skip_batches: batches left out at the start of every pass, never decoded:
            with `start_epoch`, the rest of an epoch that a resumed run finishes.
            Default 0.
        label_smoothing: folded into the soft targets when mixing is on
            (otherwise labels stay integers and the loss applies it).

    Returns:
        mindspore.dataset pipeline of ("image": float32 [B, C, H, W], "label":
        int32 [B], or float32 [B, num_classes] soft targets when mixup or cutmix
        is on), with attributes `class_names` and `skipped_images` (`.count`:
        unreadable images skipped so far). Each of its items is a whole batch; `get_batch_size()` returns
        `batch_size` and `get_dataset_size()` the batches per epoch.
    """
    if not hasattr(dataset, "image_source"):
        raise TypeError("create_loader needs a dataset made by mindcv.data.create_dataset")
    dataset_name = getattr(dataset, "dataset_name", "imagefolder")
    splits = 3 if separate else 1
    if separate:
        if not is_training:
            raise ValueError("create_loader(separate=True) makes AugMix split batches, for training only")
        if transform is None:
            transform = create_transforms(dataset_name=dataset_name, is_training=True, separate=True)
        if not (isinstance(transform, (tuple, list)) and len(transform) == 3 and all(map(callable, transform))):
            raise ValueError("create_loader(separate=True) takes the (primary, secondary, final) transforms of "
                             "create_transforms(..., is_training=True, separate=True)")
    elif transform is None:
        transform = create_transforms(dataset_name=dataset_name, is_training=is_training)
    mix = None
    if is_training and (mixup > 0 or cutmix > 0):
        if separate:
            raise ValueError("create_loader(separate=True) does not mix the split batches: set mixup and cutmix 0")
        mix = MixupCutmix(mixup, cutmix, cutmix_prob, 0.5, label_smoothing, num_classes)
    # MindSpore refuses more workers than CPUs; a recipe written for a large host still runs on a small one
    workers = min(num_parallel_workers or 8, os.cpu_count() or 1)
    processes = python_multiprocessing and workers > 1
    skipped_images = SkippedImages()
    # threads count skipped files in place; processes return them as a column (a map costs ~0.6 ms per image)
    source = BatchSource(dataset.image_source, dataset.epoch_order, transform, batch_size, drop_remainder, mix, seed,
                         skipped_images=None if processes else skipped_images, target_transform=target_transform,
                         splits=splits)
    loader = ds.GeneratorDataset(
        source, column_names=["image", "label", "skipped"] if processes else ["image", "label"],
        sampler=EpochKeySampler(len(source), start_epoch=start_epoch, skip_first=skip_batches),
        num_parallel_workers=workers, python_multiprocessing=processes,
    )
    if processes:
        loader = loader.map(skipped_images, input_columns=["skipped"]).project(["image", "label"])
    loader.class_names = dataset.class_names
    loader.skipped_images = skipped_images
    # each item is a whole batch, so MindSpore would report a batch size of 1
    loader.get_batch_size = functools.partial(int, batch_size)
    return loader
