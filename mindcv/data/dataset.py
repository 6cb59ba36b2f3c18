"""ImageNet-style folder datasets: `root/<split>/<class>/<image>`.

`create_dataset` returns a `mindspore.dataset.GeneratorDataset` with the columns
("image", "label"): "image" is the file's encoded bytes (uint8 1-D array),
"label" an int32 class index. Class indices follow the sorted class-folder
names (for ImageNet: synset order). The class names are available both as
`dataset.class_names` and, without building a dataset, as
`get_class_names(root, split)`.

Sample order (see `EpochOrder`): epoch `e` visits the samples in a
permutation drawn from `(seed, e)`, identical on every rank, and rank `r` of
`N` takes every N-th position of it, so shards are disjoint and together cover
the dataset. When the dataset size is not a multiple of N, the permutation is
padded with its first few samples so that every rank sees the same number of
samples (and hence batches): at most N-1 samples are seen twice per epoch.
"""

import os

import mindspore.dataset as ds
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
FOLDER_DATASETS = ("imagenet", "imagefolder")


def _split_dir(root, split):
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(
            f"dataset split folder not found: {split_dir} "
            f"(expected the layout <root>/{split}/<class>/<image>; check data_dir/root)"
        )
    return split_dir


def get_class_names(root, split="train"):
    """Sorted class-folder names of `root/split`; index i of the list is label i."""
    split_dir = _split_dir(root, split)
    names = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not names:
        raise ValueError(f"no class folders in {split_dir} (expected {split_dir}/<class>/<image>)")
    return names


