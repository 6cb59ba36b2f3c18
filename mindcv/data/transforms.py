"""Per-image transforms: an encoded image (or its decoded pixels) -> normalized float32 CHW array.

A transform is called as `transform(data, rng, out=None)`: `data` the encoded file (bytes or a 1-D uint8
array) or decoded pixels (a uint8 [H, W] or [H, W, C] array, as the CIFAR and MNIST datasets give), `rng` a
`numpy.random.Generator` that supplies every random draw (the loader keys it by (seed, epoch, sample), which
makes augmentation reproducible). Decoding, cropping, resizing and the horizontal flip are fused: the crop box
is computed from the image header, the JPEG is decoded at 1/2, 1/4 or 1/8 size (DCT scaling) when the crop is
still at least the output size there, and the pixels are those of one `Image.resize(box=...)`, computed by the
image kernels of `mindcv.data.kernels` (or by Pillow where they are not built).
"""

import inspect
import io
import math

import numpy as np
from PIL import Image, ImageEnhance, UnidentifiedImageError

from .auto_augment import auto_augment_from_policy
from . import kernels
from .constants import (CIFAR_DEFAULT_MEAN, CIFAR_DEFAULT_STD, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD,
                        MNIST_DEFAULT_MEAN, MNIST_DEFAULT_STD)

INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
IMAGENET_STYLE = ("", "imagenet", "imagefolder")
SMALL_IMAGE_DATASETS = ("cifar10", "cifar100", "mnist")


class UnreadableImageError(Exception):
    """The encoded image cannot be decoded (corrupt, truncated or not an image)."""


def is_pixels(data):
    """Whether `data` is decoded pixels (uint8 [H, W] or [H, W, C]) rather than an encoded file."""
    return isinstance(data, np.ndarray) and data.ndim in (2, 3)


