"""The C++ image kernels give exactly the pixels of the Pillow / numpy code they replace."""

import io

import numpy as np
import pytest
from PIL import Image

from mindcv.data import MixupCutmix, apply_op, create_transforms, kernels
from mindcv.data.transforms import Normalize, UnreadableImageError, random_resized_crop_box

pytestmark = pytest.mark.skipif(kernels.library() is None, reason="image kernels not built on this machine")


def photo(height, width, seed=0):
    """Smooth colour fields plus noise: JPEG artefacts and chroma that vary across the image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    return (base + rng.normal(0, 25, base.shape)).clip(0, 255).astype(np.uint8)


def encode(array, fmt="JPEG", **kwargs):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kwargs)
    return buf.getvalue()


def pillow_region(img, box, resample, hflip, size=(224, 224)):
    out = img.resize(size, resample, box=box)
    return np.asarray(out.transpose(Image.FLIP_LEFT_RIGHT) if hflip else out)


@pytest.fixture(scope="module")
def jpegs():
    # 4:2:0 and 4:4:4 chroma, odd sizes (partial MCUs), a progressive file and a grayscale one
    return [
        encode(photo(375, 500, 1), quality=90),
        encode(photo(333, 457, 2), quality=85, subsampling=0),
        encode(photo(401, 299, 3), quality=90, progressive=True),
        encode(photo(300, 420, 4)[:, :, 0], quality=90),
    ]


@pytest.mark.parametrize("resample", [Image.BILINEAR, Image.BICUBIC])
def test_jpeg_region_is_bit_exact_with_pillow(jpegs, resample):
    rng = np.random.default_rng(0)
    for data in jpegs:
        for trial in range(12):
            reduction = (1, 1, 2, 4)[trial % 4]
            img = Image.open(io.BytesIO(data))
            if reduction > 1:
                img.draft(img.mode, (img.size[0] // reduction, img.size[1] // reduction))
            img = img.convert("RGB")
            box = random_resized_crop_box(img.size, rng)
            # fractional edges: Pillow rounds the box to single precision
            box = (box[0] + 0.37, box[1] + 0.21, box[2] - 0.29, box[3] - 0.13)
            hflip = bool(trial % 2)
            got = kernels.jpeg_region(data, reduction, box, (224, 224), resample, hflip)
            np.testing.assert_array_equal(got, pillow_region(img, box, resample, hflip))


@pytest.mark.parametrize("channels", [1, 3])
def test_resize_is_bit_exact_with_pillow(channels):
    array = photo(97, 131)[:, :, :channels].squeeze()
    img = Image.fromarray(array)
    # downscaling by 2, upscaling, identity, and by 6.5 (wider than one vector window of the AVX-512 path)
    for box, size in [((0, 0, 131, 97), (64, 48)), ((10.5, 3.25, 120, 90.75), (224, 224)),
                      ((0, 0, 131, 97), (131, 97)), ((40, 20, 50, 30), (224, 160)), ((0, 0, 131, 97), (20, 15))]:
        for resample in (Image.BILINEAR, Image.BICUBIC):
            got = kernels.resize(array, box, size, resample, hflip=True)
            np.testing.assert_array_equal(got, pillow_region(img, box, resample, True, size))


def test_jpeg_region_declines_what_pillow_must_decide():
    cmyk = io.BytesIO()
    Image.fromarray(photo(40, 40)).convert("CMYK").save(cmyk, "JPEG")
    truncated = encode(photo(200, 200))[:3000]
    for data in (cmyk.getvalue(), truncated, b"\xff\xd8 not a jpeg"):
        assert kernels.jpeg_region(data, 1, (0, 0, 40, 40), (32, 32), Image.BILINEAR, False) is None


def test_normalize_and_mix_match_numpy():
    pixels = photo(20, 30)
    normalize = Normalize((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), 3)
    expected = np.stack([pixels[:, :, c] * normalize.scale[c] + normalize.bias[c] for c in range(3)])
    got = kernels.normalize(pixels, normalize.scale, normalize.bias)
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    batch = np.random.default_rng(0).normal(size=(5, 3, 4, 6)).astype(np.float32)
    lam = np.float32(0.3)
    expected = batch * lam + np.float32(1 - lam) * batch[::-1]
    kernels.mix_reversed(batch, lam)
    np.testing.assert_array_equal(batch, expected)


def test_transforms_and_mixing_are_identical_with_and_without_kernels(jpegs, monkeypatch):
    """The recipe's pipeline gives the same arrays whether the kernels or Pillow/numpy compute it."""
    png = encode(photo(120, 90, 5), "PNG")
    palette = io.BytesIO()
    Image.fromarray(photo(64, 80, 6)).convert("P").save(palette, "PNG")
    files = jpegs + [png, palette.getvalue()]
    train = create_transforms("imagenet", is_training=True, interpolation="bicubic", auto_augment="randaug-m9-mstd0.5-inc1",
                              re_prob=0.25, re_value="random", vflip=0.5)
    evaluate = create_transforms("imagenet", is_training=False, interpolation="bilinear")
    gray = create_transforms("imagenet", is_training=True, in_channels=1)
    mix = MixupCutmix(mixup=0.8, num_classes=4)

    def run():
        outputs = []
        for seed in range(3):
            images = [train(data, np.random.default_rng([seed, i])) for i, data in enumerate(files)]
            images += [evaluate(data) for data in files] + [gray(data, np.random.default_rng(seed)) for data in files]
            outputs += images
            outputs += list(mix(np.stack(images[: len(files)]), np.arange(len(files)) % 4,
                                np.random.default_rng(seed)))
        return outputs

    with_kernels = run()
    monkeypatch.setattr(kernels, "_loaded", [None])
    without = run()
    assert len(with_kernels) == len(without)
    for a, b in zip(with_kernels, without):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["Rotate", "ShearX", "ShearY"])
