"""The C++ image kernels of the data pipeline (mindcv/data/image_cpu.cc), through ctypes.

They give the same pixels as the Pillow / numpy code they replace, faster: a JPEG is decoded only where the
crop reads it and resampled as it is decoded, bit-exact with `Image.resize(size, filter, box)`; normalization
and mixup are single passes. ctypes releases the GIL during each call.

The library is compiled at first use (a C++ compiler and libjpeg's headers are needed, e.g. Debian's
libjpeg62-turbo-dev); where it cannot be, or with MINDCV_IMAGE_KERNELS=0, `library()` is None and the
transforms use Pillow and numpy, with a warning once.
"""
import ctypes
import glob
import os
import threading
import warnings
from typing import Optional

import numpy as np

from ..native.build import build

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "image_cpu.cc")
_u8 = ctypes.POINTER(ctypes.c_uint8)
_f32 = ctypes.POINTER(ctypes.c_float)
_f64 = ctypes.POINTER(ctypes.c_double)
_size = ctypes.c_size_t
_SIGNATURES = {
    "mindcv_jpeg_region": (ctypes.c_int, [ctypes.c_char_p, _size, ctypes.c_int, _f64, ctypes.c_int, ctypes.c_int,
                                          ctypes.c_int, ctypes.c_int, _u8, _size]),
    "mindcv_resize": (ctypes.c_int, [_u8, _size, ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int, _f64,
                                     ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, _u8, _size]),
    "mindcv_normalize": (ctypes.c_int, [_u8, _size, ctypes.c_int64, ctypes.c_int, _f32, ctypes.c_int, _f32,
                                        ctypes.c_int, _f32, _size]),
    "mindcv_mix_reversed": (ctypes.c_int, [_f32, _size, ctypes.c_int, ctypes.c_int64, ctypes.c_float]),
    "mindcv_affine": (ctypes.c_int, [_u8, _size, ctypes.c_int, ctypes.c_int, ctypes.c_int, _f64, ctypes.c_int,
                                     ctypes.c_int, _u8, ctypes.c_int, _u8, _size]),
    "mindcv_jpeg_header": (ctypes.c_int, [ctypes.c_char_p, _size, ctypes.POINTER(ctypes.c_int),
                                          ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]),
}
# the kernels' Status codes (image_cpu.cc): positive for data they cannot process, negative for refused arguments
UNDECODABLE, UNSUPPORTED_COLOR, OUT_OF_MEMORY = 1, 2, 3
_REFUSED = {
    -1: "a size is zero, negative or above 2**24 pixels",
    -2: "the image kernels take 1 or 3 channels",
    -3: "the box (left, top, right, bottom) must be finite with left <= right and top <= bottom, inside the image",
    -4: "a buffer's length does not match the sizes",
    -5: "the resampling filter must be bilinear or bicubic",
    -6: "the JPEG reduction must be 1, 2, 4 or 8",
    -7: "one mean / std (scale / bias) value and one fill value per channel, and 6 affine coefficients, are needed",
}
_MAX_INT = 2 ** 31 - 1
JPEG_SIGNATURE, JPEG_END = b"\xff\xd8", b"\xff\xd9"
_loaded = []
_load_lock = threading.Lock()


def _libjpeg_link_args():
    """Link with the libjpeg that Pillow itself uses, so that decoded pixels are Pillow's: the copy bundled with
    a Pillow wheel (pillow.libs), else the system's."""
    import PIL

    bundled = glob.glob(os.path.join(os.path.dirname(os.path.dirname(PIL.__file__)), "pillow.libs", "libjpeg*.so*"))
    if bundled:
        return (bundled[0], f"-Wl,-rpath,{os.path.dirname(bundled[0])}")
    return ("-ljpeg",)


def library() -> Optional[ctypes.CDLL]:
    """The loaded kernels, or None where they are switched off or cannot be built."""
    if not _loaded:
        with _load_lock:  # worker threads call this at once on first use: one build
            if not _loaded:
                _loaded.append(_load())
    return _loaded[0]


