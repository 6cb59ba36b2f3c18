"""Throughput of the mindcv.data pipeline on ImageNet-like JPEGs, in images/second.

Makes a folder of synthetic photos (500x375, multi-scale noise textures saved as
quality-90 JPEGs, about 85 KB each, like ImageNet's) and times:
  * decode only: PIL full-size decode + RGB conversion, one process (reference);
  * train: the convnext_tiny recipe (random resized crop 224, hflip 0.5,
    randaug-m9-mstd0.5-inc1, random erasing 0.25 with per-pixel noise,
    mixup 0.8 / cutmix 1.0 with label smoothing 0.1, batch 16) per worker count;
  * eval: resize 256 / centre crop 224, batch 16;
  * with --changed-list, the training recipe again with its list changed (an identity function appended: the
    operations then run one by one instead of fused), and MindSpore's own operations as a MindCV user lists them
    (vision.Decode, RandomResizedCrop, RandomHorizontalFlip, Normalize, HWC2CHW; no RandAugment or erasing).
Timing starts after the first batch (worker start-up excluded). On a shared
machine the wall-clock rate depends on other load, so the CPU time per image of
the pipeline (its worker threads included) is printed too, with the rate it
allows on idle cores.

Worker threads share one interpreter lock (GIL): whatever part of an image's
work holds it runs one thread at a time, which caps a process at
1000 / (GIL-held ms per image) images/s however many cores it has. `--gil`
bounds that part for the training recipe: the per-image time outside the C++
image kernels (which run without the lock), in one thread.
Past that ceiling, `python_multiprocessing: True` runs the workers as
processes, each with its own lock.

    python benchmarks/data_pipeline.py [--images 320] [--epochs 2] [--workers 1 2] [--gil] [--changed-list]
"""

import argparse
import io
import os
import tempfile
import time

import numpy as np
from PIL import Image

from mindcv.data import create_dataset, create_loader, create_transforms, kernels


