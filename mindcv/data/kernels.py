"""The C++ image kernels of the data pipeline (mindcv/ops/image_cpu.cc), through ctypes.

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
from typing import Optional

import numpy as np

from ..ops._build import build

_SOURCE = "image_cpu.cc"
_u8 = ctypes.POINTER(ctypes.c_uint8)
_f32 = ctypes.POINTER(ctypes.c_float)
_f64 = ctypes.POINTER(ctypes.c_double)
_SIGNATURES = {
    "mindcv_jpeg_region": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, _f64, ctypes.c_int,
                                          ctypes.c_int, ctypes.c_int, ctypes.c_int, _u8]),
    "mindcv_resize": (ctypes.c_int, [_u8, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, _f64,
                                     ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, _u8]),
    "mindcv_normalize": (None, [_u8, ctypes.c_int64, ctypes.c_int, _f32, _f32, _f32]),
    "mindcv_mix_reversed": (None, [_f32, ctypes.c_int, ctypes.c_int64, ctypes.c_float]),
    "mindcv_affine": (ctypes.c_int, [_u8, ctypes.c_int, ctypes.c_int, ctypes.c_int, _f64, ctypes.c_int, _u8, _u8]),
    "mindcv_jpeg_header": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int),
                                          ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]),
}
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
    path = build(_SOURCE, link=_libjpeg_link_args(), flags=("-ffp-contract=off",),
                 fallback="Pillow and numpy for the image transforms (slower data loading)")
    if path is None:
        return None
    lib = ctypes.CDLL(path)
    for name, (restype, argtypes) in _SIGNATURES.items():
        getattr(lib, name).restype = restype
        getattr(lib, name).argtypes = argtypes
    return lib


def _ptr(array, kind):
    return array.ctypes.data_as(kind)


def _check(status, channels):
    if status == 1:
        raise ValueError(f"the image kernels take 1 or 3 channels, got {channels}")
    if status:
        raise MemoryError("the image kernels ran out of memory")


def _box(box):
    return np.ascontiguousarray(box, np.float64)


def jpeg_header(data: bytes):
    """(width, height, components) of a JPEG, or None when `data` is not a JPEG whose header libjpeg reads."""
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
    bytes: Pillow then decides)."""
    if data.rfind(JPEG_END, -64) < 0:
        # without its end marker the file may be truncated below the crop, which the kernel never reads
        return None
    out = np.empty((out_size[1], out_size[0], 3), np.uint8)
    box = _box(box)
    status = library().mindcv_jpeg_region(data, len(data), reduction, _ptr(box, _f64), out_size[0], out_size[1],
                                          resample, int(hflip), _ptr(out, _u8))
    return out if status == 0 else None


def resize(image: np.ndarray, box, out_size, resample: int, hflip: bool) -> np.ndarray:
    """`Image.resize(out_size, resample, box)` of a uint8 [H, W] or [H, W, 3] array, mirrored when `hflip`."""
    image = np.ascontiguousarray(image)
    channels = 1 if image.ndim == 2 else image.shape[2]
    out = np.empty((out_size[1], out_size[0]) + image.shape[2:], np.uint8)
    box = _box(box)
    status = library().mindcv_resize(_ptr(image, _u8), image.shape[1], image.shape[0], image.strides[0], channels,
                                     _ptr(box, _f64), out_size[0], out_size[1], resample, int(hflip),
                                     _ptr(out, _u8))
    _check(status, channels)
    return out


def affine(image: np.ndarray, coeffs, resample: int, fill) -> np.ndarray:
    """`Image.transform(size, Image.AFFINE, coeffs, resample, fillcolor=fill)` of a uint8 [H, W] or [H, W, 3]
    array (same size out; `fill` one value per channel)."""
    image = np.ascontiguousarray(image)
    channels = 1 if image.ndim == 2 else image.shape[2]
    out = np.empty_like(image)
    coeffs = np.ascontiguousarray(coeffs, np.float64)
    fill = np.ascontiguousarray(np.broadcast_to(np.asarray(fill, np.uint8), (channels,)))
    _check(library().mindcv_affine(_ptr(image, _u8), image.shape[1], image.shape[0], channels, _ptr(coeffs, _f64),
                                   resample, _ptr(fill, _u8), _ptr(out, _u8)), channels)
    return out


def normalize(pixels: np.ndarray, scale: np.ndarray, bias: np.ndarray, out: Optional[np.ndarray] = None
              ) -> np.ndarray:
    """uint8 [H, W, C] -> float32 [C, H, W] = pixels * scale[c] + bias[c], into `out` when given (C-contiguous)."""
    pixels = np.ascontiguousarray(pixels)
    height, width, channels = pixels.shape
    if out is None:
        out = np.empty((channels, height, width), np.float32)
    assert out.shape == (channels, height, width) and out.dtype == np.float32 and out.flags.c_contiguous
    library().mindcv_normalize(_ptr(pixels, _u8), height * width, channels, _ptr(scale, _f32), _ptr(bias, _f32),
                               _ptr(out, _f32))
    return out


def mix_reversed(batch: np.ndarray, lam: float) -> None:
    """In place: batch[i] = lam * batch[i] + (1 - lam) * batch[n - 1 - i] (float32, C-contiguous)."""
    assert batch.dtype == np.float32 and batch.flags.c_contiguous
    library().mindcv_mix_reversed(_ptr(batch, _f32), len(batch), batch[0].size, float(lam))
