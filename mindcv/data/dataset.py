"""Datasets: ImageNet-style folders `root/<split>/<class>/<image>`, and CIFAR-10, CIFAR-100 and MNIST from
their standard binary files.

`create_dataset` returns a `mindspore.dataset.GeneratorDataset` with the columns ("image", "label"). For a
folder, "image" is the file's encoded bytes (uint8 1-D array) and class indices follow the sorted
class-folder names (for ImageNet: synset order); the class names are available both as
`dataset.class_names` and, without building a dataset, as `get_class_names(root, split)`. For CIFAR and MNIST,
"image" is the decoded uint8 [H, W, C] array (32x32x3, 28x28x1), as MindSpore's own datasets of them give it,
and the class names are the dataset's (CIFAR-10's ten names, CIFAR-100's fine label names, "0".."9").

Sample order (see `EpochOrder`): epoch `e` visits the samples in a
permutation drawn from `(seed, e)`, identical on every rank, and rank `r` of
`N` takes every N-th position of it, so shards are disjoint and together cover
the dataset. When the dataset size is not a multiple of N, the permutation is
padded with its first few samples so that every rank sees the same number of
samples (and hence batches): at most N-1 samples are seen twice per epoch.
Repeated augmentation (`num_aug_repeats`, see `RepeatedAugmentationOrder`) repeats each sample of that order
several times in a row before the ranks take their positions.
"""

import gzip
import io
import os
import struct

import mindspore.dataset as ds
import numpy as np
from PIL import Image

from .dataset_download import DOWNLOADS, get_dataset_download_root

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
FOLDER_DATASETS = ("imagenet", "imagefolder", "")
BINARY_DATASETS = ("cifar10", "cifar100", "mnist")
# split name -> the parts of a binary dataset it holds (MindSpore's usage "train" / "test" / "all"; MindCV's
# validation split "val" is the test set)
BINARY_SPLITS = {"train": ("train",), "val": ("test",), "test": ("test",), "all": ("train", "test")}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


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
    """Random-access source: key `epoch * len(self) + i` gives (encoded bytes of file i as uint8 array, int32 label).

    What the loader uses: `read(i)` (the encoded file, for the transforms), `labels`, `paths` (to name a file
    it skips), `class_names`; `read_bytes(i)` is the encoded file too.
    """

    def __init__(self, samples, class_names):
        self.paths = [p for p, _ in samples]
        self.labels = np.array([lbl for _, lbl in samples], dtype=np.int32)
        self.class_names = class_names

    def __len__(self):
        return len(self.paths)

    def read_bytes(self, index):
        with open(self.paths[index], "rb") as f:
            return f.read()

    read = read_bytes  # what the transforms take: the encoded file

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


class ArrayImageSource:
    """Random-access source of decoded images: key `epoch * len(self) + i` gives (uint8 [H, W, C] pixels of
    image i, int32 label).

    `read(i)` gives the pixels ([H, W, C], or [H, W] for grayscale), which the transforms take as they are;
    `read_bytes(i)` the image encoded as PNG; `paths[i]` names the file and record ("file#record").
    """

    def __init__(self, images, labels, class_names, paths):
        self.images = images
        self.labels = np.asarray(labels, np.int32)
        self.class_names = list(class_names)
        self.paths = paths

    def __len__(self):
        return len(self.labels)

    def read(self, index):
        return self.images[index]

    def read_bytes(self, index):
        buffer = io.BytesIO()
        Image.fromarray(self.images[index]).save(buffer, "PNG")
        return buffer.getvalue()

    def __getitem__(self, key):
        index = int(key) % len(self.labels)
        image = self.images[index]
        return (image[:, :, None] if image.ndim == 2 else image), self.labels[index]


def _find(root, candidates, what, layout):
    """The first folder of `candidates` (relative to root) holding every file of `what`, else FileNotFoundError
    naming what is expected where."""
    for folder in candidates:
        path = os.path.join(root, folder)
        if all(os.path.isfile(os.path.join(path, name)) for name in what):
            return path
    places = " or ".join(os.path.join(root, folder).rstrip(os.sep) for folder in candidates)
    raise FileNotFoundError(f"{layout} not found: expected {', '.join(what)} in {places} (pass download=True "
                            "to download it)")


