"""RandAugment on PIL images, with timm's policy strings and semantics.

Policy string: "randaug" followed by "-"-separated options, e.g.
"randaug-m9-mstd0.5-inc1":
    m<float>    magnitude, 0..10 (default 10)
    n<int>      ops applied per image (default 2)
    mstd<float> std of Gaussian noise added to the magnitude at every op
                application (default 0; > 100 means uniform in [0, m])
    mmax<float> upper clip of the noisy magnitude (default 10)
    inc<0|1>    1: the "increasing" op set, where a larger magnitude always
                means a stronger change (default 0)
    p<float>    probability that each chosen op is applied (default 0.5)
Ops are chosen uniformly with replacement. Geometric ops and the enhance ops
of the increasing set pick their direction (sign) with probability 0.5.
Rotate and shear resample with the given interpolation; translations move by
whole pixels (rounded), as torchvision does.
"""

import math

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from . import kernels

MAX_LEVEL = 10.0
TRANSLATE_FRACTION = 0.45  # of the image width/height at magnitude 10
MAX_ROTATE_DEGREES = 30.0
MAX_SHEAR = 0.3
MAX_SOLARIZE_ADD = 110


def _posterize(img, bits):
    # keeps the `bits` most significant bits; 0 bits gives black (ImageOps.posterize rejects 0)
    mask = (0xFF << (8 - bits)) & 0xFF
    return img.point([v & mask for v in range(256)] * len(img.getbands()))


def _translate(img, dx, dy, fill):
    # whole-pixel shift (as torchvision's RandAugment): a paste, ~50x cheaper than a bicubic affine warp.
    # Output pixel (x, y) shows input (x + dx, y + dy).
    out = Image.new(img.mode, img.size, fill)
    out.paste(img, (-int(round(dx)), -int(round(dy))))
    return out


def _solarize_add(img, add):
    lut = [min(255, v + add) if v < 128 else v for v in range(256)]
    return img.point(lut * len(img.getbands()))


def _affine(img, coeffs, fill, interpolation):
    """`img.transform(img.size, AFFINE, coeffs, interpolation, fillcolor=fill)`, by the image kernel where built."""
    if kernels.library() is None or interpolation not in (Image.BILINEAR, Image.BICUBIC) \
            or img.mode not in ("RGB", "L"):
        return img.transform(img.size, Image.AFFINE, coeffs, resample=interpolation, fillcolor=fill)
    return Image.fromarray(kernels.affine(np.asarray(img), coeffs, interpolation, fill), img.mode)


def _rotate(img, degrees, fill, interpolation):
    """`img.rotate(degrees, interpolation, fillcolor=fill)`: counter-clockwise about the centre, same size."""
    angle = degrees % 360.0
    if angle in (0.0, 90.0, 180.0, 270.0):  # Pillow copies or transposes these
        return img.rotate(degrees, resample=interpolation, fillcolor=fill)
    # Pillow's inverse rotation matrix, computed as Pillow does so that the pixels are identical
    radians = -math.radians(angle)
    cos, sin, minus_sin = (round(v, 15) for v in (math.cos(radians), math.sin(radians), -math.sin(radians)))
    centre_x, centre_y = img.size[0] / 2, img.size[1] / 2
    shift_x = cos * -centre_x + sin * -centre_y + 0.0 + centre_x
    shift_y = minus_sin * -centre_x + cos * -centre_y + 0.0 + centre_y
    return _affine(img, (cos, sin, shift_x, minus_sin, cos, shift_y), fill, interpolation)


def _signed(value, negate):
    return -value if negate else value


def _increasing_enhance(enhancer):
    """(apply, level) of an "increasing" ImageEnhance op: factor 1 +- 0.9 * m / 10."""
    return (lambda img, f, _, __: enhancer(img).enhance(f),
            lambda m, neg: 1.0 + _signed(m / MAX_LEVEL * 0.9, neg))


