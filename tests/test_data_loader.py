"""Folder datasets, sharding, epoch determinism, bad files and the batched loader of mindcv.data."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from mindcv.data import EpochOrder, create_dataset, create_loader, create_transforms, get_class_names

MNIST = os.path.join(os.path.dirname(__file__), "..", "datasets", "mnist5k")


def small_transform(is_training):
    return create_transforms("imagefolder", image_resize=16, is_training=is_training,
                             auto_augment="randaug-m9-mstd0.5-inc1" if is_training else None, re_prob=0.25,
                             re_value="random")


def batches(loader, epochs=1):
    iterator = loader.create_tuple_iterator(num_epochs=epochs, output_numpy=True)
    return [[(images, labels) for images, labels in iterator] for _ in range(epochs)]


def make_folder(root, classes=("cat", "dog"), per_class=3, size=(20, 16)):
    rng = np.random.default_rng(0)
    for name in classes:
        os.makedirs(root / "train" / name)
        for i in range(per_class):
            array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(array).save(root / "train" / name / f"{i}.png")
    return root


# ---- dataset ------------------------------------------------------------------------------------------------------

def test_mnist_dataset_classes_and_raw_columns():
    dataset = create_dataset("imagefolder", MNIST, "val", shuffle=False)
    assert dataset.class_names == get_class_names(MNIST, "val") == [str(i) for i in range(10)]
    assert dataset.get_dataset_size() == 1000
    rows = list(dataset.create_tuple_iterator(output_numpy=True))
    image, label = rows[0]
    assert image.dtype == np.uint8 and image.tobytes()[:4] == b"\x89PNG"
    assert label.dtype == np.int32
    labels = [int(r[1]) for r in rows]
    assert labels == sorted(labels) and np.bincount(labels).tolist() == [100] * 10


def test_class_indices_follow_sorted_folder_names(tmp_path):
    make_folder(tmp_path, classes=("zebra", "ant", "n01440764"))
    dataset = create_dataset("imagenet", str(tmp_path), shuffle=False)
    assert dataset.class_names == ["ant", "n01440764", "zebra"]
    paths = dataset.image_source.paths
    assert [int(v) for v in dataset.image_source.labels] == [0] * 3 + [1] * 3 + [2] * 3
    assert os.path.basename(os.path.dirname(paths[3])) == "n01440764"


def test_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset name 'cifar'"):
        create_dataset("cifar", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "train")):
        create_dataset("imagenet", str(tmp_path))
    os.makedirs(tmp_path / "train")
    with pytest.raises(ValueError, match="no class folders in " + str(tmp_path / "train")):
        create_dataset("imagenet", str(tmp_path))
    os.makedirs(tmp_path / "train" / "empty")
    (tmp_path / "train" / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="class folder has no images: " + str(tmp_path / "train" / "empty")):
        create_dataset("imagenet", str(tmp_path))
    with pytest.raises(ValueError, match="cannot be downloaded"):
        create_dataset("imagenet", str(tmp_path), download=True)


# ---- sampler: sharding and epochs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size, shards", [(4000, 8), (1003, 4), (10, 3)])
def test_shards_disjoint_covering_equal_length(size, shards):
    parts = [EpochOrder(size, num_shards=shards, shard_id=r, seed=7).indices(2) for r in range(shards)]
    assert len({len(p) for p in parts}) == 1
    everything = np.concatenate(parts)
    assert set(everything.tolist()) == set(range(size))
    assert len(everything) - size == (-size) % shards < shards  # only the padding repeats samples


@pytest.mark.parametrize("size,shards", [(10, 3), (9, 3), (2, 4)])
def test_unpadded_shards_hold_every_sample_once(size, shards):
    parts = [EpochOrder(size, num_shards=shards, shard_id=r, seed=7, pad_shards=False) for r in range(shards)]
    everything = np.concatenate([p.indices(2) for p in parts])
    assert sorted(everything.tolist()) == list(range(size))
    assert [len(p) for p in parts] == [len(p.indices(2)) for p in parts]


def test_epoch_order_depends_on_seed_and_epoch_only():
    sampler = EpochOrder(100, seed=3)
    assert np.array_equal(sampler.indices(4), EpochOrder(100, seed=3).indices(4))
    assert not np.array_equal(sampler.indices(4), sampler.indices(5))
    assert not np.array_equal(sampler.indices(4), EpochOrder(100, seed=4).indices(4))
    assert np.array_equal(EpochOrder(100, shuffle=False).indices(9), np.arange(100))
    assert len(EpochOrder(100, num_samples=30, num_shards=4, shard_id=0).indices(0)) == 8
    with pytest.raises(ValueError):
        EpochOrder(10, num_shards=2)


# ---- loader -------------------------------------------------------------------------------------------------------

def test_train_loader_shapes_dtypes_and_soft_targets():
    dataset = create_dataset("imagefolder", MNIST, "train", num_samples=40)
    loader = create_loader(dataset, 16, is_training=True, mixup=0.8, cutmix=1.0, label_smoothing=0.1,
                           num_classes=10, transform=small_transform(True), num_parallel_workers=1)
    (epoch,) = batches(loader)
    assert [len(images) for images, _ in epoch] == [16, 16, 8]
    images, labels = epoch[0]
    assert images.shape == (16, 3, 16, 16) and images.dtype == np.float32
    assert labels.shape == (16, 10) and labels.dtype == np.float32 and np.allclose(labels.sum(1), 1, atol=1e-5)
    assert labels.min() >= 0.01 - 1e-6
    assert loader.class_names == [str(i) for i in range(10)]


def test_eval_loader_integer_labels_and_value_range():
    dataset = create_dataset("imagefolder", MNIST, "val", shuffle=False, num_samples=20)
    loader = create_loader(dataset, 8, drop_remainder=True, transform=small_transform(False),
                           num_parallel_workers=1)
    (epoch,) = batches(loader)
    assert len(epoch) == 2
    images, labels = epoch[0]
    assert labels.dtype == np.int32 and labels.tolist() == [0] * 8
    # MNIST: black background and white strokes, normalized with the ImageNet mean/std
    assert np.isclose(images.min(), -0.485 / 0.229, atol=0.01) and images.max() > 2.0


def test_resumed_run_sees_the_same_epochs():
    def loader(start_epoch, workers):
        dataset = create_dataset("imagefolder", MNIST, "train", num_samples=24, seed=5)
        return create_loader(dataset, 8, is_training=True, mixup=0.8, cutmix=1.0, num_classes=10,
                             transform=small_transform(True), num_parallel_workers=workers, seed=11,
                             start_epoch=start_epoch)

    full = batches(loader(0, 1), epochs=2)
    resumed = batches(loader(1, 64), epochs=1)  # more workers than CPUs: capped at the CPU count
    for (a_img, a_lbl), (b_img, b_lbl) in zip(full[1], resumed[0]):
        assert np.array_equal(a_img, b_img) and np.array_equal(a_lbl, b_lbl)
    assert not np.array_equal(full[0][0][0], full[1][0][0])
    assert not np.array_equal(full[0][0][1], full[1][0][1])


def test_sharded_loaders_have_equal_batches_and_disjoint_samples(tmp_path):
    """15 images over 4 ranks: every rank gets ceil(15 / 4) = 4 samples (batches of 3 and 1); position p of the
    epoch's order goes to rank p % 4, the order being padded to 16 by repeating its head, so the ranks together see
    every image once plus the epoch's first image again (as the last rank's last sample)."""
    make_folder(tmp_path, classes=("a", "b", "c"), per_class=5)
    num_shards, epochs, seed = 4, 2, 7
    delivered = {}  # rank -> per epoch, the images the loader gave, as indices into image_source.paths
    for rank in range(num_shards):
        dataset = create_dataset("imagefolder", str(tmp_path), num_shards=num_shards, shard_id=rank, seed=seed)
        paths, labels = list(dataset.image_source.paths), [int(v) for v in dataset.image_source.labels]
        index_of = {}
        for i, path in enumerate(paths):
            with open(path, "rb") as f:
                index_of[f.read()] = i
        assert len(index_of) == len(paths) == 15  # the random images are all different files
        # the "image" of a sample is the index of the file whose bytes the loader decoded
        loader = create_loader(dataset, 3, num_parallel_workers=1,
                               transform=lambda data, rng: np.full((1, 1, 1), index_of[bytes(data)], np.float32))
        delivered[rank] = []
        for epoch in batches(loader, epochs):
            assert [len(batch_labels) for _, batch_labels in epoch] == [3, 1]
            indices = [int(v) for images, _ in epoch for v in images.reshape(-1)]
            assert [int(v) for _, batch_labels in epoch for v in batch_labels] == [labels[i] for i in indices]
            delivered[rank].append(indices)
    for epoch in range(epochs):
        # interleave the ranks back into the epoch's order: position p = k * num_shards + rank
        order = [delivered[p % num_shards][epoch][p // num_shards] for p in range(16)]
        assert sorted(order[:15]) == list(range(15))  # disjoint shards that cover the dataset
        assert order[15] == order[0]  # the padding sample repeats the head of the order
        # the documented order: a permutation drawn from (seed, epoch), the same on every rank
        assert order[:15] == np.random.default_rng([seed, epoch]).permutation(15).tolist()
    assert delivered[0][0] != delivered[0][1]  # a new order each epoch


@pytest.mark.parametrize("workers, processes", [(1, False), (2, False), (2, True)])
def test_bad_images_are_skipped_and_counted(tmp_path, caplog, workers, processes):
    make_folder(tmp_path, classes=("a", "b"), per_class=3)
    corrupt = tmp_path / "train" / "a" / "1.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg body" * 10)
    truncated = tmp_path / "train" / "b" / "0.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    dataset = create_dataset("imagefolder", str(tmp_path), shuffle=False)
    loader = create_loader(dataset, 4, transform=small_transform(False), num_parallel_workers=workers,
                           python_multiprocessing=processes)
    with caplog.at_level(logging.WARNING, logger="mindcv.data.loader"):
        (epoch,) = batches(loader)
    assert sum(len(labels) for _, labels in epoch) == 7  # 7 files; the 2 bad ones are replaced by the next sample
    assert loader.skipped_images.count == 2
    messages = "\n".join(r.getMessage() for r in caplog.records)
    if not processes:  # a worker process logs the file names itself, to its own stderr
        assert str(corrupt) in messages and str(truncated) in messages
    assert "2 unreadable image(s) skipped" in messages


def test_a_custom_transform_without_out_fills_the_batch():
    dataset = create_dataset("imagefolder", MNIST, "val", shuffle=False, num_samples=6)
    loader = create_loader(dataset, 3, transform=lambda data, rng: np.full((1, 4, 4), len(data), np.float32),
                           num_parallel_workers=1)
    images = np.concatenate([batch for batch, _ in loader.create_tuple_iterator(num_epochs=1, output_numpy=True)])
    sizes = [len(dataset.image_source.read_bytes(i)) for i in range(6)]
    np.testing.assert_array_equal(images[:, 0, 0, 0], sizes)