def _load() -> Optional[ctypes.CDLL]:
    if os.environ.get("MINDCV_IMAGE_KERNELS", "1") == "0":
        return None
    # no fused multiply-adds: the results must round as Pillow's and numpy's do
    fallback = "Pillow and numpy for the image transforms (slower data loading)"
    path = build(_SOURCE, link=_libjpeg_link_args(), flags=("-ffp-contract=off",), fallback=fallback)
    if path is None:
        return None
    try:  # `build` has loaded and checked this library: only an entry point missing from it can fail here
        lib = ctypes.CDLL(path)
        for name, (restype, argtypes) in _SIGNATURES.items():
            getattr(lib, name).restype = restype
            getattr(lib, name).argtypes = argtypes
    except (OSError, AttributeError) as error:
        warnings.warn(f"mindcv.data.kernels: {path} is not usable ({error}); using {fallback}")
        return None
    return lib


def _ptr(array, kind):
    return array.ctypes.data_as(kind)


def _check(status, function, details):
    """Raise for a kernel's non-zero Status: ValueError for refused arguments (one line naming them)."""
    if status < 0:
        raise ValueError(f"mindcv.data.kernels.{function}: {_REFUSED.get(status, f'refused (status {status})')} "
                         f"(got {details})")
    if status == OUT_OF_MEMORY:
        raise MemoryError(f"mindcv.data.kernels.{function}: the image kernels ran out of memory")
    if status:
        raise ValueError(f"mindcv.data.kernels.{function}: failed with status {status} (got {details})")


def _box(box):
    box = np.ascontiguousarray(box, np.float64)
    if box.shape != (4,):
        raise ValueError(f"a box is 4 numbers (left, top, right, bottom), got shape {box.shape}")
    return box


def _out_size(out_size):
    """(width, height) as ints that fit the kernels' int arguments; ValueError otherwise (a C int would wrap)."""
    try:
        width, height = (int(side) for side in out_size)
    except (TypeError, ValueError) as error:
        raise ValueError(f"out_size must be (width, height), got {out_size!r}") from error
    if not (0 < width <= _MAX_INT and 0 < height <= _MAX_INT):
        raise ValueError(f"out_size must be positive, got {out_size!r}")
    return width, height