# name -> (op(img, arg, fill, interpolation), level_to_arg(magnitude, negate))
OPS = {
    "AutoContrast": (lambda img, _, __, ___: ImageOps.autocontrast(img), lambda m, neg: None),
    "Equalize": (lambda img, _, __, ___: ImageOps.equalize(img), lambda m, neg: None),
    "Invert": (lambda img, _, __, ___: ImageOps.invert(img), lambda m, neg: None),
    "Rotate": (
        lambda img, deg, fill, interp: _rotate(img, deg, fill, interp),
        lambda m, neg: _signed(m / MAX_LEVEL * MAX_ROTATE_DEGREES, neg),
    ),
    # bits kept: 0 at m=0 up to 4 at m=10 (weaker with magnitude, as in the TF/timm original)
    "Posterize": (
        lambda img, bits, _, __: _posterize(img, bits),
        lambda m, neg: int(m / MAX_LEVEL * 4),
    ),
    # bits kept: 4 at m=0 down to 0 at m=10
    "PosterizeIncreasing": (
        lambda img, bits, _, __: _posterize(img, bits),
        lambda m, neg: 4 - int(m / MAX_LEVEL * 4),
    ),
    # pixels >= threshold are inverted; threshold 0 at m=0 (all) up to 256 at m=10 (none)
    "Solarize": (lambda img, t, _, __: ImageOps.solarize(img, t), lambda m, neg: int(m / MAX_LEVEL * 256)),
    "SolarizeIncreasing": (
        lambda img, t, _, __: ImageOps.solarize(img, t),
        lambda m, neg: 256 - int(m / MAX_LEVEL * 256),
    ),
    "SolarizeAdd": (
        lambda img, add, _, __: _solarize_add(img, add),
        lambda m, neg: int(m / MAX_LEVEL * MAX_SOLARIZE_ADD),
    ),
    # enhance factor 0.1..1.9 over m=0..10 (1.0 = unchanged at m=5)
    "Color": (lambda img, f, _, __: ImageEnhance.Color(img).enhance(f), lambda m, neg: m / MAX_LEVEL * 1.8 + 0.1),
    "Contrast": (lambda img, f, _, __: ImageEnhance.Contrast(img).enhance(f), lambda m, neg: m / MAX_LEVEL * 1.8 + 0.1),
    "Brightness": (
        lambda img, f, _, __: ImageEnhance.Brightness(img).enhance(f),
        lambda m, neg: m / MAX_LEVEL * 1.8 + 0.1,
    ),
    "Sharpness": (
        lambda img, f, _, __: ImageEnhance.Sharpness(img).enhance(f),
        lambda m, neg: m / MAX_LEVEL * 1.8 + 0.1,
    ),
    # enhance factor 1 +- 0.9 * m / 10 (1.0 = unchanged at m=0)
    "ColorIncreasing": _increasing_enhance(ImageEnhance.Color),
    "ContrastIncreasing": _increasing_enhance(ImageEnhance.Contrast),
    "BrightnessIncreasing": _increasing_enhance(ImageEnhance.Brightness),
    "SharpnessIncreasing": _increasing_enhance(ImageEnhance.Sharpness),
    # output pixel (x, y) samples input (x + shear * y, y)
    "ShearX": (
        lambda img, s, fill, interp: _affine(img, (1, s, 0, 0, 1, 0), fill, interp),
        lambda m, neg: _signed(m / MAX_LEVEL * MAX_SHEAR, neg),
    ),
    "ShearY": (
        lambda img, s, fill, interp: _affine(img, (1, 0, 0, s, 1, 0), fill, interp),
        lambda m, neg: _signed(m / MAX_LEVEL * MAX_SHEAR, neg),
    ),
    # output pixel (x, y) shows input (x + round(fraction * width), y)
    "TranslateXRel": (
        lambda img, frac, fill, _: _translate(img, frac * img.size[0], 0, fill),
        lambda m, neg: _signed(m / MAX_LEVEL * TRANSLATE_FRACTION, neg),
    ),
    "TranslateYRel": (
        lambda img, frac, fill, _: _translate(img, 0, frac * img.size[1], fill),
        lambda m, neg: _signed(m / MAX_LEVEL * TRANSLATE_FRACTION, neg),
    ),
}