def test_geometric_ops_are_identical_with_and_without_kernels(name, monkeypatch):
    rgb = photo(224, 224, 7)
    rgb[40:90, 30:150] = 77  # a flat patch: integer-valued interpolation results must truncate identically
    images = [Image.fromarray(rgb), Image.fromarray(photo(150, 200, 8)[:, :, 0])]
    cases = [(img, m, negate, interp) for img in images for m in (0.0, 3.7, 9.0, 10.0) for negate in (False, True)
             for interp in (Image.BILINEAR, Image.BICUBIC)]
    with_kernels = [np.asarray(apply_op(img, name, m, negate, (124, 116, 104), interp)) for img, m, negate, interp in cases]
    monkeypatch.setattr(kernels, "_loaded", [None])
    for (img, m, negate, interp), got in zip(cases, with_kernels):
        np.testing.assert_array_equal(got, np.asarray(apply_op(img, name, m, negate, (124, 116, 104), interp)))


def test_a_jpeg_truncated_below_the_crop_is_still_unreadable(monkeypatch):
    """The kernel stops decoding after the crop's last row; a file cut short further down must still be skipped,
    as Pillow skips it."""
    data = encode(photo(400, 300, 9), quality=90)
    truncated = data[: len(data) * 3 // 4]
    transform = create_transforms("imagenet", is_training=False, image_resize=64, crop_pct=1.0)
    top_crop = (0, 0, 300, 100)  # rows the truncated file still holds
    assert kernels.jpeg_region(data, 1, top_crop, (64, 64), Image.BILINEAR, False) is not None
    assert kernels.jpeg_region(truncated, 1, top_crop, (64, 64), Image.BILINEAR, False) is None
    for use_kernels in (True, False):
        if not use_kernels:
            monkeypatch.setattr(kernels, "_loaded", [None])
        with pytest.raises(UnreadableImageError):
            transform(truncated)

