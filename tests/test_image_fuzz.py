"""Hostile and mistaken image input to the data pipeline: no crash, no exception other than
UnreadableImageError for bad image data, a one-line ValueError for bad arguments to the image kernels.

* A committed corpus of malformed and unusual files (tests/data/images) goes through the training and evaluation
  transforms with the image kernels on and off, which must behave the same.
* The kernels' entry points refuse arguments that would make them read or write outside their buffers.
* A seeded, bounded fuzz run (mutated JPEG and PNG files) in a subprocess, so that a crash fails the test cleanly.
"""
import glob
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mindcv.data import create_transforms, kernels
from mindcv.data.transforms import UnreadableImageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "data", "images")
SIZE = 32

# what each file of the corpus is, and whether the transforms give an image or UnreadableImageError
CORPUS_FILES = {
    "baseline.jpg": ("a plain 64x48 JPEG", "image"),
    "truncated.jpg": ("baseline.jpg cut at 60 % (no end marker)", "unreadable"),
    "empty.jpg": ("zero bytes", "unreadable"),
    "png_named.jpg": ("a PNG named .jpg", "image"),
    "huge_header.jpg": ("an 8x8 JPEG whose frame header claims 30000x30000", "unreadable"),
    "huge_header.png": ("an 8x8 PNG whose IHDR claims 30000x30000 (valid CRC)", "unreadable"),
    "one_pixel.jpg": ("1x1 JPEG", "image"),
    "one_pixel.png": ("1x1 PNG", "image"),
    "cmyk.jpg": ("CMYK JPEG (Adobe)", "image"),
    "gray16.png": ("16-bit grayscale PNG (I;16)", "image"),
    "gray_alpha.png": ("grayscale + alpha PNG (LA)", "image"),
    "animated.gif": ("3-frame animated GIF (palette)", "image"),
    "progressive.jpg": ("progressive JPEG", "image"),
    "exif_rotated.jpg": ("JPEG with EXIF orientation 6 (not applied, by either path)", "image"),
    "arithmetic.jpg": ("arithmetic-coded JPEG (SOF9), written with libjpeg's arith_code", "image"),
    "grayscale.jpg": ("grayscale JPEG", "image"),
}


def transforms():
    """name -> transform: training (RandAugment: the affine kernel too; random erasing; bicubic), evaluation
    (bilinear), evaluation to one channel."""
    return {
        "train": create_transforms("imagenet", is_training=True, image_resize=SIZE, interpolation="bicubic",
                                   auto_augment="randaug-m9-mstd0.5-inc1", re_prob=0.25, hflip=0.5),
        "eval": create_transforms("imagenet", is_training=False, image_resize=SIZE),
        "eval_gray": create_transforms("imagenet", is_training=False, image_resize=SIZE, in_channels=1),
    }


def outcome(transform, data, seed):
    """("image", array) or ("error", exception type name)."""
    try:
        return "image", transform(data, np.random.default_rng(seed))
    except Exception as error:  # noqa: BLE001 - the type is what is compared
        return "error", type(error).__name__


needs_kernels = pytest.mark.skipif(kernels.library() is None, reason="image kernels not built on this machine")


def test_the_corpus_is_complete_and_small():
    assert sorted(os.listdir(CORPUS)) == sorted(CORPUS_FILES)
    assert all(os.path.getsize(os.path.join(CORPUS, name)) <= 8192 for name in CORPUS_FILES)
    assert os.path.getsize(os.path.join(CORPUS, "empty.jpg")) == 0
    assert b"\xff\xc9" in open(os.path.join(CORPUS, "arithmetic.jpg"), "rb").read()  # SOF9: arithmetic coding
    with Image.open(os.path.join(CORPUS, "exif_rotated.jpg")) as img:
        assert img.getexif()[0x0112] == 6
    with Image.open(os.path.join(CORPUS, "progressive.jpg")) as img:
        assert img.info.get("progressive")
    with Image.open(os.path.join(CORPUS, "animated.gif")) as img:
        assert img.n_frames == 3