def _from_pixels(pixels):
    """PIL image of uint8 [H, W], [H, W, 1] or [H, W, 3] pixels."""
    if pixels.dtype != np.uint8 or (pixels.ndim == 3 and pixels.shape[2] not in (1, 3)):
        raise UnreadableImageError(f"pixels must be uint8 [H, W], [H, W, 1] or [H, W, 3], got {pixels.dtype} "
                                   f"{pixels.shape}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(pixels))


def _dct_reduction(box, out_size):
    """The largest JPEG DCT reduction (1, 2, 4 or 8) that keeps the crop `box` at least `out_size`.

    Decoding at 1/reduction size maps original pixel x to x / reduction (the reduced size is rounded up).
    """
    left, upper, right, lower = box
    reduction = 1
    while reduction < 8 and (right - left) >= 2 * reduction * out_size[0] \
            and (lower - upper) >= 2 * reduction * out_size[1]:
        reduction *= 2
    return reduction


def decode_region(data, plan, out_size, in_channels=3, interpolation=Image.BILINEAR):
    """Decode the region `box` of an encoded image, resized to `out_size`, optionally mirrored.

    Args:
        data: encoded image (bytes or 1-D uint8 array), or decoded pixels (uint8 [H, W] or [H, W, C]).
        plan: function of the full image size (w, h) returning `(box, hflip)`: the crop box
            (left, upper, right, lower) in pixels, floats allowed, and whether to mirror the
            result left-right.
        out_size: (width, height) of the result, pixels.
        in_channels: 3 gives an RGB image, 1 a grayscale one.
        interpolation: PIL resampling filter.

    Returns:
        uint8 [height, width, 3] (RGB) or [height, width] (grayscale): the pixels of
        `Image.resize(out_size, interpolation, box)`, which the image kernels (see
        `mindcv.data.kernels`) compute without decoding the parts of a JPEG outside the crop.

    Raises:
        UnreadableImageError: the data cannot be decoded.
    """
    use_kernels = kernels.library() is not None and interpolation in (Image.BILINEAR, Image.BICUBIC)
    target_mode = "RGB" if in_channels == 3 else "L"
    if is_pixels(data):
        img = _from_pixels(data)
        box, hflip = plan(img.size)
        reduction = 1
        header = None
    else:
        data = bytes(data)
        header = kernels.jpeg_header(data) if use_kernels and in_channels == 3 else None
    # a grayscale or colour JPEG (not CMYK) within Pillow's decompression-bomb limit: the kernel decodes it
    if header is not None and header[2] in (1, 3) and header[0] * header[1] <= (Image.MAX_IMAGE_PIXELS or math.inf):
        box, hflip = plan(header[:2])
        reduction = _dct_reduction(box, out_size)
        scaled_box = tuple(edge / reduction for edge in box)
        pixels = kernels.jpeg_region(data, reduction, scaled_box, out_size, interpolation, hflip)
        if pixels is not None:
            return pixels
        img = _open(data)  # a file that the kernel does not decode cleanly: Pillow decides
    elif not is_pixels(data):
        img = _open(data)
        box, hflip = plan(img.size)
        reduction = _dct_reduction(box, out_size) if img.format == "JPEG" else 1
    full_width = img.size[0]
    try:
        if reduction > 1:
            img.draft(img.mode, (img.size[0] // reduction, img.size[1] // reduction))
        if img.mode not in ("RGB", "L"):
            # palette, CMYK, alpha, 16-bit: convert before resampling
            img = img.convert(target_mode)
        img.load()
    except DECODE_ERRORS as err:
        raise UnreadableImageError(str(err) or type(err).__name__) from err
    reduction = round(full_width / img.size[0])  # the one draft gave
    scaled_box = tuple(edge / reduction for edge in box)
    if use_kernels:
        pixels = kernels.resize(np.asarray(img), scaled_box, out_size, interpolation, hflip)
        if img.mode == target_mode:
            return pixels
        return np.asarray(Image.fromarray(pixels, img.mode).convert(target_mode))
    img = img.resize(out_size, interpolation, box=scaled_box)
    if hflip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(img if img.mode == target_mode else img.convert(target_mode))


def _open(data):
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        # PIL's message names the in-memory buffer ('<_io.BytesIO object at 0x...>'); the caller names the file
        raise UnreadableImageError("not an image format PIL knows, or not an image") from None
    except DECODE_ERRORS as err:
        raise UnreadableImageError(str(err) or type(err).__name__) from err


def random_resized_crop_box(size, rng, scale=(0.08, 1.0), ratio=(0.75, 1.333), attempts=10):
    """Crop box (left, upper, right, lower) of a random resized crop of an image of `size` (w, h).

    Area fraction uniform in `scale`, aspect ratio (w/h) log-uniform in `ratio`;
    after `attempts` misses, the largest centred crop with a ratio within `ratio`.
    """
    width, height = size
    area = width * height
    log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
    for _ in range(attempts):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = np.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(np.sqrt(target_area * aspect)))
        h = int(round(np.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def center_crop_box(size, image_resize, crop_pct):
    """Box in original pixels equivalent to: resize the shorter side to
    int(image_resize / crop_pct), then take the centred image_resize square."""
    width, height = size
    short = int(image_resize / crop_pct)
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    left = int(round((new_w - image_resize) / 2.0))
    top = int(round((new_h - image_resize) / 2.0))
    sx, sy = width / new_w, height / new_h
    return left * sx, top * sy, (left + image_resize) * sx, (top + image_resize) * sy


class Normalize:
    """uint8 HWC (or HW) pixels -> float32 CHW, `(pixel - mean) / std` on the 0-255 scale."""

    def __init__(self, mean, std, in_channels):
        mean, std = np.asarray(mean, np.float32).reshape(-1), np.asarray(std, np.float32).reshape(-1)
        if in_channels == 1 and mean.size == 3 and std.size == 3:
            mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
        # the normalize kernel and the numpy path both read one mean and one std per channel
        if mean.size != in_channels or std.size != in_channels:
            raise ValueError(f"normalization needs one mean and one std per channel ({in_channels}), got "
                             f"{mean.size} mean and {std.size} std values")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std != 0).all()):
            raise ValueError(f"normalization mean and std must be finite and std non-zero, got mean "
                             f"{mean.tolist()}, std {std.tolist()}")
        self.scale = (1.0 / std).astype(np.float32)
        self.bias = (-mean / std).astype(np.float32)
        self.in_channels = in_channels

    def __call__(self, pixels, out=None):
        """`out`: optional float32 [C, H, W] array (C-contiguous) to write into."""
        pixels = np.asarray(pixels)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if kernels.library() is not None:
            return kernels.normalize(pixels, self.scale, self.bias, out)
        if out is None:
            out = np.empty((self.in_channels,) + pixels.shape[:2], np.float32)
        for c in range(self.in_channels):
            np.multiply(pixels[:, :, c], self.scale[c], out=out[c])
            out[c] += self.bias[c]
        return out


def _fresh_rng(rng):
    """`rng`, or a generator seeded from the operating system when a caller gives none."""
    return np.random.default_rng() if rng is None else rng


def _apply_to_image(function, img, rng):
    """`function(PIL image, rng)` on a PIL image or uint8 pixels; the result of the input's kind."""
    if isinstance(img, Image.Image):
        return function(img, rng)
    return np.asarray(function(_from_pixels(np.asarray(img)), rng))


class RandomResizedCropDecode:
    """Decode (when encoded), take a random resized crop and resize it to `size` x `size`: uint8 [H, W, C]
    ([H, W] for one channel). Area fraction uniform in `scale`, aspect ratio (w/h) log-uniform in `ratio`."""

    def __init__(self, size, scale=(0.08, 1.0), ratio=(0.75, 1.333), interpolation=Image.BILINEAR, in_channels=3):
        self.size, self.scale, self.ratio = size, scale, ratio
        self.interpolation, self.in_channels = interpolation, in_channels

    def box(self, image_size, rng):
        return random_resized_crop_box(image_size, rng, self.scale, self.ratio)

    def __call__(self, data, rng=None):
        rng = _fresh_rng(rng)
        return decode_region(data, lambda size: (self.box(size, rng), False), (self.size, self.size),
                             self.in_channels, self.interpolation)


class DecodeResizeCenterCrop:
    """Decode (when encoded), resize the shorter side to int(size / crop_pct) and take the centred `size` x `size`
    square, in one resampling: uint8 [H, W, C] ([H, W] for one channel)."""

    def __init__(self, size, crop_pct=0.875, interpolation=Image.BILINEAR, in_channels=3):
        self.size, self.crop_pct = size, crop_pct
        self.interpolation, self.in_channels = interpolation, in_channels

    def __call__(self, data, rng=None):
        return decode_region(data, lambda size: (center_crop_box(size, self.size, self.crop_pct), False),
                             (self.size, self.size), self.in_channels, self.interpolation)


class Resize:
    """Decode (when encoded) and resize the whole image to `size` x `size`: uint8 [H, W, C] ([H, W] for one
    channel)."""

    def __init__(self, size, interpolation=Image.BILINEAR, in_channels=3):
        self.size, self.interpolation, self.in_channels = size, interpolation, in_channels

    def __call__(self, data, rng=None, hflip=False):
        return decode_region(data, lambda size: ((0, 0) + tuple(size), hflip), (self.size, self.size),
                             self.in_channels, self.interpolation)


class RandomCropPad:
    """Zero-pad by `padding` pixels on every side and take a random crop of the original size (MindCV's CIFAR
    crop): uint8 pixels of the input's shape (an encoded input is decoded first)."""

    def __init__(self, padding=4, in_channels=3):
        self.padding, self.in_channels = padding, in_channels

    def __call__(self, data, rng=None):
        rng = _fresh_rng(rng)
        pixels = data if is_pixels(data) else np.asarray(_decoded(data, self.in_channels))
        pad = self.padding
        height, width = pixels.shape[:2]
        padded = np.pad(pixels, ((pad, pad), (pad, pad)) + ((0, 0),) * (pixels.ndim - 2))
        top, left = (int(v) for v in rng.integers(0, 2 * pad + 1, size=2))
        return np.ascontiguousarray(padded[top:top + height, left:left + width])


class RandomHorizontalFlip:
    """Mirror uint8 pixels left-right with probability `prob` (one draw per call, whatever `prob`)."""

    def __init__(self, prob=0.5):
        self.prob = prob

    def draw(self, rng):
        return rng.random() < self.prob

    def __call__(self, pixels, rng=None):
        pixels = np.asarray(pixels)
        return pixels[:, ::-1] if self.draw(_fresh_rng(rng)) else pixels


class RandomVerticalFlip(RandomHorizontalFlip):
    """Mirror uint8 pixels top-bottom with probability `prob` (one draw per call, whatever `prob`)."""

    def __call__(self, pixels, rng=None):
        pixels = np.asarray(pixels)
        return pixels[::-1] if self.draw(_fresh_rng(rng)) else pixels


class AutoAugmentation:
    """The auto-augmentation `policy` (see `mindcv.data.auto_augment`) on uint8 pixels or a PIL image."""

    def __init__(self, policy, fill=(128, 128, 128), interpolation=Image.BILINEAR):
        self.policy = policy
        self.augment = auto_augment_from_policy(policy, fill, interpolation)

    def __call__(self, img, rng=None):
        return _apply_to_image(self.augment, img, _fresh_rng(rng))


class ColorJitter:
    """Brightness, contrast, saturation and hue jitter in random order, on uint8 pixels or a PIL image.

    Factors are uniform in [max(0, 1 - s), 1 + s] for the first three and the hue
    shift uniform in [-h, h] (fraction of the hue circle, h <= 0.5).
    """

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
        self.strengths = (brightness, contrast, saturation, hue)

    @staticmethod
    def shift_hue(img, shift):
        if img.mode == "L":
            return img
        hsv = np.array(img.convert("HSV"))
        hsv[:, :, 0] += np.uint8(int(round(shift * 255)) % 256)  # uint8 wraps around the hue circle
        return Image.fromarray(hsv, "HSV").convert("RGB")

    def jitter(self, img, rng):
        """The jitter of a PIL image."""
        for which in rng.permutation(4):
            strength = self.strengths[which]
            if strength <= 0:
                continue
            if which == 3:
                img = self.shift_hue(img, rng.uniform(-strength, strength))
            else:
                factor = rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength)
                enhancer = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)[which]
                img = enhancer(img).enhance(factor)
        return img

    def __call__(self, img, rng=None):
        return _apply_to_image(self.jitter, img, _fresh_rng(rng))