def _pixels(image, function):
    """A C-contiguous uint8 [H, W] or [H, W, C] array, its channel count; ValueError for anything else."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"mindcv.data.kernels.{function}: takes a uint8 [H, W] or [H, W, C] array, got "
                         f"{image.dtype} {image.shape}")
    if max(image.shape) > _MAX_INT:
        raise ValueError(f"mindcv.data.kernels.{function}: image too large, {image.shape}")
    return image, 1 if image.ndim == 2 else image.shape[2]


def jpeg_header(data: bytes):
    """(width, height, components) of a JPEG, or None when `data` is not a JPEG whose header libjpeg reads."""
    data = bytes(data)
    if not data.startswith(JPEG_SIGNATURE):
        return None
    width, height, components = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    if library().mindcv_jpeg_header(data, len(data), ctypes.byref(width), ctypes.byref(height),
                                    ctypes.byref(components)):
        return None
    return width.value, height.value, components.value


def jpeg_region(data: bytes, reduction: int, box, out_size, resample: int, hflip: bool) -> Optional[np.ndarray]:
    """RGB uint8 [out_h, out_w, 3]: the JPEG `data` decoded at 1/`reduction` scale, its region `box` (pixels of
    the reduced image) resampled to `out_size` (w, h) with Pillow filter `resample`, mirrored when `hflip`;
    None when the kernel does not decode this file (not a JPEG, CMYK, corrupt, no end marker in its last 64
    bytes: Pillow then decides). ValueError for refused arguments (a box outside the reduced image included)."""
    data = bytes(data)
    out_w, out_h = _out_size(out_size)
    box = _box(box)
    if data.rfind(JPEG_END, -64) < 0:
        # without its end marker the file may be truncated below the crop, which the kernel never reads
        return None
    out = np.empty((out_h, out_w, 3), np.uint8)
    status = library().mindcv_jpeg_region(data, len(data), int(reduction), _ptr(box, _f64), out_w, out_h,
                                          int(resample), int(hflip), _ptr(out, _u8), out.size)
    if status < 0:
        _check(status, "jpeg_region", f"reduction {reduction}, box {tuple(box)}, out_size {out_size}, "
                                      f"resample {resample}")
    return out if status == 0 else None


def resize(image: np.ndarray, box, out_size, resample: int, hflip: bool) -> np.ndarray:
    """`Image.resize(out_size, resample, box)` of a uint8 [H, W] or [H, W, 3] array, mirrored when `hflip`."""
    image, channels = _pixels(image, "resize")
    out_w, out_h = _out_size(out_size)
    out = np.empty((out_h, out_w) + image.shape[2:], np.uint8)
    box = _box(box)
    height, width = image.shape[:2]
    status = library().mindcv_resize(_ptr(image, _u8), image.size, width, height, image.strides[0], channels,
                                     _ptr(box, _f64), out_w, out_h, int(resample), int(hflip), _ptr(out, _u8),
                                     out.size)
    _check(status, "resize", f"image {width}x{height} with {channels} channels, box {tuple(box)}, "
                             f"out_size {out_size}, resample {resample}")
    return out


def affine(image: np.ndarray, coeffs, resample: int, fill) -> np.ndarray:
    """`Image.transform(size, Image.AFFINE, coeffs, resample, fillcolor=fill)` of a uint8 [H, W] or [H, W, 3]
    array (same size out; `fill` one value per channel, or one for all)."""
    image, channels = _pixels(image, "affine")
    out = np.empty_like(image)
    coeffs = np.ascontiguousarray(coeffs, np.float64).reshape(-1)
    fill = np.asarray(fill, np.uint8).reshape(-1)
    if fill.size == 1:
        fill = np.repeat(fill, channels)
    fill = np.ascontiguousarray(fill)
    height, width = image.shape[:2]
    status = library().mindcv_affine(_ptr(image, _u8), image.size, width, height, channels, _ptr(coeffs, _f64),
                                     coeffs.size, int(resample), _ptr(fill, _u8), fill.size, _ptr(out, _u8),
                                     out.size)
    _check(status, "affine", f"image {width}x{height} with {channels} channels, {coeffs.size} coefficients, "
                             f"{fill.size} fill values, resample {resample}")
    return out


def normalize(pixels: np.ndarray, scale: np.ndarray, bias: np.ndarray, out: Optional[np.ndarray] = None
              ) -> np.ndarray:
    """uint8 [H, W, C] -> float32 [C, H, W] = pixels * scale[c] + bias[c], into `out` when given (C-contiguous);
    `scale` and `bias` one value per channel."""
    pixels, channels = _pixels(pixels, "normalize")
    if pixels.ndim != 3:
        raise ValueError(f"mindcv.data.kernels.normalize: takes uint8 [H, W, C] pixels, got {pixels.shape}")
    height, width = pixels.shape[:2]
    scale = np.ascontiguousarray(scale, np.float32).reshape(-1)
    bias = np.ascontiguousarray(bias, np.float32).reshape(-1)
    if out is None:
        out = np.empty((channels, height, width), np.float32)
    elif not (isinstance(out, np.ndarray) and out.shape == (channels, height, width) and out.dtype == np.float32
              and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"mindcv.data.kernels.normalize: out must be a writable C-contiguous float32 array of "
                         f"shape {(channels, height, width)}, got "
                         f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
    status = library().mindcv_normalize(_ptr(pixels, _u8), pixels.size, height * width, channels, _ptr(scale, _f32),
                                        scale.size, _ptr(bias, _f32), bias.size, _ptr(out, _f32), out.size)
    _check(status, "normalize", f"{width}x{height} pixels with {channels} channels, {scale.size} scale and "
                                f"{bias.size} bias values")
    return out


def mix_reversed(batch: np.ndarray, lam: float) -> None:
    """In place: batch[i] = lam * batch[i] + (1 - lam) * batch[n - 1 - i] (float32, C-contiguous)."""
    if not (isinstance(batch, np.ndarray) and batch.dtype == np.float32 and batch.flags.c_contiguous
            and batch.flags.writeable and batch.ndim >= 1):
        raise ValueError("mindcv.data.kernels.mix_reversed: takes a writable C-contiguous float32 batch, got "
                         f"{getattr(batch, 'dtype', type(batch).__name__)} {getattr(batch, 'shape', '')}")
    if not 0 < len(batch) <= _MAX_INT:
        raise ValueError(f"mindcv.data.kernels.mix_reversed: the batch is empty or too long ({len(batch)})")
    image_size = batch[0].size
    _check(library().mindcv_mix_reversed(_ptr(batch, _f32), batch.size, len(batch), image_size, float(lam)),
           "mix_reversed", f"batch {batch.shape}")