@needs_kernels
@pytest.mark.parametrize("name", sorted(CORPUS_FILES))
def test_corpus_file_behaves_the_same_with_and_without_kernels(name, monkeypatch):
    data = open(os.path.join(CORPUS, name), "rb").read()
    with_kernels = {key: outcome(t, data, seed) for seed, (key, t) in enumerate(transforms().items())}
    monkeypatch.setattr(kernels, "_loaded", [None])
    without = {key: outcome(t, data, seed) for seed, (key, t) in enumerate(transforms().items())}
    expected = CORPUS_FILES[name][1]
    for key in with_kernels:
        (kind, value), (kind_off, value_off) = with_kernels[key], without[key]
        if expected == "unreadable":
            assert kind == kind_off == "error" and value == value_off == "UnreadableImageError", (key, value,
                                                                                                  value_off)
        else:
            assert kind == kind_off == "image", (key, value, value_off)
            channels = 1 if key == "eval_gray" else 3
            assert value.dtype == np.float32 and value.shape == (channels, SIZE, SIZE)
            assert np.isfinite(value).all()
            np.testing.assert_array_equal(value, value_off, err_msg=f"{name} {key}")


@needs_kernels
@pytest.mark.parametrize("name", ["arithmetic.jpg", "progressive.jpg", "exif_rotated.jpg", "one_pixel.jpg",
                                  "grayscale.jpg"])
def test_the_jpeg_kernel_itself_decodes_these_as_pillow_does(name):
    """Not a fallback: the kernel decodes these files (it links the libjpeg that Pillow uses, so arithmetic
    coding is decoded by both or by neither), with Pillow's pixels."""
    data = open(os.path.join(CORPUS, name), "rb").read()
    with Image.open(io.BytesIO(data)) as img:
        expected = np.asarray(img.convert("RGB").resize((16, 12), Image.BICUBIC, box=(0, 0) + img.size))
        got = kernels.jpeg_region(data, 1, (0, 0) + img.size, (16, 12), Image.BICUBIC, False)
    assert got is not None
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------------------------------------
# arguments of the image kernels


def image(height=20, width=30, channels=3):
    shape = (height, width) if channels == 1 else (height, width, channels)
    return (np.arange(np.prod(shape)) % 251).astype(np.uint8).reshape(shape)