class RandomErasing:
    """Erase one random rectangle of a normalized CHW array with probability `prob`.

    Area fraction uniform in `scale`, aspect log-uniform in `ratio`, up to
    `max_attempts` draws to fit it; filled with `value` (in normalized units) or,
    with value "random", per-pixel standard normal noise.
    """

    def __init__(self, prob, value=0, scale=(0.02, 0.33), ratio=(0.3, 3.3), max_attempts=10):
        if value != "random" and not isinstance(value, (int, float)):
            raise ValueError(f"re_value must be a number or 'random', got {value!r}")
        self.prob = prob
        self.value = value
        self.scale = scale
        self.log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
        self.max_attempts = max_attempts

    def __call__(self, chw, rng=None):
        rng = _fresh_rng(rng)
        if rng.random() >= self.prob:
            return chw
        channels, height, width = chw.shape
        for _ in range(self.max_attempts):
            area = height * width * rng.uniform(self.scale[0], self.scale[1])
            aspect = np.exp(rng.uniform(self.log_ratio[0], self.log_ratio[1]))
            h = int(round(np.sqrt(area * aspect)))
            w = int(round(np.sqrt(area / aspect)))
            if w < width and h < height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                if self.value == "random":
                    chw[:, top:top + h, left:left + w] = rng.standard_normal((channels, h, w), dtype=np.float32)
                else:
                    chw[:, top:top + h, left:left + w] = self.value
                break
        return chw


