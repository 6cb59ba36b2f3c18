"""Mistaken arguments to the image kernels: each entry point refuses what would make it read or write outside its
buffers, and the Python wrappers turn that into a one-line ValueError."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mindcv.data import create_transforms, kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32

needs_kernels = pytest.mark.skipif(kernels.library() is None, reason="image kernels not built on this machine")


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
            create_transforms("imagenet", False, image_resize=SIZE, mean=mean, std=std, in_channels=in_channels)
    with pytest.raises(ValueError, match="std non-zero"):
        create_transforms("imagenet", False, image_resize=SIZE, mean=(1, 2, 3), std=(1, 0, 1))


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