def natural_texture(rng, height, width):
    """Sum of upsampled noise at several scales: smooth regions plus fine detail, like a photo."""
    img = np.zeros((height, width, 3), np.float32)
    for cell, amplitude in ((4, 1.5), (16, 1.0), (64, 0.75), (200, 0.4)):
        noise = rng.standard_normal((max(2, height // cell), max(2, width // cell), 3))
        small = Image.fromarray((noise * 40 + 128).clip(0, 255).astype(np.uint8))
        img += (np.asarray(small.resize((width, height), Image.BICUBIC), np.float32) - 128) * amplitude
    return (img + 128).clip(0, 255).astype(np.uint8)


def make_jpeg_folder(root, num_images, num_classes=4, size=(500, 375)):
    rng = np.random.default_rng(0)
    for i in range(num_images):
        class_dir = os.path.join(root, "train", f"n{i % num_classes:08d}")
        os.makedirs(class_dir, exist_ok=True)
        Image.fromarray(natural_texture(rng, size[1], size[0])).save(os.path.join(class_dir, f"{i}.jpg"),
                                                                       quality=90)


def decode_only_rate(root):
    paths = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]
    blobs = [open(p, "rb").read() for p in paths]
    start = time.perf_counter()
    for blob in blobs:
        Image.open(io.BytesIO(blob)).convert("RGB")
    return len(blobs) / (time.perf_counter() - start)


def mindspore_operations(interpolation):
    """A MindCV user's own training list of MindSpore operations."""
    from mindspore.dataset import vision  # pylint: disable=import-outside-toplevel
    inter = vision.Inter.BICUBIC if interpolation == "bicubic" else vision.Inter.BILINEAR
    mean, std = [0.485 * 255, 0.456 * 255, 0.406 * 255], [0.229 * 255, 0.224 * 255, 0.225 * 255]
    return [vision.Decode(), vision.RandomResizedCrop(224, interpolation=inter), vision.RandomHorizontalFlip(),
            vision.Normalize(mean, std), vision.HWC2CHW()]


def loader_rate(root, is_training, workers, epochs, interpolation, change=None):
    """(images/s, CPU ms per image) of the loader; `change`: None (the recipe's list as made), "appended" (an
    identity function appended to it) or "mindspore" (`mindspore_operations`)."""
    dataset = create_dataset("imagenet", root, "train", shuffle=is_training)
    if is_training:
        transform = create_transforms("imagenet", is_training=True, image_resize=224, interpolation=interpolation,
                                      auto_augment="randaug-m9-mstd0.5-inc1", re_prob=0.25, re_value="random")
        if change == "appended":
            transform.append(lambda image: image)
        elif change == "mindspore":
            transform = mindspore_operations(interpolation)
        loader = create_loader(dataset, 16, drop_remainder=True, is_training=True, mixup=0.8, cutmix=1.0,
                               num_classes=1000, transform=transform, num_parallel_workers=workers)
    else:
        transform = create_transforms("imagenet", is_training=False, image_resize=224, interpolation=interpolation)
        loader = create_loader(dataset, 16, transform=transform, num_parallel_workers=workers)
    iterator = loader.create_tuple_iterator(num_epochs=epochs, output_numpy=True)
    count, start = 0, None
    for _ in range(epochs):
        for images, _ in iterator:
            if start is None:  # exclude worker start-up
                start, cpu_start = time.perf_counter(), cpu_seconds()
                continue
            count += len(images)
    rate = count / (time.perf_counter() - start)
    return rate, (cpu_seconds() - cpu_start) / count * 1e3


def gil_held_ms_per_image(root, interpolation):
    """(at most GIL-held ms per image, ms per image) of the training recipe's per-image work in one thread: the
    time outside the C++ image kernels, which ctypes runs without the lock. Pillow's own C code (for the files the
    kernels do not decode, and RandAugment's operations) is counted as holding it, so this is an upper bound."""
    lib = kernels.library()
    if lib is None:
        raise RuntimeError("the image kernels could not be built: every step holds the GIL")
    in_kernels = [0.0]

    def timed(function):
        def call(*args):
            start = time.perf_counter()
            try:
                return function(*args)
            finally:
                in_kernels[0] += time.perf_counter() - start
        return call

    names = [name for name in kernels._SIGNATURES if hasattr(lib, name)]  # pylint: disable=protected-access
    originals = {name: getattr(lib, name) for name in names}
    transform = create_transforms("imagenet", is_training=True, image_resize=224, interpolation=interpolation,
                                  auto_augment="randaug-m9-mstd0.5-inc1", re_prob=0.25, re_value="random")
    dataset = create_dataset("imagenet", root, "train", shuffle=False)
    blobs = [dataset.image_source.read_bytes(i) for i in range(len(dataset.image_source))]
    try:
        for name, function in originals.items():
            setattr(lib, name, timed(function))
        start = time.perf_counter()
        for index, blob in enumerate(blobs):
            transform(blob, np.random.default_rng(index))
        total = time.perf_counter() - start
    finally:
        for name, function in originals.items():
            setattr(lib, name, function)
    return (total - in_kernels[0]) * 1e3 / len(blobs), total * 1e3 / len(blobs)


def cpu_seconds():
    """CPU time of this process (the loader's worker threads included), seconds."""
    t = os.times()
    return t.user + t.system


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=320, help="JPEGs to generate")
    parser.add_argument("--epochs", type=int, default=2, help="passes timed per configuration")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts for training")
    parser.add_argument("--interpolation", default="bicubic", choices=["bilinear", "bicubic"])
    parser.add_argument("--gil", action="store_true", help="also estimate the GIL-held time per image")
    parser.add_argument("--changed-list", action="store_true",
                        help="also time the training recipe with its transform list changed, and MindSpore's ops")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        make_jpeg_folder(root, args.images)
        print(f"{args.images} JPEGs 500x375, interpolation {args.interpolation}, {os.cpu_count()} CPUs, "
              f"load average before start {os.getloadavg()[0]:.1f}")
        print(f"decode only (PIL, 1 process):       {decode_only_rate(root):6.0f} images/s")
        configs = [(f"train convnext_tiny recipe, {w} worker(s)", True, w, None) for w in args.workers]
        configs.append((f"eval 256/224, {max(args.workers)} worker(s)", False, max(args.workers), None))
        if args.changed_list:
            configs += [(f"train, list changed, {w} worker(s)", True, w, "appended") for w in args.workers]
            configs += [(f"train, MindSpore ops, {w} worker(s)", True, w, "mindspore") for w in args.workers]
        for name, is_training, workers, change in configs:
            rate, cpu_ms = loader_rate(root, is_training, workers, args.epochs, args.interpolation, change)
            # with W workers on W idle cores the pipeline could reach W * 1000 / cpu_ms images/s
            print(f"{name:38s} {rate:6.0f} images/s, {cpu_ms:5.2f} CPU ms/image "
                  f"(CPU-bound limit on {workers} idle core(s): {workers * 1000 / cpu_ms:4.0f} images/s)")
        if args.gil:
            gil_ms, total_ms = gil_held_ms_per_image(root, args.interpolation)
            print(f"train recipe, per image in one thread: {total_ms:5.2f} ms, of which at most {gil_ms:5.2f} ms "
                  f"hold the GIL: thread-mode ceiling at least {1000 / gil_ms:4.0f} images/s per process")


if __name__ == "__main__":
    main()