class TrainTransform:
    """The ImageNet training operations of `create_transforms`' list, fused: the random resized crop, the
    horizontal flip and the decoding happen in one `decode_region` (the JPEG decoded at reduced size where the
    crop allows, only the crop's part), and the result is written straight into the batch. It draws from `rng`
    in the list's order, so it gives what applying the operations one by one gives; it reads their settings
    when called, so a changed setting (e.g. `hflip.prob`) applies.

    The three stages are also available separately (MindCV's / timm's `separate=True`): `primary(data, rng)`
    gives the cropped and flipped uint8 pixels, `secondary(pixels, rng)` the augmented pixels, and
    `final(pixels, rng, out=None, erase=True)` the normalized float32 [C, H, W] array (random erasing unless
    `erase` is False).
    """

    def __init__(self, crop, hflip, vflip, auto_augment, color_jitter, normalize, random_erasing):
        self.crop, self.hflip, self.vflip = crop, hflip, vflip
        self.auto_augment, self.color_jitter = auto_augment, color_jitter
        self.normalize, self.random_erasing = normalize, random_erasing

    def primary(self, data, rng):
        """Decoded, cropped, resized and flipped uint8 pixels [H, W, C] (or [H, W])."""
        crop = self.crop
        pixels = decode_region(data, lambda size: (crop.box(size, rng), self.hflip.draw(rng)),
                               (crop.size, crop.size), crop.in_channels, crop.interpolation)
        return pixels[::-1] if self.vflip.draw(rng) else pixels

    def secondary(self, pixels, rng):
        """The auto-augmentation policy, then the colour jitter, on uint8 pixels."""
        if self.auto_augment is None and self.color_jitter is None:
            return pixels
        img = Image.fromarray(pixels)
        if self.auto_augment is not None:
            img = self.auto_augment.augment(img, rng)
        if self.color_jitter is not None:
            img = self.color_jitter.jitter(img, rng)
        return np.asarray(img)

    def final(self, pixels, rng, out=None, erase=True):
        """Normalized float32 [C, H, W] (into `out` when given), randomly erased when `erase`."""
        chw = self.normalize(pixels, out)
        return chw if self.random_erasing is None or not erase else self.random_erasing(chw, rng)

    def __call__(self, data, rng=None, out=None):
        """`out`: optional float32 [C, H, W] array (C-contiguous) to write the result into."""
        rng = _fresh_rng(rng)
        return self.final(self.secondary(self.primary(data, rng), rng), rng, out)