def _read_cifar(paths, label_bytes, num_labels):
    """(images uint8 [N, 32, 32, 3], fine labels int32 [N], coarse labels or None, record names) of CIFAR binary
    files: records of `label_bytes` label bytes (CIFAR-100: coarse, fine) and 3072 pixel bytes (the red, green,
    blue planes, 32x32 each, row by row)."""
    record = label_bytes + 3 * 32 * 32
    parts, names = [], []
    for path in paths:
        raw = np.fromfile(path, np.uint8)
        if raw.size == 0 or raw.size % record:
            raise ValueError(f"{path} is not a CIFAR binary file: {raw.size} bytes is not a whole number of "
                             f"{record}-byte records")
        parts.append(raw.reshape(-1, record))
        names.extend(f"{path}#{i}" for i in range(len(parts[-1])))
    records = np.concatenate(parts) if len(parts) > 1 else parts[0]
    labels = records[:, label_bytes - 1].astype(np.int32)
    if labels.max() >= num_labels:
        raise ValueError(f"{', '.join(paths)}: a label of {int(labels.max())}, but the dataset has {num_labels} "
                         "classes (not this dataset's binary files?)")
    coarse = records[:, 0].astype(np.int32) if label_bytes == 2 else None
    images = np.ascontiguousarray(records[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels, coarse, names


def _read_names(path, count):
    """Class names of a CIFAR meta file (one per line), or None when it is missing or does not list `count`."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        names = [line.strip() for line in f if line.strip()]
    return names if len(names) == count else None


def _cifar_source(name, root, parts):
    # the file names and the archive's folder are the download's (where download=True puts them)
    files_of = DOWNLOADS[name]
    label_bytes, classes = (1, 10) if name == "cifar10" else (2, 100)
    files = [*(files_of.train_files if "train" in parts else ()), *(files_of.test_files if "test" in parts else ())]
    folder = _find(root, ("", files_of.folder), files,
                   f"the {files_of.title} binary version ({files_of.resources[0][0]})")
    images, labels, coarse, paths = _read_cifar([os.path.join(folder, f) for f in files], label_bytes, classes)
    if name == "cifar10":
        class_names = _read_names(os.path.join(folder, "batches.meta.txt"), 10) or list(CIFAR10_CLASSES)
    else:
        class_names = (_read_names(os.path.join(folder, "fine_label_names.txt"), 100)
                       or [str(i) for i in range(100)])
    source = ArrayImageSource(images, labels, class_names, paths)
    if coarse is not None:
        source.coarse_labels = coarse
        source.coarse_class_names = (_read_names(os.path.join(folder, "coarse_label_names.txt"), 20)
                                     or [str(i) for i in range(20)])
    return source


def _read_idx(path, ndim):
    """The uint8 array of an idx file (MNIST's format; gzip-compressed when the name ends in .gz)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"{path} cannot be read ({error})") from None
    header = 4 + 4 * ndim
    if len(data) < header or data[:4] != bytes((0, 0, 8, ndim)):
        raise ValueError(f"{path} is not an idx file of {ndim}-D unsigned bytes (its first bytes are "
                         f"{data[:4].hex() or 'missing'}, expected 000008{ndim:02x})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(f"{path}: the header promises {shape} bytes of data, the file holds {len(data) - header}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _mnist_file(root, name):
    """Path of MNIST's file `name` in root or root/MNIST/raw (torchvision's layout), also spelt with a dot before
    "idx" or gzip-compressed; None when missing."""
    spellings = (name, name.replace("-idx", ".idx"))
    for folder in (root, os.path.join(root, "MNIST", "raw")):
        for spelling in spellings:
            for suffix in ("", ".gz"):
                path = os.path.join(folder, spelling + suffix)
                if os.path.isfile(path):
                    return path
    return None


def _mnist_source(root, parts):
    images, labels, paths = [], [], []
    for part in parts:
        prefix = "train" if part == "train" else "t10k"
        names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        found = [_mnist_file(root, n) for n in names]
        if None in found:
            raise FileNotFoundError(f"MNIST not found: expected {' and '.join(names)} (or .gz) in {root} or "
                                    f"{os.path.join(root, 'MNIST', 'raw')} (pass download=True to download it)")
        part_images, part_labels = _read_idx(found[0], 3), _read_idx(found[1], 1)
        if len(part_images) != len(part_labels):
            raise ValueError(f"{found[0]} holds {len(part_images)} images but {found[1]} {len(part_labels)} labels")
        if len(part_labels) and part_labels.max() > 9:
            raise ValueError(f"{found[1]}: a label of {int(part_labels.max())}, MNIST has 10 classes")
        images.append(part_images)
        labels.append(part_labels)
        paths.extend(f"{found[0]}#{i}" for i in range(len(part_labels)))
    return ArrayImageSource(np.concatenate(images), np.concatenate(labels), [str(i) for i in range(10)], paths)


class RepeatedAugmentationOrder:
    """The sample order of repeated augmentation (`num_aug_repeats`, MindCV's RepeatAugSampler, after DeiT):
    epoch e's order before sharding (`EpochOrder`: seeded permutation, num_samples) with each sample repeated
    `repeats` times in a row, padded with its head to a multiple of the ranks; rank r takes positions
    r, r + N, ... and keeps as many as `order` gives it, so an epoch has its usual number of steps and shows
    about 1/repeats of the images, each `repeats` times (on one device in neighbouring batch positions, on N
    devices on different ranks). Copy k of sample i is index `i + k * num_images`: the loader reads image
    `index % num_images` and draws the augmentation from the index, so the copies are augmented differently.

    Sharding: the ranks together take the first N * len(order) positions of the repeated order, each position
    once, so no two ranks (and no two positions of one rank) see the same copy of an image; the images seen are
    the first ceil(N * len(order) / repeats) of the epoch's permutation.
    """

    def __init__(self, order, repeats):
        if repeats < 1:
            raise ValueError(f"num_aug_repeats must be >= 1 to repeat samples, got {repeats}")
        self.whole = EpochOrder(order.num_images, order.shuffle, order.epoch_samples, seed=order.seed)
        self.repeats = repeats
        self.num_images = order.num_images
        self.num_shards, self.shard_id = order.num_shards, order.shard_id
        self.length = len(order)

    def __len__(self):
        """Samples per epoch on this rank."""
        return self.length

    def indices(self, epoch):
        whole = self.whole.indices(epoch)
        copies = (whole[:, None] + self.whole.num_images * np.arange(self.repeats)).reshape(-1)
        copies = np.resize(copies, -(-len(copies) // self.num_shards) * self.num_shards)  # repeats the head
        return copies[self.shard_id::self.num_shards][:self.length]


def create_dataset(name="", root=None, split="train", shuffle=True, num_samples=None, num_shards=None, shard_id=None,
                   num_parallel_workers=None, download=False, num_aug_repeats=0, *, seed=0, pad_shards=True, **kwargs):
    """Build the raw dataset: MindCV's signature and argument order, plus `seed` and `pad_shards` by keyword.

    Args:
        name: "imagenet", "imagefolder" or "" (same reader: any folder `root/split/<class>/<image>`), or
            "cifar10", "cifar100", "mnist" (their standard binary files: CIFAR-10's data_batch_1.bin ..
            data_batch_5.bin and test_batch.bin, in root or root/cifar-10-batches-bin; CIFAR-100's train.bin and
            test.bin, in root or root/cifar-100-binary; MNIST's train-images-idx3-ubyte, train-labels-idx1-ubyte,
            t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, possibly .gz, in root or root/MNIST/raw).
        root: folder holding the split folders or the binary files (default:
            `get_dataset_download_root()/<name>`, as MindCV).
        split: a folder dataset's split folder name, e.g. "train" or "val"; for CIFAR and MNIST "train", "val"
            or "test" (both the test set), or "all" (train and test).
        shuffle: visit samples in a per-epoch random order drawn from (seed, epoch).
        num_samples: samples per epoch, taken from the head of the epoch order before
            sharding (None: all).
        num_shards, shard_id: data-parallel sharding; every rank gets
            ceil(samples / num_shards) samples (see the module docstring).
        num_parallel_workers: reader threads when this dataset is iterated
            directly (default 1); `create_loader` has its own setting.
        download: CIFAR and MNIST: download the standard files into root when they are not there (see
            `mindcv.data.dataset_download`); folder datasets cannot be downloaded.
        num_aug_repeats: repeated augmentation (> 1): each epoch takes the first 1/num_aug_repeats of its
            sample order and shows every image num_aug_repeats times, differently augmented, spread over the
            ranks; the samples (and steps) per epoch stay the same. 0 or 1: off. See
            `RepeatedAugmentationOrder`.
        seed: seed of the sample order.
        pad_shards: pad every shard to ceil(samples / num_shards) samples by
            repeating a few, so all ranks take the same number of steps
            (training). False: each sample exactly once, shards differ by at
            most one sample (evaluation, whose counts are summed over ranks).
        **kwargs: MindCV passes these to MindSpore's dataset classes; these datasets are not MindSpore's, so
            any is a TypeError.

    Returns:
        GeneratorDataset with columns ("image": encoded bytes, uint8 [n], or for CIFAR / MNIST the decoded
        uint8 [H, W, C]; "label": int32), plus the attributes `class_names`, `num_classes()` (as MindCV sets
        it), `dataset_name`, and `image_source` / `epoch_order` which `create_loader` uses to build the
        training or evaluation pipeline. CIFAR-100's coarse labels are `image_source.coarse_labels`.
    """
    if kwargs:
        raise TypeError(f"create_dataset() got unexpected keyword argument(s) {', '.join(sorted(kwargs))} (MindCV "
                        "passes extra arguments to MindSpore's dataset classes; mindcv's datasets take none)")
    if num_aug_repeats < 0:
        raise ValueError(f"num_aug_repeats must be >= 0 (0 or 1: off), got {num_aug_repeats}")
    key = (name or "").lower()
    if key not in FOLDER_DATASETS + BINARY_DATASETS:
        raise ValueError(f"unknown dataset name '{name}' (supported: imagenet, imagefolder, "
                         f"{', '.join(BINARY_DATASETS)})")
    if root is None:
        root = os.path.join(get_dataset_download_root(), key or "imagefolder")
    if key in BINARY_DATASETS:
        if split not in BINARY_SPLITS:
            raise ValueError(f"{name} has no split '{split}' (splits: {', '.join(BINARY_SPLITS)})")
        if download:
            DOWNLOADS[key](root).download()
        parts = BINARY_SPLITS[split]
        source = _mnist_source(root, parts) if key == "mnist" else _cifar_source(key, root, parts)
    else:
        if download:
            raise ValueError(
                f"dataset '{name}' cannot be downloaded automatically; place it at {root}/{split}/<class>/<image> "
                "and set download: False"
            )
        samples = scan_image_folder(root, split)
        source = ImageFolderSource(samples, get_class_names(root, split))
    order = EpochOrder(len(source), shuffle, num_samples, num_shards, shard_id, seed, pad_shards)
    if num_aug_repeats > 1:
        order = RepeatedAugmentationOrder(order, int(num_aug_repeats))
    dataset = ds.GeneratorDataset(source, column_names=["image", "label"],
                                  sampler=EpochKeySampler(len(source), order),
                                  num_parallel_workers=num_parallel_workers or 1, python_multiprocessing=False)
    num_classes = len(source.class_names)
    dataset.class_names = source.class_names
    dataset.num_classes = lambda: num_classes
    dataset.dataset_name = key or "imagefolder"
    dataset.image_source = source
    dataset.epoch_order = order
    return dataset
