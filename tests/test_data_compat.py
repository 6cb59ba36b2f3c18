"""MindCV's data factories: signatures, CIFAR-10 / CIFAR-100 / MNIST from their standard binary files, dataset
downloads, repeated augmentation, the automatic augmentation policies and the loader's MindCV behaviour."""

import gzip
import http.server
import inspect
import io
import math
import os
import struct
import tarfile
import threading

import mindspore as ms
import numpy as np
import pytest
from PIL import Image, ImageFilter

from conftest import DEMO_DATA
from mindcv.data import (AugMix, AutoAugment, Cifar10Download, MnistDownload, RepeatedAugmentationOrder,
                         TrivialAugmentWide, auto_augment_from_policy, create_dataset, create_loader,
                         create_transforms, get_dataset_download_root)
from mindcv.data import auto_augment as aa
from mindcv.data.constants import CIFAR_DEFAULT_MEAN
from mindcv.io.download import DownLoad, DownloadError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IDENTITY = dict(mean=(0, 0, 0), std=(1, 1, 1))  # normalization that leaves the 0-255 pixels as they are


def parameters(function):
    return list(inspect.signature(function).parameters.values())


def positional(function):
    """[(name, default)] of the parameters that can be passed by position."""
    return [(p.name, p.default) for p in parameters(function)
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def keyword_only(function):
    return {p.name: p.default for p in parameters(function) if p.kind == p.KEYWORD_ONLY}


def batches(loader, epochs=1):
    iterator = loader.create_tuple_iterator(num_epochs=epochs, output_numpy=True)
    return [[(images, labels) for images, labels in iterator] for _ in range(epochs)]


# ---- the standard binary files, made small -------------------------------------------------------------------------

def cifar_records(rng, count, label_bytes, classes):
    """(raw record bytes, labels [count, label_bytes], images uint8 [count, 32, 32, 3] in HWC)."""
    labels = np.stack([rng.integers(0, 20, count), rng.integers(0, classes, count)], 1)[:, 2 - label_bytes:]
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    planes = images.transpose(0, 3, 1, 2).reshape(count, -1)  # the file keeps the red, green, blue planes
    return np.concatenate([labels.astype(np.uint8), planes], 1).tobytes(), labels, images


def make_cifar10(folder, per_batch=2, test=3, seed=0):
    """data_batch_1.bin .. data_batch_5.bin and test_batch.bin; returns (train, test) as (labels, images)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    parts = {"train": ([], [])}
    for i in range(1, 6):
        raw, labels, images = cifar_records(rng, per_batch, 1, 10)
        (folder / f"data_batch_{i}.bin").write_bytes(raw)
        parts["train"][0].append(labels[:, 0])
        parts["train"][1].append(images)
    raw, labels, images = cifar_records(rng, test, 1, 10)
    (folder / "test_batch.bin").write_bytes(raw)
    return (np.concatenate(parts["train"][0]), np.concatenate(parts["train"][1])), (labels[:, 0], images)


def make_cifar100(folder, train=4, test=3, seed=1):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    out = []
    for name, count in (("train.bin", train), ("test.bin", test)):
        raw, labels, images = cifar_records(rng, count, 2, 100)
        (folder / name).write_bytes(raw)
        out.append((labels, images))
    return out


def idx_bytes(array):
    return bytes((0, 0, 8, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def make_mnist(folder, train=5, test=3, compress=False, seed=2):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    out = []
    for prefix, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            data = idx_bytes(array)
            if compress:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        out.append((labels, images))
    return out


# ---- signatures ---------------------------------------------------------------------------------------------------

def test_factories_take_mindcvs_arguments_in_mindcvs_order():
    assert positional(create_dataset) == [
        ("name", ""), ("root", None), ("split", "train"), ("shuffle", True), ("num_samples", None),
        ("num_shards", None), ("shard_id", None), ("num_parallel_workers", None), ("download", False),
        ("num_aug_repeats", 0)]
    assert keyword_only(create_dataset) == {"seed": 0, "pad_shards": True}
    assert parameters(create_dataset)[-1].kind == inspect.Parameter.VAR_KEYWORD
    assert positional(create_transforms) == [
        ("dataset_name", ""), ("image_resize", 224), ("is_training", False), ("auto_augment", None),
        ("separate", False)]
    extra = keyword_only(create_transforms)
    assert {"scale", "ratio", "hflip", "vflip", "color_jitter", "interpolation", "re_prob", "re_value", "re_scale",
            "re_ratio", "re_max_attempts", "mean", "std", "crop_pct", "in_channels"} <= set(extra)
    assert extra["color_jitter"] == 0.4 and extra["hflip"] == 0.5 and extra["crop_pct"] == 0.875
    # cutmix_prob: 1.0 (timm's and MindCV's train.py default; MindCV's create_loader has 0.0, which never mixes)
    assert positional(create_loader) == [
        ("dataset", inspect.Parameter.empty), ("batch_size", inspect.Parameter.empty), ("drop_remainder", False),
        ("is_training", False), ("mixup", 0.0), ("cutmix", 0.0), ("cutmix_prob", 1.0), ("num_classes", 1000),
        ("transform", None), ("target_transform", None), ("num_parallel_workers", None),
        ("python_multiprocessing", False), ("separate", False)]
    assert keyword_only(create_loader) == {"seed": 0, "start_epoch": 0, "skip_batches": 0, "label_smoothing": 0.0}
    download = DownLoad()
    assert positional(download.download_url) == [("url", inspect.Parameter.empty), ("path", None),
                                                 ("filename", None), ("md5", None)]
    assert [n for n, _ in positional(download.download_and_extract_archive)] == [
        "url", "download_path", "extract_path", "filename", "md5", "remove_finished"]
    assert [n for n, _ in positional(download.extract_archive)] == ["from_path", "to_path"]
    assert [n for n, _ in positional(download.check_md5)] == ["file_path", "md5"]


def test_create_dataset_refuses_mindspore_keywords():
    with pytest.raises(TypeError, match="decode"):
        create_dataset("imagefolder", DEMO_DATA, decode=True)


def test_dataset_download_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MINDCV_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert get_dataset_download_root() == str(tmp_path / ".mindspore" / "dataset")  # MindCV's
    monkeypatch.setenv("MINDCV_HOME", str(tmp_path / "cache"))
    assert get_dataset_download_root() == str(tmp_path / "cache" / "dataset")
    make_cifar10(tmp_path / "cache" / "dataset" / "cifar10" / "cifar-10-batches-bin")
    assert create_dataset("cifar10").get_dataset_size() == 10  # root=None: <download root>/<name>, as MindCV


# ---- CIFAR-10, CIFAR-100, MNIST -----------------------------------------------------------------------------------

def test_cifar10_binary_layout_through_dataset_and_loader(tmp_path):
    (train_labels, train_images), (test_labels, test_images) = make_cifar10(tmp_path / "cifar-10-batches-bin")
    dataset = create_dataset("cifar10", root=str(tmp_path), split="train", shuffle=False)
    assert dataset.class_names == CIFAR10_NAMES and dataset.num_classes() == 10
    assert dataset.get_dataset_size() == 10
    rows = list(dataset.create_tuple_iterator(output_numpy=True))
    assert rows[0][0].shape == (32, 32, 3) and rows[0][0].dtype == np.uint8
    np.testing.assert_array_equal(np.stack([r[0] for r in rows]), train_images)
    assert [int(r[1]) for r in rows] == train_labels.tolist()
    # the loader: pixels through the evaluation transform at their own size, normalization off
    transform = create_transforms("cifar10", image_resize=32, is_training=False, **IDENTITY)
    loader = create_loader(dataset, 4, transform=transform, num_parallel_workers=1)
    assert loader.get_batch_size() == 4 and loader.get_dataset_size() == 3
    (epoch,) = batches(loader)
    images = np.concatenate([b for b, _ in epoch])
    labels = np.concatenate([lbl for _, lbl in epoch])
    assert images.shape == (10, 3, 32, 32) and labels.dtype == np.int32
    np.testing.assert_array_equal(images.transpose(0, 2, 3, 1), train_images.astype(np.float32))
    np.testing.assert_array_equal(labels, train_labels)
    for split in ("val", "test"):  # MindCV's validation split is CIFAR's test set
        test = create_dataset("cifar10", str(tmp_path / "cifar-10-batches-bin"), split, shuffle=False)
        np.testing.assert_array_equal(test.image_source.labels, test_labels)
        np.testing.assert_array_equal(test.image_source.read(2), test_images[2])
    assert create_dataset("cifar10", str(tmp_path), "all").get_dataset_size() == 13
    # the PNG it encodes decodes to the pixels
    png = dataset.image_source.read_bytes(3)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), train_images[3])


def test_cifar10_names_from_meta_file_and_errors(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    make_cifar10(folder)
    names = [f"class{i}" for i in range(10)]
    (folder / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    assert create_dataset("cifar10", str(tmp_path)).class_names == names
    with pytest.raises(ValueError, match="no split 'validation'"):
        create_dataset("cifar10", str(tmp_path), "validation")
    (folder / "data_batch_3.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(ValueError, match="data_batch_3.bin is not a CIFAR binary file"):
        create_dataset("cifar10", str(tmp_path))
    os.remove(folder / "data_batch_3.bin")
    with pytest.raises(FileNotFoundError, match="data_batch_3.bin.*cifar-10-batches-bin.*download=True"):
        create_dataset("cifar10", str(tmp_path))


def test_cifar100_fine_labels_names_and_coarse_labels(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    (train_labels, train_images), (test_labels, _) = make_cifar100(folder)
    dataset = create_dataset("cifar100", str(tmp_path), shuffle=False)
    assert dataset.class_names == [str(i) for i in range(100)] and dataset.num_classes() == 100
    np.testing.assert_array_equal(dataset.image_source.labels, train_labels[:, 1])  # the fine label
    np.testing.assert_array_equal(dataset.image_source.coarse_labels, train_labels[:, 0])
    transform = create_transforms("cifar100", image_resize=32, **IDENTITY)
    (epoch,) = batches(create_loader(dataset, 4, transform=transform, num_parallel_workers=1))
    images, labels = epoch[0]
    np.testing.assert_array_equal(images.transpose(0, 2, 3, 1), train_images)
    np.testing.assert_array_equal(labels, train_labels[:, 1])
    names = [f"fine{i}" for i in range(100)]
    (folder / "fine_label_names.txt").write_text("\n".join(names))
    test = create_dataset("cifar100", str(folder), "val")
    assert test.class_names == names
    np.testing.assert_array_equal(test.image_source.labels, test_labels[:, 1])


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files_through_dataset_and_loader(tmp_path, compress):
    (train_labels, train_images), (test_labels, test_images) = make_mnist(tmp_path, compress=compress)
    dataset = create_dataset("mnist", str(tmp_path), shuffle=False)
    assert dataset.class_names == [str(i) for i in range(10)] and dataset.num_classes() == 10
    image, label = next(dataset.create_tuple_iterator(output_numpy=True))
    assert image.shape == (28, 28, 1) and int(label) == train_labels[0]
    # MindCV's MNIST transform: one channel, resize, normalize
    transform = create_transforms("mnist", image_resize=28, mean=(0,), std=(1,))
    (epoch,) = batches(create_loader(dataset, 5, transform=transform, num_parallel_workers=1))
    images, labels = epoch[0]
    assert images.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(images[:, 0], train_images)
    np.testing.assert_array_equal(labels, train_labels)
    test = create_dataset("mnist", str(tmp_path), "test", shuffle=False)
    np.testing.assert_array_equal(test.image_source.read(1), test_images[1])
    np.testing.assert_array_equal(test.image_source.labels, test_labels)


def test_mnist_errors_name_the_files(tmp_path):
    make_mnist(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        create_dataset("mnist", str(tmp_path), "val")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    with pytest.raises(ValueError, match="not an idx file of 1-D"):
        create_dataset("mnist", str(tmp_path), "val")


def test_cifar_training_transform_is_mindcvs_padded_crop_and_flip(tmp_path):
    """With a seeded generator the training transform equals the crop of the image zero-padded by 4 at offsets
    (top, left) ~ U{0..8}^2, then mirrored when the next draw is below 0.5 (MindCV: RandomCrop(32, padding 4),
    RandomHorizontalFlip), computed here with numpy."""
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    transform = create_transforms("cifar10", image_resize=32, is_training=True, **IDENTITY)
    flips = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        top, left = rng.integers(0, 9, size=2)
        flip = rng.random() < 0.5
        expected = np.pad(image, ((4, 4), (4, 4), (0, 0)))[top:top + 32, left:left + 32]
        expected = expected[:, ::-1] if flip else expected
        out = transform(image, np.random.default_rng(seed))
        np.testing.assert_array_equal(out.transpose(1, 2, 0), expected.astype(np.float32))
        flips.add(bool(flip))
    assert flips == {True, False}
    normalized = create_transforms("cifar10", image_resize=64)(image)  # resized, with CIFAR's mean/std
    assert normalized.shape == (3, 64, 64)
    assert abs(normalized[0].mean() - (image[..., 0].mean() - CIFAR_DEFAULT_MEAN[0]) / (0.2023 * 255)) < 0.05
    with pytest.raises(ValueError, match="dataset_name='imagenet'"):
        create_transforms("cifar10", is_training=True, auto_augment="randaug-m9")
    # the ImageNet-style transforms take the decoded pixels too
    out = create_transforms("imagenet", 32, True, "randaug-m9-mstd0.5")(image, np.random.default_rng(1))
    assert out.shape == (3, 32, 32) and np.isfinite(out).all()


# ---- downloads ----------------------------------------------------------------------------------------------------

def test_download_without_network_fails_with_one_line_naming_the_files(tmp_path, monkeypatch):
    dead = "http://127.0.0.1:9/"
    monkeypatch.setattr(Cifar10Download, "resources",
                        (("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                          (dead + "cifar-10-binary.tar.gz",)),))
    with pytest.raises(DownloadError) as error:
        create_dataset("cifar10", str(tmp_path), download=True)
    message = str(error.value)
    assert "\n" not in message and message.startswith("cannot download CIFAR-10")
    assert "127.0.0.1:9" in message and "cifar-10-binary.tar.gz" in message and str(tmp_path) in message
    assert "data_batch_1.bin" in message and "test_batch.bin" in message
    monkeypatch.setattr(MnistDownload, "resources", tuple(
        (name, md5, (dead + name, dead + "mirror/" + name)) for name, md5, _ in MnistDownload.resources))
    with pytest.raises(DownloadError) as error:
        create_dataset("mnist", str(tmp_path / "mnist"), download=True)
    message = str(error.value)
    assert "\n" not in message and "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert str(tmp_path / "mnist") in message and "mirror/" in message  # both addresses tried
    assert not os.listdir(tmp_path / "mnist")  # no partial files left


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             lambda *a, **k: _Files(*a, directory=str(served), **k))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_verifies_md5_and_unpacks(tmp_path, monkeypatch, file_server):
    served, url = file_server
    (train_labels, _), _ = make_cifar10(tmp_path / "made" / "cifar-10-batches-bin")
    archive = served / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "made" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    md5 = DownLoad.calculate_md5(str(archive))
    root = tmp_path / "root"
    monkeypatch.setattr(Cifar10Download, "resources", (("cifar-10-binary.tar.gz", "0" * 32, (url + archive.name,)),))
    with pytest.raises(DownloadError, match="does not match its md5"):
        create_dataset("cifar10", str(root), download=True)
    assert not (root / "cifar-10-binary.tar.gz").exists()  # the bad download was deleted
    monkeypatch.setattr(Cifar10Download, "resources", (("cifar-10-binary.tar.gz", md5, (url + archive.name,)),))
    dataset = create_dataset("cifar10", str(root), download=True, shuffle=False)
    np.testing.assert_array_equal(dataset.image_source.labels, train_labels)
    assert (root / "cifar-10-batches-bin" / "test_batch.bin").is_file()
    os.remove(archive)  # present now: no second download
    assert create_dataset("cifar10", str(root), download=True).get_dataset_size() == 10


def test_download_helper_refuses_archives_that_escape(tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(DownloadError, match="refused"):
        DownLoad().extract_archive(str(evil), str(tmp_path / "into"))
    assert not (tmp_path / "outside.txt").exists()
    plain = tmp_path / "data.bin"
    plain.write_bytes(b"12345")
    packed = tmp_path / "data.bin.gz"
    packed.write_bytes(gzip.compress(b"12345"))
    DownLoad().extract_archive(str(packed), str(tmp_path / "out"))
    assert (tmp_path / "out" / "data.bin").read_bytes() == b"12345"
    helper = DownLoad()
    md5 = helper.calculate_md5(str(plain))
    assert helper.check_md5(str(plain), md5) and not helper.check_md5(str(plain), "0" * 32)
    # a file already there with the right md5 is not downloaded again (the URL is unreachable)
    assert helper.download_url("http://127.0.0.1:9/data.bin", str(tmp_path), md5=md5) == str(plain)


# ---- repeated augmentation ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("repeats, shards", [(3, 1), (3, 2), (2, 4), (3, 8)])
def test_repeated_augmentation_shards(tmp_path, repeats, shards):
    """The ranks' orders interleave back (position p of the repeated order to rank p % N) into the first
    N * L positions of the epoch's permutation with each sample repeated `repeats` times in a row: every copy
    of an image on one rank only, the images seen the head of the permutation, L samples per rank as without
    repetition."""
    make_cifar10(tmp_path, per_batch=4)  # 20 images
    n = 20
    orders = [create_dataset("cifar10", str(tmp_path), num_shards=shards if shards > 1 else None,
                             shard_id=rank if shards > 1 else None, num_aug_repeats=repeats, seed=5).epoch_order
              for rank in range(shards)]
    assert all(isinstance(order, RepeatedAugmentationOrder) for order in orders)
    length = -(-n // shards)
    for epoch in (0, 1):
        parts = [order.indices(epoch) for order in orders]
        assert [len(p) for p in parts] == [length] * shards
        interleaved = np.array([parts[p % shards][p // shards] for p in range(shards * length)])
        permutation = np.random.default_rng([5, epoch]).permutation(n)
        expected = np.repeat(permutation, repeats)
        expected = expected + n * np.tile(np.arange(repeats), n)[:len(expected)]  # copy k of image i: i + k * n
        np.testing.assert_array_equal(interleaved, np.resize(expected, len(interleaved)))
        assert len(set(interleaved.tolist())) == len(interleaved)  # disjoint copies across (and within) ranks
        seen = set((interleaved % n).tolist())
        assert seen == set(permutation[:math.ceil(shards * length / repeats)].tolist())
    plain = create_dataset("cifar10", str(tmp_path), num_aug_repeats=1).epoch_order
    assert not isinstance(plain, RepeatedAugmentationOrder)
    with pytest.raises(ValueError, match="num_aug_repeats"):
        create_dataset("cifar10", str(tmp_path), num_aug_repeats=-1)


def test_repeated_copies_are_augmented_differently(tmp_path):
    make_cifar10(tmp_path)
    dataset = create_dataset("cifar10", str(tmp_path), num_aug_repeats=2, seed=3)
    transform = create_transforms("cifar10", image_resize=32, is_training=True)
    (epoch,) = batches(create_loader(dataset, 2, is_training=True, transform=transform, num_parallel_workers=1))
    images, labels = epoch[0]  # one image twice, its two copies
    assert labels[0] == labels[1] and not np.array_equal(images[0], images[1])


# ---- automatic augmentation policies ------------------------------------------------------------------------------

POLICIES = ["randaug-m9-mstd0.5-inc1", "rand-m7-n3-mstd0.5", "randaug-m9-w0", "rand-m9-tweights", "rand-m9-t3a",
            "autoaug", "autoaugr", "autoaug-mstd0.5", "original", "v0", "v0r", "3a", "augmix-m5-w4-d2", "augmix-b1",
            "trivialaugwide", "trivialaugwide-m15"]


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_gives_valid_images(policy):
    rng = np.random.default_rng(0)
    photo = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((48, 40)))
    augment = auto_augment_from_policy(policy, (124, 116, 104))
    changed = 0
    for seed in range(12):
        for img in (Image.fromarray(photo), Image.fromarray(photo[..., 0])):
            out = augment(img, np.random.default_rng(seed))
            assert out.mode == img.mode and out.size == img.size
            changed += not np.array_equal(np.asarray(out), np.asarray(img))
    assert changed >= 6
    transform = create_transforms("imagenet", 24, True, policy, re_prob=0.5)
    out = transform(photo, np.random.default_rng(1))
    assert out.shape == (3, 24, 24) and out.dtype == np.float32 and np.isfinite(out).all()


def test_policy_tables():
    assert isinstance(auto_augment_from_policy("autoaug"), AutoAugment)
    original = aa.AUTO_AUGMENT_POLICIES["autoaug"]
    assert aa.AUTO_AUGMENT_POLICIES["original"] is original and len(original) == 25
    assert all(len(sub) == 2 for sub in original)
    names = {name for sub in original for name, _, _ in sub}
    assert names == {"PosterizeOriginal", "Rotate", "Solarize", "AutoContrast", "Equalize", "Color", "Contrast",
                     "Invert", "Sharpness", "ShearX"}
    assert original[0] == (("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9))
    r = aa.AUTO_AUGMENT_POLICIES["autoaugr"]
    assert {name for sub in r for name, _, _ in sub} == names - {"PosterizeOriginal"} | {"PosterizeIncreasing"}
    assert [[(p, m) for _, p, m in sub] for sub in r] == [[(p, m) for _, p, m in sub] for sub in original]
    assert len(aa.AUTO_AUGMENT_POLICIES["v0"]) == 25
    assert aa.AUTO_AUGMENT_POLICIES["3a"] == ((("Solarize", 1.0, 5),), (("Desaturate", 1.0, 10),),
                                             (("GaussianBlurRand", 1.0, 10),))
    assert set(aa.auto_augment_from_policy("rand-m9-t3a").op_names) == {"SolarizeIncreasing", "Desaturate",
                                                                       "GaussianBlur"}
    augmix = auto_augment_from_policy("augmix-m5-w4-d2")
    assert (augmix.magnitude, augmix.width, augmix.depth, augmix.magnitude_std) == (5, 4, 2, math.inf)
    assert augmix.translate_pct == 0.3 and len(augmix.op_names) == 13
    assert auto_augment_from_policy("trivialaugwide").max_bin == 30
    assert len(TrivialAugmentWide.OP_NAMES) == 14
    for bad in ("autoaug-m9", "augmix-x1", "randaug-w1", "rand-tfoo", "cutout"):
        with pytest.raises(ValueError):
            auto_augment_from_policy(bad)


def test_three_augment_reproduces_numpy_and_pillow():
    """3a with a seeded generator: sub-policy k = rng.integers(3), then the sign draw; k 0 is solarize at 128
    (numpy), k 1 grayscale (numpy, Pillow's ITU-R 601 luma in 16-bit fixed point), k 2 Pillow's Gaussian blur of
    radius rng.uniform(0.1, 2)."""
    rgb = np.random.default_rng(3).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    augment = auto_augment_from_policy("3a")
    seen = set()
    for seed in range(15):
        rng = np.random.default_rng(seed)
        kind = int(rng.integers(3))
        rng.random()  # the sign
        out = np.asarray(augment(img, np.random.default_rng(seed)))
        if kind == 0:
            expected = np.where(rgb >= 128, 255 - rgb, rgb)
        elif kind == 1:
            r, g, b = (rgb[..., c].astype(np.int64) for c in range(3))
            expected = np.repeat(((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)[..., None], 3, 2)
        else:
            expected = np.asarray(img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.1, 2.0))))
        np.testing.assert_array_equal(out, expected)
        seen.add(kind)
    assert seen == {0, 1, 2}


def test_augmix_mixes_as_the_paper():
    """One chain of one op (Invert): the mix is the inverted image and the result Image.blend(img, mix, m),
    m ~ Beta(1, 1), recomputed with numpy in float32 (Pillow truncates)."""
    rgb = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    augment = AugMix(width=1, depth=1, op_names=("Invert",))
    for seed in range(5):
        rng = np.random.default_rng(seed)
        weights = rng.dirichlet([1.0])
        m = np.float32(rng.beta(1.0, 1.0))
        assert weights.tolist() == [1.0]
        expected = rgb.astype(np.float32) + m * ((255 - rgb).astype(np.float32) - rgb.astype(np.float32))
        out = np.asarray(augment(Image.fromarray(rgb), np.random.default_rng(seed))).astype(np.float32)
        assert np.abs(out - np.floor(expected)).max() <= 1 and (out == np.floor(expected)).mean() > 0.95


def test_trivial_augment_wide_ops_reproduce_numpy():
    gray = np.random.default_rng(5).integers(0, 256, (16, 16), dtype=np.uint8)
    img = Image.fromarray(gray)
    augment = TrivialAugmentWide()
    names = []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        name = TrivialAugmentWide.OP_NAMES[rng.integers(14)]
        level = int(rng.integers(0, 31))
        names.append(name)
        out = np.asarray(augment(img, np.random.default_rng(seed)))
        if name == "Identity":
            np.testing.assert_array_equal(out, gray)
        elif name == "Posterize":  # 8 bits at bin 0 down to 2 at bin 30
            bits = 8 - round(level / 5)
            np.testing.assert_array_equal(out, gray & ((0xFF << (8 - bits)) & 0xFF))
        elif name == "Solarize":  # threshold 255 at bin 0 down to 0 at bin 30
            np.testing.assert_array_equal(out, np.where(gray >= 255 * (1 - level / 30), 255 - gray, gray))
    assert set(names) == set(TrivialAugmentWide.OP_NAMES)


def test_weighted_rand_augment_draws_distinct_ops_by_weight(monkeypatch):
    chosen = []
    monkeypatch.setattr(aa, "apply_op", lambda img, name, *args, **kwargs: chosen.append(name) or img)
    augment = auto_augment_from_policy("randaug-m9-p1.0-w0")
    assert np.allclose(augment.weights, aa.CHOICE_WEIGHTS_0)
    img = Image.new("RGB", (4, 4))
    for seed in range(600):
        chosen.clear()
        augment(img, np.random.default_rng(seed))
        assert len(chosen) == 2 and chosen[0] != chosen[1]  # without replacement
        names = chosen[:] if seed == 0 else names + chosen
    counts = {name: names.count(name) for name in set(names)}
    assert "Posterize" not in counts and "Invert" not in counts  # weight 0
    assert max(counts, key=counts.get) == "Rotate"  # weight 0.3
    with pytest.raises(ValueError, match="different ops"):
        aa.RandAugment(("Rotate", "Invert"), num_ops=2, weights=(1, 0))


# ---- the loader ---------------------------------------------------------------------------------------------------

def test_loader_mixes_only_when_training_and_transforms_targets(tmp_path):
    make_cifar10(tmp_path)
    dataset = create_dataset("cifar10", str(tmp_path), shuffle=False)
    evaluation = create_loader(dataset, 5, mixup=0.8, cutmix=1.0, num_classes=10, num_parallel_workers=1)
    (epoch,) = batches(evaluation)
    images, labels = epoch[0]
    assert labels.dtype == np.int32 and labels.shape == (5,)  # not mixed: is_training is False
    # no transform given: the dataset's evaluation transform (MindCV's CIFAR one, 224 pixels)
    np.testing.assert_array_equal(images[0], create_transforms("cifar10")(dataset.image_source.read(0)))
    training = create_loader(dataset, 5, is_training=True, mixup=0.8, num_classes=10, num_parallel_workers=1)
    (epoch,) = batches(training)
    assert epoch[0][1].shape == (5, 10) and epoch[0][1].dtype == np.float32
    assert training.get_batch_size() == 5
    flipped = create_loader(dataset, 4, drop_remainder=True, transform=create_transforms("cifar10", 32),
                            target_transform=lambda label: 9 - label, num_parallel_workers=1)
    (epoch,) = batches(flipped)
    assert flipped.get_batch_size() == 4 and flipped.get_dataset_size() == 2
    np.testing.assert_array_equal(np.concatenate([lbl for _, lbl in epoch]), 9 - dataset.image_source.labels[:8])
    # MindCV's default target transform, a MindSpore TypeCast, works here too
    cast = create_loader(dataset, 4, transform=create_transforms("cifar10", 32),
                         target_transform=ms.dataset.transforms.TypeCast(ms.int64), num_parallel_workers=1)
    (epoch,) = batches(cast)
    assert epoch[0][1].dtype == np.int64 and epoch[0][1].tolist() == dataset.image_source.labels[:4].tolist()
    # as a list of operations (MindCV's form), applied in order
    listed = create_loader(dataset, 4, transform=create_transforms("cifar10", 32), num_parallel_workers=1,
                           target_transform=[lambda label: 9 - label, ms.dataset.transforms.TypeCast(ms.int64)])
    (epoch,) = batches(listed)
    assert epoch[0][1].dtype == np.int64 and epoch[0][1].tolist() == (9 - dataset.image_source.labels[:4]).tolist()


def test_separate_transforms_and_split_batches(tmp_path):
    make_cifar10(tmp_path)
    primary, secondary, final = create_transforms("imagenet", 32, True, "augmix-m3", separate=True, re_prob=1.0)
    image = create_dataset("cifar10", str(tmp_path)).image_source.read(0)
    rng = np.random.default_rng(0)
    pixels = primary(image, rng)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert secondary(pixels, rng).shape == (32, 32, 3)
    assert final(pixels, rng).shape == (3, 32, 32)
    assert isinstance(create_transforms("imagenet", 32, False, separate=True), list)  # separate: training only
    # MindCV's three lists: the crop and flips, the augmentation, Normalize and erasing
    assert [[type(op).__name__ for op in stage] for stage in (primary, secondary, final)] == [
        ["RandomResizedCropDecode", "RandomHorizontalFlip", "RandomVerticalFlip"], ["AutoAugmentation"],
        ["Normalize", "RandomErasing"]]
    dataset = create_dataset("cifar10", str(tmp_path), seed=1)
    loader = create_loader(dataset, 4, drop_remainder=True, is_training=True, separate=True,
                           transform=(primary, secondary, final), num_parallel_workers=1)
    (epoch,) = batches(loader)
    images, labels = epoch[0]
    assert images.shape == (12, 3, 32, 32) and labels.tolist() == labels[:4].tolist() * 3
    assert loader.get_batch_size() == 4
    # view 0 of each image is clean: the primary stage and normalization only (no augmentation, no erasing)
    index = int(dataset.epoch_order.indices(0)[0])
    clean_rng = np.random.default_rng([0, 0, 0, index])
    np.testing.assert_array_equal(images[0], final(primary(dataset.image_source.read(index), clean_rng), None,
                                                   erase=False))
    assert not np.array_equal(images[0], images[4]) and not np.array_equal(images[4], images[8])
    # a changed stage list is applied op by op (MindCV users append to the lists)
    stages = create_transforms("imagenet", 32, True, "augmix-m3", separate=True)
    stages[2].append(lambda chw: np.zeros_like(chw))
    (changed,) = batches(create_loader(dataset, 4, drop_remainder=True, is_training=True, separate=True,
                                       transform=stages, num_parallel_workers=1))
    assert changed[0][0].shape == (12, 3, 32, 32) and not changed[0][0].any()
    with pytest.raises(ValueError, match="does not mix"):
        create_loader(dataset, 4, is_training=True, mixup=0.8, separate=True, transform=(primary, secondary, final))
    with pytest.raises(ValueError, match="primary, secondary, final"):  # CIFAR's own transform has no stages
        create_loader(dataset, 4, is_training=True, separate=True)
    # as MindCV, an evaluation loader ignores separate: ordinary batches
    (evaluation,) = batches(create_loader(dataset, 4, drop_remainder=True, separate=True, num_parallel_workers=1,
                                          transform=create_transforms("cifar10", 32)))
    assert evaluation[0][0].shape == (4, 3, 32, 32)