class EvalTransform:
    """The evaluation operations of `create_transforms`' list (decode + resize + centre crop, normalize), with
    the result written straight into the batch."""

    def __init__(self, crop, normalize):
        self.crop, self.normalize = crop, normalize

    def __call__(self, data, rng=None, out=None):
        """`out`: optional float32 [C, H, W] array (C-contiguous) to write the result into."""
        return self.normalize(self.crop(data), out)


class SmallImageTransform:
    """The CIFAR / MNIST operations of `create_transforms`' list, fused: when training, the padded random crop,
    then the horizontal flip, done in the resize; then normalize into the batch. Draws as the list does."""

    def __init__(self, is_training, crop, hflip, resize, normalize):
        self.is_training = is_training
        self.crop, self.hflip = crop, hflip
        self.resize, self.normalize = resize, normalize

    def __call__(self, data, rng=None, out=None):
        flip = False
        if self.is_training:
            rng = _fresh_rng(rng)
            data = data if is_pixels(data) else np.asarray(_decoded(data, self.resize.in_channels))
            if self.crop is not None:
                data = self.crop(data, rng)
            flip = self.hflip is not None and self.hflip.draw(rng)
        return self.normalize(self.resize(data, hflip=flip), out)


def takes_argument(function, name: str) -> bool:
    """Whether `function` has a parameter `name`; False for a callable without a Python signature (MindSpore's
    C++ operations)."""
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


class SampleTransform:
    """A list of per-sample operations applied in order: `transform(data, rng)` -> the last one's result.

    An operation whose signature has an `rng` parameter (mindcv's, or a user's Python function) is called as
    `op(x, rng=rng)` and draws from the loader's per-sample generator, so it is reproducible; any other callable
    (MindSpore's `mindspore.dataset.vision` / `transforms` operations, a plain function) as `op(x)`. The first
    receives an encoded image as a uint8 1-D array (as MindSpore's ImageFolderDataset gives it) or decoded pixels
    [H, W, C]; the result is returned as a NumPy array.
    """

    def __init__(self, operations):
        operations = list(operations)
        for operation in operations:
            if not callable(operation):
                raise TypeError(f"a transform list holds callables (mindcv's, mindspore.dataset.vision / "
                                f"transforms operations, Python functions), got {operation!r}")
        self.operations = operations
        self.takes_rng = [takes_argument(operation, "rng") for operation in operations]

    def __call__(self, data, rng=None):
        if isinstance(data, (bytes, bytearray)):
            data = np.frombuffer(data, np.uint8)
        elif is_pixels(data) and data.ndim == 2:
            data = data[:, :, None]
        for operation, takes_rng in zip(self.operations, self.takes_rng):
            data = operation(data, rng=rng) if takes_rng else operation(data)
        return np.asarray(data)


