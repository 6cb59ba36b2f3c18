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
from .transforms import SampleTransform, TransformList, UnreadableImageError, create_transforms, takes_argument

_logger = logging.getLogger(__name__)
AUGMENT_STREAM, MIX_STREAM = 0, 1


def _takes_out(transform):
    """Whether `transform` accepts `out=` (mindcv's transforms do: they write straight into the batch)."""
    return takes_argument(transform, "out")


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
            self.final_takes_erase = takes_argument(transform[2], "erase")
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
                    if np.shape(image) != out.shape:
                        raise ValueError(f"the transform gave images of different shapes in one batch "
                                         f"({first.shape} and {np.shape(image)}): end it with a fixed-size crop or "
                                         "resize")
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


def per_sample_transform(transform):
    """The callable `create_loader` applies to each sample, `f(data, rng[, out=])`, for its `transform`: the fused
    transform of an unchanged `create_transforms` list; the operations of any other list or tuple (or of a single
    MindSpore operation or one-argument function) one by one (`SampleTransform`); a callable that takes the
    generator (`transform(data, rng)`, mindcv's own contract) as it is."""
    if isinstance(transform, TransformList) and transform.fused() is not None:
        return transform.fused()
    if isinstance(transform, (list, tuple)):
        return SampleTransform(transform)
    if not callable(transform):
        raise TypeError(f"transform must be a list of operations or a callable, got {transform!r}")
    try:
        positional = [p for p in inspect.signature(transform).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):  # MindSpore's C++ operations have no Python signature
        positional = []
    return transform if takes_argument(transform, "rng") or len(positional) >= 2 else SampleTransform([transform])


class _LabelsInOrder:
    """A list of label operations applied in order (a class, so that worker processes can take it)."""

    def __init__(self, operations):
        self.operations = list(operations)

    def __call__(self, label):
        for operation in self.operations:
            label = operation(label)
        return label


def _label_transform(target_transform):
    """`target_transform` (a callable or a list of them, applied in order) as one callable, or None."""
    if target_transform is None or callable(target_transform):
        return target_transform
    return _LabelsInOrder(target_transform)