def jpeg(height=24, width=32):
    buffer = io.BytesIO()
    Image.fromarray(image(height, width)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


BOX_ERROR = "the box (left, top, right, bottom) must be finite with left <= right and top <= bottom, inside the image"


@needs_kernels
@pytest.mark.parametrize("box", [(6, 5, 5, 10), (0, 12, 30, 11), (-1, 0, 5, 5), (0, 0, 31, 20), (0, 0, 30, 20.5),
                                 (40, 0, 50, 10), (float("nan"), 0, 5, 5), (0, 0, float("inf"), 5)])
def test_resize_refuses_a_box_inverted_or_outside_the_image(box):
    with pytest.raises(ValueError, match=BOX_ERROR.replace("(", r"\(").replace(")", r"\)")):
        kernels.resize(image(), box, (7, 4), Image.BILINEAR, False)


@needs_kernels
def test_resize_of_an_empty_box_is_pillows():
    """Pillow resamples a box of zero width or height (it refuses only inverted ones): so does the kernel."""
    pixels = image()
    for box in [(5, 5, 5, 10), (30, 0, 30, 20), (0, 20, 30, 20)]:
        expected = np.asarray(Image.fromarray(pixels).resize((7, 4), Image.BILINEAR, box=box))
        np.testing.assert_array_equal(kernels.resize(pixels, box, (7, 4), Image.BILINEAR, False), expected)


@needs_kernels
@pytest.mark.parametrize("pixels, box, out_size, resample, message", [
    (image(), (0, 0, 30, 20), (0, 4), Image.BILINEAR, "out_size must be positive"),
    (image(), (0, 0, 30, 20), (7, -3), Image.BILINEAR, "out_size must be positive"),
    (image(), (0, 0, 30, 20), (2 ** 40, 4), Image.BILINEAR, "out_size must be positive"),
    (image(0, 30), (0, 0, 30, 0), (7, 4), Image.BILINEAR, "a size is zero"),
    (image(20, 0), (0, 0, 0, 20), (7, 4), Image.BILINEAR, "a size is zero"),
    (image(channels=4), (0, 0, 30, 20), (7, 4), Image.BILINEAR, "1 or 3 channels"),
    (image(channels=2), (0, 0, 30, 20), (7, 4), Image.BILINEAR, "1 or 3 channels"),
    (image().astype(np.float32), (0, 0, 30, 20), (7, 4), Image.BILINEAR, "takes a uint8"),
    (image()[0], (0, 0, 30, 20), (7, 4), Image.BILINEAR, "a size is zero|the box"),  # [30, 3]: 3 wide
    (image(), (0, 0, 30), (7, 4), Image.BILINEAR, "a box is 4 numbers"),
    (image(), (0, 0, 30, 20), (7, 4), Image.NEAREST, "bilinear or bicubic"),
])
def test_resize_refuses_bad_arguments(pixels, box, out_size, resample, message):
    with pytest.raises(ValueError, match=message):
        kernels.resize(pixels, box, out_size, resample, False)


@needs_kernels
def test_jpeg_region_refuses_bad_arguments_and_declines_bad_data():
    data = jpeg()  # 32x24
    assert kernels.jpeg_region(data, 1, (0, 0, 32, 24), (8, 6), Image.BILINEAR, False).shape == (6, 8, 3)
    # the box in pixels of the reduced image: 16x12 at 1/2
    assert kernels.jpeg_region(data, 2, (0, 0, 16, 12), (8, 6), Image.BILINEAR, False).shape == (6, 8, 3)
    for reduction, box in [(2, (0, 0, 16.5, 12)), (1, (0, 0, 33, 24)), (1, (10, 0, 5, 24)), (1, (0, -2, 32, 24)),
                           (8, (0, 0, 5, 3)), (1, (0, 0, 32, float("nan")))]:
        with pytest.raises(ValueError, match="the box"):
            kernels.jpeg_region(data, reduction, box, (8, 6), Image.BILINEAR, False)
    for reduction, out_size, resample, message in [(3, (8, 6), Image.BILINEAR, "reduction must be 1, 2, 4 or 8"),
                                                   (0, (8, 6), Image.BILINEAR, "reduction"),
                                                   (1, (0, 6), Image.BILINEAR, "out_size must be positive"),
                                                   (1, (8, 6), Image.NEAREST, "bilinear or bicubic")]:
        with pytest.raises(ValueError, match=message):
            kernels.jpeg_region(data, reduction, (0, 0, 32, 24), out_size, resample, False)
    # data it cannot decode is Pillow's to judge: None, not an error
    broken = data[:200] + bytes(len(data) - 200)
    assert kernels.jpeg_region(broken, 1, (0, 0, 32, 24), (8, 6), Image.BILINEAR, False) is None
    assert kernels.jpeg_region(b"\xff\xd8\xff\xd9", 1, (0, 0, 1, 1), (8, 6), Image.BILINEAR, False) is None
    assert kernels.jpeg_header(b"") is None and kernels.jpeg_header(b"\xff\xd8") is None


@needs_kernels
def test_normalize_refuses_short_or_long_mean_and_std_and_bad_buffers():
    pixels = image()
    scale, bias = np.full(3, 1 / 60, np.float32), np.full(3, -2, np.float32)
    out = kernels.normalize(pixels, scale, bias)
    np.testing.assert_array_equal(out, (pixels.transpose(2, 0, 1) * scale[:, None, None]).astype(np.float32) - 2)
    for short_scale, short_bias in [(scale[:2], bias), (scale, bias[:2]), (scale[:1], bias[:1]),
                                    (np.full(4, 1, np.float32), np.zeros(4, np.float32))]:
        with pytest.raises(ValueError, match="one mean / std"):
            kernels.normalize(pixels, short_scale, short_bias)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        kernels.normalize(image(channels=4), np.ones(4, np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="a size is zero"):
        kernels.normalize(image(0, 30), scale, bias)
    with pytest.raises(ValueError, match="takes uint8 \\[H, W, C\\]"):
        kernels.normalize(image(channels=1), scale[:1], bias[:1])
    for bad_out in [np.empty((3, 20, 29), np.float32), np.empty((3, 20, 30), np.float64),
                    np.empty((3, 30, 20), np.float32).transpose(0, 2, 1), np.empty((1, 20, 30), np.float32)]:
        with pytest.raises(ValueError, match="out must be"):
            kernels.normalize(pixels, scale, bias, bad_out)


@needs_kernels
@pytest.mark.parametrize("kernels_on", [True, False])
def test_a_mean_or_std_that_does_not_fit_the_channels_is_refused(kernels_on, monkeypatch):
    """`--mean 120 120 --std 60 60` for three channels: refused when the transform is built, with or without
    the kernels (the kernel used to read past the two values)."""
    if not kernels_on:
        monkeypatch.setattr(kernels, "_loaded", [None])
    for mean, std, in_channels in [((120, 120), (60, 60), 3), ((120,), (60,), 3), ((1, 2, 3, 4), (1, 1, 1, 1), 3),
                                   ((120, 120), (60, 60), 1)]:
        with pytest.raises(ValueError, match="one mean and one std per channel"):
            create_transforms("imagenet", is_training=False, image_resize=SIZE, mean=mean, std=std, in_channels=in_channels)
    with pytest.raises(ValueError, match="std non-zero"):
        create_transforms("imagenet", is_training=False, image_resize=SIZE, mean=(1, 2, 3), std=(1, 0, 1))


@needs_kernels
def test_affine_refuses_bad_arguments_and_fills_for_non_finite_coefficients():
    pixels = image()
    identity = (1, 0, 0, 0, 1, 0)
    np.testing.assert_array_equal(kernels.affine(pixels, identity, Image.BILINEAR, (1, 2, 3)), pixels)
    for coeffs, fill, source, resample, message in [
            ((1, 0, 0, 0, 1), (1, 2, 3), pixels, Image.BILINEAR, "6 affine coefficients"),
            (identity + (0,), (1, 2, 3), pixels, Image.BILINEAR, "6 affine coefficients"),
            (identity, (1, 2), pixels, Image.BILINEAR, "one fill value per channel"),
            (identity, (1, 2, 3), image(channels=1), Image.BILINEAR, "one fill value per channel"),
            (identity, (1, 2), image(channels=2), Image.BILINEAR, "1 or 3 channels"),
            (identity, (1, 2, 3), image(0, 30), Image.BILINEAR, "a size is zero"),
            (identity, (1, 2, 3), pixels, Image.NEAREST, "bilinear or bicubic")]:
        with pytest.raises(ValueError, match=message):
            kernels.affine(source, coeffs, resample, fill)
    for resample in (Image.BILINEAR, Image.BICUBIC):
        for coeffs in [(np.nan, 0, 0, 0, 1, 0), (np.inf, 0, 0, 0, 1, 0), (0, 0, 0, 0, 0, -np.inf)]:
            out = kernels.affine(pixels, coeffs, resample, (1, 2, 3))
            assert (out == np.array([1, 2, 3], np.uint8)).all(), coeffs  # no point inside: all fill
        # finite coefficients whose sums overflow to inf - inf = NaN on the diagonal: the fill there, no crash
        out = kernels.affine(pixels, (1e308, -1e308, 0, 1e308, -1e308, 0), resample, (1, 2, 3))
        assert (out[5, 5] == (1, 2, 3)).all() and out.shape == pixels.shape


@needs_kernels
def test_mix_reversed_refuses_bad_batches():
    batch = np.arange(24, dtype=np.float32).reshape(4, 6)
    expected = 0.25 * batch + 0.75 * batch[::-1]
    kernels.mix_reversed(batch, 0.25)
    np.testing.assert_allclose(batch, expected, rtol=1e-6)
    for bad in [np.zeros((0, 6), np.float32), np.zeros((4, 6)), np.zeros((6, 4), np.float32).T,
                np.zeros((4, 0), np.float32)]:
        with pytest.raises(ValueError, match="mix_reversed"):
            kernels.mix_reversed(bad, 0.5)


RAW_CALLS = r'''
import ctypes, json, sys
import numpy as np
from mindcv.data import kernels
lib = kernels.library()
u8, f32, f64 = ctypes.POINTER(ctypes.c_uint8), ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_double)
img, out, chw = np.zeros((20, 30, 3), np.uint8), np.zeros((4, 7, 3), np.uint8), np.zeros(1800, np.float32)
ones, box = np.ones(3, np.float32), np.array([0, 0, 30, 20], np.float64)
data = open(sys.argv[1], "rb").read()
p = lambda a, kind: a.ctypes.data_as(kind)


def resize(image=p(img, u8), image_len=img.size, width=30, height=20, stride=90, channels=3, box=p(box, f64),
           out_w=7, out_h=4, out_len=out.size):
    return lib.mindcv_resize(image, image_len, width, height, stride, channels, box, out_w, out_h, 2, 0,
                             p(out, u8), out_len)


def normalize(hwc_len=img.size, pixels=600, scale=ones, chw_len=chw.size):
    return lib.mindcv_normalize(p(img, u8), hwc_len, pixels, 3, p(scale, f32), scale.size, p(ones, f32), 3,
                                p(chw, f32), chw_len)


def jpeg_region(size=len(data), reduction=1, box=box, out_len=out.size):
    return lib.mindcv_jpeg_region(data, size, reduction, p(box, f64), 7, 4, 2, 0, p(out, u8), out_len)


status = {
    "resize_ok": resize(),
    "resize_inverted": resize(box=p(np.array([20, 0, 10, 20], np.float64), f64)),
    "resize_zero_out": resize(out_w=0, out_len=0),
    "resize_negative_width": resize(width=-30),
    "resize_short_image": resize(image_len=img.size - 1),
    "resize_short_stride": resize(stride=60),
    "resize_short_out": resize(out_len=out.size - 1),
    "resize_null": resize(image=None),
    "resize_channels": resize(channels=4),
    "normalize_short_scale": normalize(scale=ones[:2]),
    "normalize_short_out": normalize(chw_len=chw.size - 1),
    "normalize_zero": normalize(hwc_len=0, pixels=0, chw_len=0),
    "mix_long_n": lib.mindcv_mix_reversed(p(np.zeros(12, np.float32), f32), 12, 3, 6, 0.5),
    "affine_short_image": lib.mindcv_affine(p(img, u8), img.size - 3, 30, 20, 3, p(np.eye(2, 3).ravel(), f64), 6,
                                            2, p(np.zeros(3, np.uint8), u8), 3, p(np.zeros_like(img), u8), img.size),
    "jpeg_region_ok": jpeg_region(),
    "jpeg_region_reduction": jpeg_region(reduction=3),
    "jpeg_region_short_out": jpeg_region(out_len=10),
    "jpeg_region_outside": jpeg_region(box=np.array([0, 0, 31, 20], np.float64)),
    "jpeg_region_empty": jpeg_region(size=0),
    "jpeg_header_null": lib.mindcv_jpeg_header(data, len(data), None, None, None),
}
print("STATUS " + json.dumps(status))
'''


@needs_kernels
def test_the_c_entry_points_check_what_the_wrappers_would_catch(tmp_path):
    """The kernels' own checks, called through ctypes without the Python wrappers' (in a subprocess: a missing
    check could crash it), each returning its Status (image_cpu.cc) instead of reading outside a buffer."""
    image_file = tmp_path / "image.jpg"
    image_file.write_bytes(jpeg(20, 30))
    result = subprocess.run([sys.executable, "-c", RAW_CALLS, str(image_file)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    status = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("STATUS "))[7:])
    bad_size, bad_channels, bad_box, bad_buffer, bad_reduction, bad_parameters = -1, -2, -3, -4, -6, -7
    assert status == {
        "resize_ok": 0, "resize_inverted": bad_box, "resize_zero_out": bad_size, "resize_negative_width": bad_size,
        "resize_short_image": bad_buffer, "resize_short_stride": bad_buffer, "resize_short_out": bad_buffer,
        "resize_null": bad_buffer, "resize_channels": bad_channels, "normalize_short_scale": bad_parameters,
        "normalize_short_out": bad_buffer, "normalize_zero": bad_size, "mix_long_n": bad_buffer,
        "affine_short_image": bad_buffer, "jpeg_region_ok": 0, "jpeg_region_reduction": bad_reduction,
        "jpeg_region_short_out": bad_buffer, "jpeg_region_outside": bad_box, "jpeg_region_empty": 1,
        "jpeg_header_null": bad_buffer}


# ---------------------------------------------------------------------------------------------------------
# fuzzing

FUZZ_SEED = int(os.environ.get("MINDCV_FUZZ_SEED", "20240611"))
FUZZ_CASES = int(os.environ.get("MINDCV_FUZZ_CASES", "5000"))

FUZZ = r'''
"""Mutated JPEG and PNG files through the training and evaluation transforms. argv: seed, cases, report path,
progress path. Writes a JSON report; the case being run is in the progress file (for a crash)."""
import io, json, os, struct, sys, time, warnings, zlib
import numpy as np
from PIL import Image
from mindcv.data import create_transforms, kernels
from mindcv.data.transforms import UnreadableImageError

seed, cases, report_path, progress_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
warnings.simplefilter("ignore")  # Pillow's decompression-bomb and truncated-file warnings
Image.MAX_IMAGE_PIXELS = 1 << 21  # bombs end quickly (a few megapixels at most are decoded)
SIZE = 24


def seeds():
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:40, 0:56]
    rgb = (np.stack([x * 4, y * 6, (x + y) * 2], -1) + rng.normal(0, 20, (40, 56, 3))).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(rgb)
    files = []
    for fmt, image, options in [("JPEG", img, dict(quality=80)), ("JPEG", img, dict(quality=90, subsampling=0)),
                                ("JPEG", img, dict(quality=80, progressive=True)), ("JPEG", img.convert("L"), {}),
                                ("JPEG", img.convert("CMYK"), {}), ("PNG", img, {}),
                                ("PNG", img.convert("P", palette=Image.ADAPTIVE, colors=16), {}),
                                ("PNG", img.convert("LA"), {}), ("PNG", img.convert("I;16"), {})]:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        files.append(buffer.getvalue())
    return files


def fix_png_crcs(data):
    """Recompute the CRC of every whole chunk, so that mutations reach the decoder past the CRC check."""
    out, at = bytearray(data), 8
    while at + 12 <= len(out):
        length = struct.unpack(">I", bytes(out[at:at + 4]))[0]
        end = at + 8 + length
        if end + 4 > len(out):
            break
        out[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(out[at + 4:end])))
        at = end + 4
    return bytes(out)


def mutate(data, rng):
    if len(data) < 4:  # nothing left to mutate
        return data
    data = bytearray(data)
    kind = int(rng.integers(7))
    if kind == 0:  # flip bits
        for _ in range(int(rng.integers(1, 9))):
            at = int(rng.integers(len(data)))
            data[at] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # set bytes to interesting values, in the headers more often
        limit = len(data) if rng.random() < 0.5 else min(len(data), 400)
        for _ in range(int(rng.integers(1, 5))):
            data[int(rng.integers(limit))] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFE, 0xFF, int(rng.integers(256))]))
    elif kind == 2:  # truncate
        data = data[:int(rng.integers(len(data)))]
    elif kind == 3:  # copy a chunk somewhere else
        start, length = int(rng.integers(len(data))), int(rng.integers(1, 200))
        at = int(rng.integers(len(data)))
        data[at:at] = data[start:start + length]
    elif kind == 4:  # delete a range
        start = int(rng.integers(len(data)))
        del data[start:start + int(rng.integers(1, 100))]
    elif kind == 5:  # a 16-bit field in the headers set to an extreme
        at = int(rng.integers(min(len(data) - 1, 300)))
        data[at:at + 2] = struct.pack(">H", int(rng.choice([0, 1, 2, 0x7FFF, 0xFFFF, int(rng.integers(65536))])))
    else:  # random bytes over a range
        start = int(rng.integers(len(data)))
        length = int(rng.integers(1, 64))
        data[start:start + length] = rng.integers(0, 256, min(length, len(data) - start), dtype=np.uint8).tobytes()
    return bytes(data)


rng = np.random.default_rng(seed)
bases = seeds()
transforms = {
    "train": create_transforms("imagenet", is_training=True, image_resize=SIZE, interpolation="bicubic",
                               auto_augment="randaug-m9-mstd0.5-inc1", re_prob=0.25),
    "eval": create_transforms("imagenet", is_training=False, image_resize=SIZE),
}
assert kernels.library() is not None
on = kernels._loaded[:]
report = {"images": 0, "unreadable": 0, "failures": [], "mismatches": [], "seconds": 0.0}
progress = os.open(progress_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
started = time.perf_counter()
for case in range(cases):
    base = int(rng.integers(len(bases)))
    data = mutate(bases[base], rng)
    for _ in range(int(rng.integers(0, 3))):  # sometimes several mutations
        data = mutate(data, rng)
    if bases[base].startswith(b"\x89PNG") and rng.random() < 0.7:
        data = fix_png_crcs(data)
    name = ("train", "eval")[case % 2]
    os.pwrite(progress, f"{case:08d}".encode(), 0)
    outcomes = []
    for loaded in (kernels._loaded[:], [None]):  # the kernels on, then off (Pillow and numpy)
        kernels._loaded[:] = loaded
        try:
            out = transforms[name](data, np.random.default_rng(case))
        except UnreadableImageError:
            outcomes.append("unreadable")
            continue
        except BaseException as error:  # anything else is a failure of the pipeline
            outcomes.append(f"{type(error).__name__}: {error}"[:300])
            continue
        if not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, SIZE, SIZE)
                and np.isfinite(out).all()):
            outcomes.append(f"bad result {getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}")
            continue
        outcomes.append(out)
    kernels._loaded[:] = on
    kinds = ["image" if isinstance(o, np.ndarray) else o for o in outcomes]
    if any(kind not in ("image", "unreadable") for kind in kinds):
        report["failures"].append([case, name, " / ".join(kinds), data.hex()])
    elif kinds[0] != kinds[1] or (kinds[0] == "image" and not np.array_equal(outcomes[0], outcomes[1])):
        report["mismatches"].append([case, name, " / ".join(kinds), data.hex()])
    else:
        report[kinds[0].replace("image", "images")] += 1
report["seconds"] = time.perf_counter() - started
os.pwrite(progress, b"done    ", 0)
with open(report_path, "w") as f:
    json.dump(report, f)
'''


@needs_kernels
def test_fuzzed_images_decode_or_are_unreadable(tmp_path):
    """FUZZ_CASES mutated JPEG and PNG files (seed FUZZ_SEED; MINDCV_FUZZ_SEED / MINDCV_FUZZ_CASES for longer
    runs) through the training and evaluation transforms, each with the kernels on and off: each gives a finite
    float32 array of the right shape or raises UnreadableImageError; the subprocess ends normally (a crash names
    the case). Where both give an image, the images are identical.

    One difference is known and allowed: a JPEG whose damage lies only below the crop, or after the last
    scanline (a bad marker before the end marker), gives the kernel's image, since the kernel decodes only the
    rows that the crop reads and stops there; Pillow decodes everything and calls the file unreadable. (About 2
    cases in 1000 here.) Any other difference fails."""
    report_path, progress_path = tmp_path / "report.json", tmp_path / "progress"
    env = {k: v for k, v in os.environ.items() if k not in ("MINDCV_IMAGE_KERNELS", "PYTHONWARNINGS")}
    result = subprocess.run([sys.executable, "-c", FUZZ, str(FUZZ_SEED), str(FUZZ_CASES), str(report_path),
                             str(progress_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    progress = progress_path.read_text() if progress_path.exists() else "not started"
    assert result.returncode == 0, (f"the fuzz process ended with {result.returncode} at case {progress} "
                                    f"(seed {FUZZ_SEED}): {result.stderr[-2000:]}")
    report = json.loads(report_path.read_text())
    for case, name, kinds, data in (report["failures"] + report["mismatches"])[:10]:  # kept for reproduction
        (tmp_path / f"case{case}.bin").write_bytes(bytes.fromhex(data))
    failures = [(case, name, kinds) for case, name, kinds, _ in report["failures"]]
    assert not failures, f"{len(failures)} of {FUZZ_CASES} cases (seed {FUZZ_SEED}) failed: {failures[:10]}"
    mismatches = [(case, name, kinds) for case, name, kinds, _ in report["mismatches"]]
    assert all(kinds == "image / unreadable" for _, _, kinds in mismatches), mismatches
    assert len(mismatches) < FUZZ_CASES // 100, mismatches
    assert report["images"] + report["unreadable"] + len(mismatches) == FUZZ_CASES
    # the mutations reach both outcomes often: the decoders are exercised, not just the format sniffing
    assert report["images"] > FUZZ_CASES // 10 and report["unreadable"] > FUZZ_CASES // 10, report