class TransformList(list):
    """What `create_transforms` returns: its operations as a list, as MindCV's, which may be extended,
    reordered or replaced (with mindcv's operations, MindSpore's `mindspore.dataset.vision` / `transforms`
    operations or Python callables).

    As long as it holds exactly the operations `create_transforms` put in it, in that order, `fused()` gives the
    fused transform that does the same faster and writes into the batch (`create_loader` uses it); once changed,
    `create_loader` applies the operations one by one (`SampleTransform`). Calling the list,
    `transforms(data, rng=None, out=None)`, gives the float32 [C, H, W] image (or whatever a changed list gives).
    """

    def __init__(self, operations, fused):
        super().__init__(operations)
        self.made = tuple(operations)
        self.fused_transform = fused

    def __getattr__(self, name):
        # the fused transform's parts (e.g. `color_jitter`, `normalize`) read through the list, as before it was one
        if name in ("made", "fused_transform") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.fused_transform, name)

    def fused(self):
        """The fused transform while the list is as `create_transforms` made it, else None."""
        unchanged = len(self) == len(self.made) and all(a is b for a, b in zip(self, self.made))
        return self.fused_transform if unchanged else None

    def __call__(self, data, rng=None, out=None, **options):
        """`options`: further keywords of the fused transform (the final stage's `erase`), ignored once the list
        is changed."""
        fused = self.fused()
        if fused is not None:
            return fused(data, rng, **options) if out is None else fused(data, rng, out=out, **options)
        image = SampleTransform(self)(data, rng)
        if out is None:
            return image
        out[...] = image
        return out


def _decoded(data, in_channels):
    img = _open(bytes(data))
    try:
        return img.convert("RGB" if in_channels == 3 else "L")
    except DECODE_ERRORS as err:
        raise UnreadableImageError(str(err) or type(err).__name__) from err


def _dataset_defaults(name):
    """(mean, std, in_channels) of a dataset's transforms when not given."""
    if name in ("cifar10", "cifar100"):
        return CIFAR_DEFAULT_MEAN, CIFAR_DEFAULT_STD, 3
    if name == "mnist":
        return MNIST_DEFAULT_MEAN, MNIST_DEFAULT_STD, 1
    return IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, 3