def create_loader(dataset, batch_size, drop_remainder=False, is_training=False, mixup=0.0, cutmix=0.0,
                  cutmix_prob=1.0, num_classes=1000, transform=None, target_transform=None, num_parallel_workers=None,
                  python_multiprocessing=False, separate=False, *, seed=0, start_epoch=0, skip_batches=0,
                  label_smoothing=0.0):
    """Batched pipeline over a dataset: MindCV's signature and argument order, plus `seed`, `start_epoch`,
    `skip_batches` and `label_smoothing` by keyword.

    Args:
        dataset: the result of `create_dataset` (its files, order and sharding are reused, and the pipeline is
            mindcv's: whole batches built by the workers, reproducible per epoch and rank, resumable), or any
            other MindSpore dataset whose first two columns are (image, label), e.g. a user's GeneratorDataset
            of (encoded image as uint8 array, label): that one goes through MindSpore's map and batch, as in
            MindCV (its order is the dataset's; augmentation not reproducible; no start_epoch / skip_batches).
        batch_size: images per batch.
        drop_remainder: drop the last incomplete batch.
        is_training: picks the default transform (training or evaluation) and allows mixup/cutmix, which
            happen only when training.
        mixup, cutmix: Beta-distribution alphas; > 0 enables each (when training). With both on,
            each batch uses cutmix with probability 0.5, else mixup.
        cutmix_prob: probability that a batch is mixed at all (timm's mixup prob; default 1.0 as timm and
            MindCV's train.py; MindCV's create_loader defaults to 0.0, which never mixes).
        num_classes: width of the soft targets.
        transform: a list of per-sample operations applied in order (MindCV's): the list `create_transforms`
            returns (default: its defaults for the dataset and `is_training`), unchanged (then fused: the fast
            path) or changed, or any list of mindcv's operations, `mindspore.dataset.vision` / `transforms`
            operations and Python callables (see `SampleTransform`: those with an `rng` parameter draw from the
            per-sample generator). Also a callable `transform(data, rng)` (data: an encoded image, or CIFAR /
            MNIST pixels); one that also takes `out=` writes straight into the batch. With `separate`, the tuple
            (primary, secondary, final) of `create_transforms(..., separate=True)`.
        target_transform: a callable, or a list of them applied in order, on each sample's label (an int32
            scalar) before batching (and before mixing, which needs integer class indices); default none.
        num_parallel_workers: workers building batches (default 8), at most the
            CPU count; 1 runs in the main process.
        python_multiprocessing: run the workers as processes instead of threads
            (for a custom transform that holds the GIL). Default False.
        separate: AugMix split batches (no mixing): each batch holds every image three times, clean and twice
            augmented, as [3 * B, C, H, W] (the B clean views first), with the labels repeated likewise:
            MindCV's `separate` loader, for the jsd loss. Ignored when not `is_training`, as in MindCV.
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
    dataset_name = getattr(dataset, "dataset_name", "imagefolder")
    separate = separate and is_training  # as MindCV: evaluation batches are never split
    splits = 3 if separate else 1
    if separate:
        if transform is None:
            transform = create_transforms(dataset_name=dataset_name, is_training=True, separate=True)
        if not (isinstance(transform, tuple) and len(transform) == 3 and all(map(callable, transform))):
            raise ValueError("create_loader(separate=True) takes the (primary, secondary, final) transforms of "
                             "create_transforms(..., is_training=True, separate=True)")
        transform = tuple(map(per_sample_transform, transform))
    else:
        if transform is None:
            transform = create_transforms(dataset_name=dataset_name, is_training=is_training)
        transform = per_sample_transform(transform)
    target_transform = _label_transform(target_transform)
    mix = None
    if is_training and (mixup > 0 or cutmix > 0):
        if separate:
            raise ValueError("create_loader(separate=True) does not mix the split batches: set mixup and cutmix 0")
        mix = MixupCutmix(mixup, cutmix, cutmix_prob, 0.5, label_smoothing, num_classes)
    # MindSpore refuses more workers than CPUs; a recipe written for a large host still runs on a small one
    workers = min(num_parallel_workers or 8, os.cpu_count() or 1)
    processes = python_multiprocessing and workers > 1
    if not hasattr(dataset, "image_source"):
        if separate or start_epoch or skip_batches:
            raise ValueError("separate, start_epoch and skip_batches need a dataset made by "
                             "mindcv.data.create_dataset (this one's order and sharding are MindSpore's)")
        return _mindspore_pipeline(dataset, batch_size, drop_remainder, transform, target_transform, mix, workers,
                                   processes)
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


class _ImageMap:
    """The per-sample transform as a MindSpore map operation (a class, so that worker processes can take it)."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, data):
        return np.asarray(self.transform(data, np.random.default_rng()))


class _LabelMap:
    """target_transform, then integer labels as int32 (as mindcv's own loader gives them)."""

    def __init__(self, target_transform):
        self.target_transform = target_transform

    def __call__(self, label):
        label = np.asarray(label if self.target_transform is None else self.target_transform(label))
        return label.astype(np.int32) if np.issubdtype(label.dtype, np.integer) else label


class _BatchMix:
    """mixup / cutmix of a batch, with a fresh generator."""

    def __init__(self, mix):
        self.mix = mix

    def __call__(self, images, labels):
        return self.mix(images, labels, np.random.default_rng())


def _mindspore_pipeline(dataset, batch_size, drop_remainder, transform, target_transform, mix, workers, processes):
    """MindCV's pipeline over any other MindSpore dataset of (image, label) columns (a user's GeneratorDataset,
    ImageFolderDataset, a `split` or `shuffle` of `create_dataset`'s result): `map` of the per-sample transform,
    `map` of the labels (target_transform, then integers as int32), `batch`, then mixup / cutmix per batch.
    The order and sharding are the dataset's; the augmentation and mixing draws come from fresh generators, so
    they are not reproducible (`create_dataset`'s datasets are)."""
    image_column, label_column = dataset.get_col_names()[:2]
    loader = dataset.map(operations=_ImageMap(transform), input_columns=[image_column],
                         num_parallel_workers=workers, python_multiprocessing=processes)
    loader = loader.map(operations=_LabelMap(target_transform), input_columns=[label_column])
    loader = loader.batch(batch_size, drop_remainder=drop_remainder)
    if mix is not None:
        loader = loader.map(operations=_BatchMix(mix), input_columns=[image_column, label_column])
    loader.class_names = getattr(dataset, "class_names", None)
    loader.skipped_images = SkippedImages()  # unreadable images are errors here: MindSpore's pipeline stops
    return loader