def scan_image_folder(root, split="train"):
    """List `(path, label)` pairs of `root/split/<class>/<image>`, sorted by class then file name.

    Raises FileNotFoundError for a missing split folder and ValueError for a split
    without class folders or a class folder without images.
    """
    split_dir = _split_dir(root, split)
    samples = []
    for label, name in enumerate(get_class_names(root, split)):
        class_dir = os.path.join(split_dir, name)
        files = sorted(
            e.name for e in os.scandir(class_dir) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            raise ValueError(
                f"class folder has no images: {class_dir} "
                f"(add images with one of {', '.join(IMAGE_EXTENSIONS)} or remove the folder)"
            )
        samples.extend((os.path.join(class_dir, f), label) for f in files)
    return samples


class ImageFolderSource:
    """Random-access source: key `epoch * len(self) + i` gives (encoded bytes of file i as uint8 array, int32 label)."""

    def __init__(self, samples, class_names):
        self.paths = [p for p, _ in samples]
        self.labels = np.array([lbl for _, lbl in samples], dtype=np.int32)
        self.class_names = class_names

    def __len__(self):
        return len(self.paths)

    def read_bytes(self, index):
        with open(self.paths[index], "rb") as f:
            return f.read()

    def __getitem__(self, key):
        index = int(key) % len(self.paths)
        return np.frombuffer(self.read_bytes(index), dtype=np.uint8), self.labels[index]


class EpochOrder:
    """This rank's sample indices for each epoch.

    Epoch e visits `default_rng([seed, e]).permutation(num_images)` (or 0..n-1
    without shuffle), truncated to `num_samples`, padded to a multiple of
    `num_shards` by repeating its head (unless `pad_shards` is False: then the
    first ranks get one sample more, as evaluation wants every sample exactly
    once); rank `shard_id` takes positions `shard_id, shard_id + N, ...`.
    """

    def __init__(self, num_images, shuffle=True, num_samples=None, num_shards=None, shard_id=None, seed=0,
                 pad_shards=True):
        if (num_shards is None) != (shard_id is None):
            raise ValueError("num_shards and shard_id must be given together")
        self.num_shards = num_shards or 1
        self.shard_id = shard_id or 0
        if not 0 <= self.shard_id < self.num_shards:
            raise ValueError(f"shard_id {shard_id} is outside 0..{self.num_shards - 1}")
        self.num_images = num_images
        self.epoch_samples = min(num_samples, num_images) if num_samples else num_images
        self.shuffle = shuffle
        self.seed = seed
        self.pad_shards = pad_shards

    def __len__(self):
        """Samples per epoch on this rank."""
        if self.pad_shards:
            return -(-self.epoch_samples // self.num_shards)
        return len(range(self.shard_id, self.epoch_samples, self.num_shards))

    def indices(self, epoch):
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_images)
        else:
            order = np.arange(self.num_images)
        order = order[: self.epoch_samples]
        if self.pad_shards:
            order = np.resize(order, len(self) * self.num_shards)  # np.resize repeats the head
        return order[self.shard_id :: self.num_shards]


class EpochKeySampler(ds.Sampler):
    """Yields `epoch * keys_per_epoch + k` for k = 0..keys_per_epoch-1, or for k in `order.indices(epoch)`.

    MindSpore calls `__iter__` once per epoch; each call is the next epoch,
    starting at `start_epoch`. The source decodes a key with
    `divmod(key, keys_per_epoch)`, so workers know the epoch of every item.
    Every pass leaves out its first `skip_first` keys: the rest of one epoch for a
    run resumed in its middle (the items before were trained on and are never
    decoded; MindSpore wants the same number of items from every pass).
    """

    def __init__(self, keys_per_epoch, order=None, start_epoch=0, skip_first=0):
        self.keys_per_epoch = keys_per_epoch
        self.order = order
        self.next_epoch = start_epoch
        self.skip = skip_first
        super().__init__()  # reads len(self)

    def __len__(self):
        return (len(self.order) if self.order is not None else self.keys_per_epoch) - self.skip

    def __iter__(self):
        epoch = self.next_epoch
        self.next_epoch += 1
        keys = self.order.indices(epoch) if self.order is not None else range(self.keys_per_epoch)
        for k in keys[self.skip:]:
            yield epoch * self.keys_per_epoch + int(k)


def create_dataset(name, root, split="train", shuffle=True, num_samples=None, num_shards=None, shard_id=None,
                   num_parallel_workers=None, download=False, seed=0, pad_shards=True):
    """Build the raw dataset of `root/split/<class>/<image>` files.

    Args:
        name: "imagenet" or "imagefolder" (same reader; any ImageNet-style folder).
        root: folder holding the split folders.
        split: split folder name, e.g. "train" or "val".
        shuffle: visit samples in a per-epoch random order drawn from (seed, epoch).
        num_samples: samples per epoch, taken from the head of the epoch order before
            sharding (None: all).
        num_shards, shard_id: data-parallel sharding; every rank gets
            ceil(samples / num_shards) samples (see the module docstring).
        num_parallel_workers: reader processes when this dataset is iterated
            directly (default 1); `create_loader` has its own setting.
        download: only False is possible; these datasets cannot be downloaded.
        seed: seed of the sample order.
        pad_shards: pad every shard to ceil(samples / num_shards) samples by
            repeating a few, so all ranks take the same number of steps
            (training). False: each sample exactly once, shards differ by at
            most one sample (evaluation, whose counts are summed over ranks).

    Returns:
        GeneratorDataset with columns ("image": encoded bytes, uint8 [n]; "label":
        int32), plus the attributes `class_names` (sorted folder names) and
        `image_source`/`epoch_order` which `create_loader` uses to build the training or
        evaluation pipeline.
    """
    if name.lower() not in FOLDER_DATASETS:
        raise ValueError(f"unknown dataset name '{name}' (supported: {', '.join(FOLDER_DATASETS)})")
    if download:
        raise ValueError(
            f"dataset '{name}' cannot be downloaded automatically; place it at {root}/{split}/<class>/<image> "
            "and set download: False"
        )
    samples = scan_image_folder(root, split)
    source = ImageFolderSource(samples, get_class_names(root, split))
    order = EpochOrder(len(source), shuffle, num_samples, num_shards, shard_id, seed, pad_shards)
    dataset = ds.GeneratorDataset(source, column_names=["image", "label"],
                                  sampler=EpochKeySampler(len(source), order),
                                  num_parallel_workers=num_parallel_workers or 1, python_multiprocessing=False)
    dataset.class_names = source.class_names
    dataset.image_source = source
    dataset.epoch_order = order
    return dataset