STANDARD_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)
INCREASING_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)


def apply_op(img, name, magnitude, negate=False, fill=(128, 128, 128), interpolation=Image.BILINEAR):
    """Apply op `name` at `magnitude` (0..10) to a PIL image; `negate` flips signed ops.

    `fill` is the colour (0-255) of pixels that geometric ops bring in from outside.
    """
    op, level_to_arg = OPS[name]
    if img.mode == "L" and isinstance(fill, tuple):
        fill = int(round(sum(fill) / len(fill)))
    return op(img, level_to_arg(magnitude, negate), fill, interpolation)


class RandAugment:
    """Apply `num_ops` random ops from `op_names`, each with probability `prob`.

    Call with `(img, rng)`, `rng` a numpy Generator, so that draws are reproducible.
    """

    def __init__(self, op_names, magnitude=10.0, num_ops=2, magnitude_std=0.0, magnitude_max=MAX_LEVEL, prob=0.5,
                 fill=(128, 128, 128), interpolation=Image.BILINEAR):
        self.op_names = tuple(op_names)
        self.magnitude = magnitude
        self.num_ops = num_ops
        self.magnitude_std = magnitude_std
        self.magnitude_max = magnitude_max
        self.prob = prob
        self.fill = fill
        self.interpolation = interpolation

    def sample_magnitude(self, rng):
        if self.magnitude_std == math.inf:
            magnitude = rng.uniform(0.0, self.magnitude)
        elif self.magnitude_std > 0:
            magnitude = rng.normal(self.magnitude, self.magnitude_std)
        else:
            magnitude = self.magnitude
        return min(max(magnitude, 0.0), self.magnitude_max)

    def __call__(self, img, rng):
        for op_index in rng.integers(len(self.op_names), size=self.num_ops):
            if rng.random() >= self.prob:
                continue
            magnitude = self.sample_magnitude(rng)
            img = apply_op(img, self.op_names[op_index], magnitude, negate=rng.random() < 0.5, fill=self.fill,
                           interpolation=self.interpolation)
        return img


def rand_augment_from_policy(policy, fill=(128, 128, 128), interpolation=Image.BILINEAR):
    """Build a `RandAugment` from a timm-style string such as "randaug-m9-mstd0.5-inc1"."""
    parts = policy.split("-")
    if parts[0] != "randaug":
        raise ValueError(f"unsupported auto_augment policy '{policy}' (supported: 'randaug-...', e.g. "
                         "'randaug-m9-mstd0.5-inc1')")
    options = dict(magnitude=MAX_LEVEL, num_ops=2, magnitude_std=0.0, magnitude_max=MAX_LEVEL, prob=0.5)
    increasing = False
    for part in parts[1:]:
        # longer keys first so that "mstd"/"mmax" are not read as "m"
        for key, field, cast in (("mstd", "magnitude_std", float), ("mmax", "magnitude_max", float),
                                 ("inc", None, int), ("m", "magnitude", float), ("n", "num_ops", int),
                                 ("p", "prob", float)):
            if part.startswith(key):
                try:
                    value = cast(part[len(key):])
                except ValueError:
                    raise ValueError(f"bad option '{part}' in auto_augment policy '{policy}'") from None
                if field is None:
                    increasing = bool(value)
                else:
                    options[field] = value
                break
        else:
            raise ValueError(f"unknown option '{part}' in auto_augment policy '{policy}' "
                             "(known: m, n, mstd, mmax, inc, p)")
    if options["magnitude_std"] > 100:
        options["magnitude_std"] = math.inf
    return RandAugment(INCREASING_OPS if increasing else STANDARD_OPS, fill=fill, interpolation=interpolation,
                       **options)