def create_transforms(dataset_name="", image_resize=224, is_training=False, auto_augment=None, separate=False, *,
                      scale=(0.08, 1.0), ratio=(0.75, 1.333), hflip=0.5, vflip=0.0, color_jitter=0.4,
                      interpolation="bilinear", re_prob=0.0, re_value=0, re_scale=(0.02, 0.33), re_ratio=(0.3, 3.3),
                      re_max_attempts=10, mean=None, std=None, crop_pct=0.875, in_channels=None):
    """The per-image operations, as a list (a `TransformList`), as MindCV's `create_transforms` returns them.

    MindCV's signature and argument order (dataset_name, image_resize, is_training, auto_augment, separate), the
    other settings by keyword. The list may be changed like any list (`create_loader` applies whatever it holds,
    in order); while unchanged, `create_loader` runs it as one fused transform (see `TransformList`). Calling
    it, `transforms(data, rng=None, out=None)`, gives the float32 [C, H, W] image of one sample.

    The operations: ImageNet-style training: RandomResizedCropDecode, RandomHorizontalFlip, RandomVerticalFlip,
    [AutoAugmentation], [ColorJitter], Normalize, [RandomErasing]; evaluation: DecodeResizeCenterCrop,
    Normalize; CIFAR: [RandomCropPad, RandomHorizontalFlip when training], Resize, Normalize; MNIST: Resize,
    Normalize. Normalize gives float32 [C, H, W] (MindCV's Normalize and HWC2CHW in one); the operations before
    it give uint8 [H, W, C] pixels.

    Args:
        dataset_name: "imagenet", "imagefolder" or "" (ImageNet-style transforms, for any image), or "cifar10",
            "cifar100", "mnist" (MindCV's transforms of those: when training, a random crop of the image padded
            by 4 pixels and a horizontal flip for CIFAR, nothing for MNIST; then resize to image_resize and
            normalize with the dataset's mean/std). The ImageNet keywords scale, ratio, vflip, color_jitter and
            crop_pct do not apply to these three; auto_augment and random erasing are refused for them (use
            dataset_name "imagenet" to augment CIFAR or MNIST images that way).
        image_resize: output side, pixels.
        is_training: training augmentation, else the evaluation resize/centre crop.
        auto_augment: None or a policy: "randaug-m9-mstd0.5-inc1" (RandAugment), "autoaug" / "autoaugr"
            (AutoAugment), "3a" (DeiT III's three-augment), "augmix-m5-w4-d2" (AugMix), "trivialaugwide", or
            timm's spellings ("rand-...", "original", "originalr", "v0", "v0r"); see `mindcv.data.auto_augment`.
        separate: with is_training, return the three stages of the ImageNet training list as a tuple of lists
            (primary: crop and flips; secondary: auto-augmentation and colour jitter; final: Normalize and random
            erasing), as MindCV, for AugMix split batches (`create_loader(..., separate=True)`); unchanged, each
            runs its stage of the fused transform (see `TrainTransform`). Otherwise ignored (one list is
            returned), as in MindCV.
        scale: random resized crop area fraction range.
        ratio: random resized crop aspect ratio (w/h) range.
        hflip, vflip: flip probabilities.
        color_jitter: None (off), a float s (brightness = contrast = saturation = s; default 0.4, as MindCV and
            timm) or a tuple (brightness, contrast, saturation[, hue]). Off when auto_augment is set, except
            with "3a" (as in timm).
        interpolation: "bilinear", "bicubic" or "nearest", for resizing and the geometric augmentation ops.
        re_prob: random erasing probability.
        re_value: erased value in normalized units, or "random" for per-pixel standard normal noise.
        re_scale, re_ratio, re_max_attempts: erased area fraction range, aspect range, attempts to fit the
            rectangle.
        mean, std: per-channel normalization on the 0-255 pixel scale (default: the dataset's: ImageNet's,
            CIFAR's or MNIST's).
        crop_pct: evaluation crop fraction: the shorter side is resized to int(image_resize / crop_pct) before
            the centre crop.
        in_channels: 3 (grayscale/palette images become RGB) or 1 (all images become grayscale; a 3-value
            mean/std is averaged). Default: 1 for MNIST (as MindCV), else 3.
    """
    name = dataset_name.lower()
    if name not in IMAGENET_STYLE + SMALL_IMAGE_DATASETS:
        raise ValueError(f"no transforms for dataset '{dataset_name}' (supported: imagenet, imagefolder, "
                         f"{', '.join(SMALL_IMAGE_DATASETS)})")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation '{interpolation}' (supported: {', '.join(INTERPOLATIONS)})")
    default_mean, default_std, default_channels = _dataset_defaults(name)
    in_channels = default_channels if in_channels is None else in_channels
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    if mean is None:
        mean = default_mean * (in_channels // len(default_mean)) if len(default_mean) < in_channels else default_mean
    if std is None:
        std = default_std * (in_channels // len(default_std)) if len(default_std) < in_channels else default_std
    resample = INTERPOLATIONS[interpolation]
    normalize = Normalize(mean, std, in_channels)
    if name in SMALL_IMAGE_DATASETS:
        if is_training and (auto_augment or re_prob > 0):
            raise ValueError(f"the {name} transforms (MindCV's: padded random crop and flip) take no auto_augment "
                             "or random erasing; use dataset_name='imagenet' for the ImageNet-style augmentation")
        crop = RandomCropPad(4, in_channels) if is_training and name != "mnist" else None
        flip = RandomHorizontalFlip(hflip) if is_training and name != "mnist" else None
        resize = Resize(image_resize, resample, in_channels)
        operations = [op for op in (crop, flip, resize, normalize) if op is not None]
        return TransformList(operations, SmallImageTransform(is_training, crop, flip, resize, normalize))
    if not is_training:
        crop = DecodeResizeCenterCrop(image_resize, crop_pct, resample, in_channels)
        return TransformList([crop, normalize], EvalTransform(crop, normalize))
    crop = RandomResizedCropDecode(image_resize, scale, ratio, resample, in_channels)
    flips = RandomHorizontalFlip(hflip), RandomVerticalFlip(vflip)
    augment = None
    if auto_augment:
        augment = AutoAugmentation(auto_augment, tuple(min(255, int(round(m))) for m in mean), resample)
    jitter = None
    # timm: colour jitter is off under an auto-augmentation policy, except DeiT III's three-augment ("3a")
    if color_jitter is not None and (not auto_augment or "3a" in auto_augment):
        strengths = (color_jitter,) * 3 if isinstance(color_jitter, (int, float)) else tuple(color_jitter)
        jitter = ColorJitter(*strengths)
    erasing = RandomErasing(re_prob, re_value, re_scale, re_ratio, re_max_attempts) if re_prob > 0 else None
    transform = TrainTransform(crop, *flips, augment, jitter, normalize, erasing)
    if separate:  # MindCV's three lists; each, unchanged, runs its stage of the fused transform
        stages = ([crop, *flips], [augment, jitter], [normalize, erasing])
        return tuple(TransformList([op for op in stage if op is not None], fused) for stage, fused in
                     zip(stages, (transform.primary, transform.secondary, transform.final)))
    operations = [op for op in (crop, *flips, augment, jitter, normalize, erasing) if op is not None]
    return TransformList(operations, transform)
