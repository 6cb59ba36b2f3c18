"""Automatic augmentation of PIL images with timm's policy strings and semantics: RandAugment, AutoAugment
(with DeiT III's three-augment as one of its policies), AugMix, and torchvision's TrivialAugmentWide.

Every policy is called as `policy(img, rng)`, `rng` a `numpy.random.Generator` that supplies every random
draw, so that the loader's keyed generators make augmentation reproducible. `auto_augment_from_policy(policy)`
builds one from its string (the first "-"-separated section names it, the others are options):

RandAugment, "randaug-..." (MindCV's name) or "rand-..." (timm's), e.g. "randaug-m9-mstd0.5-inc1":
    m<float>    magnitude, 0..10 (default 10)
    n<int>      ops applied per image (default 2)
    mstd<float> std of Gaussian noise added to the magnitude at every op application (default 0;
                > 100 means uniform in [0, m])
    mmax<float> upper clip of the noisy magnitude (default 10)
    inc<0|1>    1: the "increasing" op set, where a larger magnitude always means a stronger change (default 0)
    p<float>    probability that each chosen op is applied (default 0.5)
    w<int>      weighted op choice (MindCV and timm before 0.9): w0 weighs the 15 ops of the set by
                timm's `_RAND_CHOICE_WEIGHTS_0` (rotate 0.3, shears 0.2, translations 0.1, ...), by position;
                the n ops are then drawn without replacement
    t<name>     the op set by name (timm >= 0.9): "tweights" (timm's weighted increasing set), "t3a" (the
                three DeiT III ops, uniform), "t3aw" (the 3a-weighted set)
    Ops are otherwise chosen uniformly with replacement. Geometric ops and the enhance ops of the increasing
    set pick their direction (sign) with probability 0.5.
AutoAugment, "autoaug" (MindCV; timm's "original": the ImageNet policy of the AutoAugment paper, 25
    sub-policies), "autoaugr" (timm's "originalr": the same with Posterize keeping 4 down to 0 bits), "v0" /
    "v0r" (timm's: the TPU EfficientNet policy), "3a" (DeiT III's three-augment: one of solarize at threshold
    128, grayscale, Gaussian blur of radius U(0.1, 2)); option mstd<float> as above. A random sub-policy per
    image, each of its ops applied with its own probability and magnitude.
AugMix, "augmix-..." (timm's), e.g. "augmix-m5-w4-d2": m severity (default 3), w chains (default 3), d ops
    per chain (default -1: 1 to 3 at random), a Dirichlet/Beta alpha (default 1), b1 blended mode, mstd
    (default: magnitudes uniform in [0, m]). Translations move by up to 30 % of the image, as timm sets for
    AugMix.
TrivialAugmentWide, "trivialaugwide" (MindCV's name; torchvision's TrivialAugmentWide): one op of 14 per
    image with a magnitude bin drawn uniformly from 31; "trivialaugwide-m<int>" draws the bin from 0..m only.

Rotate and shear resample with the given interpolation; translations move by whole pixels (rounded), as
torchvision does (timm resamples at the fractional offset). Pixels brought in from outside the image take
`fill` (the loader passes the normalization mean).
"""

import collections
import math
import re

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from . import kernels

MAX_LEVEL = 10.0
TRANSLATE_FRACTION = 0.45  # of the image width/height at magnitude 10
AUGMIX_TRANSLATE_FRACTION = 0.3  # timm's translate_pct for AugMix
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


def _desaturate(img, amount):
    """Blend towards the image's grayscale: amount 0 keeps the colour, 1 gives gray (ImageEnhance.Color)."""
    return ImageEnhance.Color(img).enhance(min(1.0, max(0.0, 1.0 - amount)))


def _blur(img, radius):
    return img.filter(ImageFilter.GaussianBlur(radius=radius))


def _signed(value, negate):
    return -value if negate else value


def _minmax(m, low, high):
    """timm's min-max level: low at magnitude 0 up to high at 10, clamped."""
    return min(high, max(low, low + (high - low) * m / MAX_LEVEL))


def _increasing_enhance(enhancer):
    """(apply, level) of an "increasing" ImageEnhance op: factor 1 +- 0.9 * m / 10, at least 0.1."""
    return (lambda img, f, _, __: enhancer(img).enhance(f),
            lambda m, neg, _: max(0.1, 1.0 + _signed(m / MAX_LEVEL * 0.9, neg)))


# what a level function may need besides the magnitude: translation range and the generator (GaussianBlurRand)
OpParams = collections.namedtuple("OpParams", "translate_pct rng")

# name -> (op(img, arg, fill, interpolation), level_to_arg(magnitude, negate, OpParams))
OPS = {
    "AutoContrast": (lambda img, _, __, ___: ImageOps.autocontrast(img), lambda m, neg, _: None),
    "Equalize": (lambda img, _, __, ___: ImageOps.equalize(img), lambda m, neg, _: None),
    "Invert": (lambda img, _, __, ___: ImageOps.invert(img), lambda m, neg, _: None),
    "Rotate": (
        lambda img, deg, fill, interp: _rotate(img, deg, fill, interp),
        lambda m, neg, _: _signed(m / MAX_LEVEL * MAX_ROTATE_DEGREES, neg),
    ),
    # bits kept: 0 at m=0 up to 4 at m=10 (weaker with magnitude, as in the TF/timm original)
    "Posterize": (lambda img, bits, _, __: _posterize(img, bits), lambda m, neg, _: int(m / MAX_LEVEL * 4)),
    # bits kept: 4 at m=0 down to 0 at m=10
    "PosterizeIncreasing": (
        lambda img, bits, _, __: _posterize(img, bits),
        lambda m, neg, _: 4 - int(m / MAX_LEVEL * 4),
    ),
    # bits kept: 4 at m=0 up to 8 at m=10 (the AutoAugment paper's range)
    "PosterizeOriginal": (
        lambda img, bits, _, __: _posterize(img, bits),
        lambda m, neg, _: int(m / MAX_LEVEL * 4) + 4,
    ),
    # pixels >= threshold are inverted; threshold 0 at m=0 (all) up to 256 at m=10 (none)
    "Solarize": (lambda img, t, _, __: ImageOps.solarize(img, t), lambda m, neg, _: min(256, int(m / MAX_LEVEL * 256))),
    "SolarizeIncreasing": (
        lambda img, t, _, __: ImageOps.solarize(img, t),
        lambda m, neg, _: 256 - min(256, int(m / MAX_LEVEL * 256)),
    ),
    "SolarizeAdd": (
        lambda img, add, _, __: _solarize_add(img, add),
        lambda m, neg, _: min(128, int(m / MAX_LEVEL * MAX_SOLARIZE_ADD)),
    ),
    # enhance factor 0.1..1.9 over m=0..10 (1.0 = unchanged at m=5)
    "Color": (lambda img, f, _, __: ImageEnhance.Color(img).enhance(f), lambda m, neg, _: m / MAX_LEVEL * 1.8 + 0.1),
    "Contrast": (
        lambda img, f, _, __: ImageEnhance.Contrast(img).enhance(f),
        lambda m, neg, _: m / MAX_LEVEL * 1.8 + 0.1,
    ),
    "Brightness": (
        lambda img, f, _, __: ImageEnhance.Brightness(img).enhance(f),
        lambda m, neg, _: m / MAX_LEVEL * 1.8 + 0.1,
    ),
    "Sharpness": (
        lambda img, f, _, __: ImageEnhance.Sharpness(img).enhance(f),
        lambda m, neg, _: m / MAX_LEVEL * 1.8 + 0.1,
    ),
    # enhance factor 1 +- 0.9 * m / 10 (1.0 = unchanged at m=0)
    "ColorIncreasing": _increasing_enhance(ImageEnhance.Color),
    "ContrastIncreasing": _increasing_enhance(ImageEnhance.Contrast),
    "BrightnessIncreasing": _increasing_enhance(ImageEnhance.Brightness),
    "SharpnessIncreasing": _increasing_enhance(ImageEnhance.Sharpness),
    # output pixel (x, y) samples input (x + shear * y, y)
    "ShearX": (
        lambda img, s, fill, interp: _affine(img, (1, s, 0, 0, 1, 0), fill, interp),
        lambda m, neg, _: _signed(m / MAX_LEVEL * MAX_SHEAR, neg),
    ),
    "ShearY": (
        lambda img, s, fill, interp: _affine(img, (1, 0, 0, s, 1, 0), fill, interp),
        lambda m, neg, _: _signed(m / MAX_LEVEL * MAX_SHEAR, neg),
    ),
    # output pixel (x, y) shows input (x + round(fraction * width), y)
    "TranslateXRel": (
        lambda img, frac, fill, _: _translate(img, frac * img.size[0], 0, fill),
        lambda m, neg, params: _signed(m / MAX_LEVEL * params.translate_pct, neg),
    ),
    "TranslateYRel": (
        lambda img, frac, fill, _: _translate(img, 0, frac * img.size[1], fill),
        lambda m, neg, params: _signed(m / MAX_LEVEL * params.translate_pct, neg),
    ),
    # DeiT III's ops: blend towards gray by 0.5..1 (1 = grayscale at m=10), blur of radius 0.1..2, and blur of a
    # radius drawn from U(0.1, 2 * m / 10)
    "Desaturate": (lambda img, a, _, __: _desaturate(img, a), lambda m, neg, _: _minmax(m, 0.5, 1.0)),
    "GaussianBlur": (lambda img, r, _, __: _blur(img, r), lambda m, neg, _: _minmax(m, 0.1, 2.0)),
    "GaussianBlurRand": (
        lambda img, r, _, __: _blur(img, r),
        lambda m, neg, params: params.rng.uniform(0.1, 2.0 * _minmax(m, 0.0, 1.0)),
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
# RandAugment's "w0": weights by position in STANDARD_OPS / INCREASING_OPS (timm's _RAND_CHOICE_WEIGHTS_0)
CHOICE_WEIGHTS_0 = (0.025, 0.005, 0.0, 0.3, 0.0, 0.005, 0.005, 0.025, 0.005, 0.005, 0.025, 0.2, 0.2, 0.1, 0.1)
# RandAugment's "t" sets (timm >= 0.9): name -> op names, or {op name: weight}
RAND_OP_SETS = {
    "weights": {"Rotate": 3, "ShearX": 2, "ShearY": 2, "TranslateXRel": 1, "TranslateYRel": 1,
                "ColorIncreasing": 0.25, "SharpnessIncreasing": 0.25, "AutoContrast": 0.25,
                "SolarizeIncreasing": 0.05, "SolarizeAdd": 0.05, "ContrastIncreasing": 0.05,
                "BrightnessIncreasing": 0.05, "Equalize": 0.05, "PosterizeIncreasing": 0.05, "Invert": 0.05},
    "3a": ("SolarizeIncreasing", "Desaturate", "GaussianBlur"),
    "3aw": {"SolarizeIncreasing": 6, "Desaturate": 6, "GaussianBlur": 6, "Rotate": 3, "ShearX": 2, "ShearY": 2,
            "PosterizeIncreasing": 1, "AutoContrast": 1, "ColorIncreasing": 1, "SharpnessIncreasing": 1,
            "ContrastIncreasing": 1, "BrightnessIncreasing": 1, "Equalize": 1, "Invert": 1},
}
AUGMIX_OPS = (
    "AutoContrast", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
    "Equalize", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "ShearX", "ShearY", "TranslateXRel",
    "TranslateYRel",
)

# AutoAugment policies: sub-policies of (op, probability, magnitude)
_ORIGINAL = (
    (("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)), (("PosterizeOriginal", 0.6, 7), ("PosterizeOriginal", 0.6, 6)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)), (("Equalize", 0.4, 4), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, 7)), (("PosterizeOriginal", 0.8, 5), ("Equalize", 1.0, 2)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)), (("Equalize", 0.6, 8), ("PosterizeOriginal", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)), (("Rotate", 0.4, 9), ("Equalize", 0.6, 2)),
    (("Equalize", 0.0, 7), ("Equalize", 0.8, 8)), (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)), (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)), (("Sharpness", 0.4, 7), ("Invert", 0.6, 8)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, 9)), (("Color", 0.4, 0), ("Equalize", 0.6, 3)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)), (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
)
_V0 = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)), (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)), (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)), (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)), (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)), (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)), (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)), (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)), (("Rotate", 1.0, 7), ("TranslateYRel", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)), (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)), (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)), (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)), (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)


def _renamed(policy, old, new):
    return tuple(tuple((new if name == old else name, p, m) for name, p, m in sub) for sub in policy)


AUTO_AUGMENT_POLICIES = {
    "original": _ORIGINAL,
    "originalr": _renamed(_ORIGINAL, "PosterizeOriginal", "PosterizeIncreasing"),
    "v0": _V0,
    "v0r": _renamed(_V0, "Posterize", "PosterizeIncreasing"),
    # DeiT III's three-augment: solarize at threshold 128, grayscale, blur of radius U(0.1, 2)
    "3a": ((("Solarize", 1.0, 5),), (("Desaturate", 1.0, 10),), (("GaussianBlurRand", 1.0, 10),)),
}
AUTO_AUGMENT_POLICIES["autoaug"] = AUTO_AUGMENT_POLICIES["original"]  # MindCV's names
AUTO_AUGMENT_POLICIES["autoaugr"] = AUTO_AUGMENT_POLICIES["originalr"]


def apply_op(img, name, magnitude, negate=False, fill=(128, 128, 128), interpolation=Image.BILINEAR,
             translate_pct=TRANSLATE_FRACTION, rng=None):
    """Apply op `name` at `magnitude` (0..10) to a PIL image; `negate` flips signed ops.

    `fill` is the colour (0-255) of pixels that geometric ops bring in from outside; `translate_pct` the
    translation at magnitude 10, as a fraction of the image; `rng` the generator of ops that draw
    (GaussianBlurRand; default a fresh one).
    """
    op, level_to_arg = OPS[name]
    if img.mode == "L" and isinstance(fill, tuple):
        fill = int(round(sum(fill) / len(fill)))
    params = OpParams(translate_pct, rng if rng is not None else np.random.default_rng())
    return op(img, level_to_arg(magnitude, negate, params), fill, interpolation)


def sample_magnitude(magnitude, magnitude_std, magnitude_max, rng):
    """timm's magnitude noise: N(magnitude, std) (uniform in [0, magnitude] for an infinite std; none for 0),
    clipped to [0, magnitude_max]."""
    if magnitude_std == math.inf:
        magnitude = rng.uniform(0.0, magnitude)
    elif magnitude_std > 0:
        magnitude = rng.normal(magnitude, magnitude_std)
    return min(max(magnitude, 0.0), magnitude_max)


class RandAugment:
    """Apply `num_ops` random ops from `op_names`, each with probability `prob`.

    Ops are drawn uniformly with replacement, or, with `weights` (one per op), by those weights without
    replacement (timm's rule). Call with `(img, rng)`, `rng` a numpy Generator, so that draws are reproducible.
    """

    def __init__(self, op_names, magnitude=10.0, num_ops=2, magnitude_std=0.0, magnitude_max=MAX_LEVEL, prob=0.5,
                 fill=(128, 128, 128), interpolation=Image.BILINEAR, weights=None, translate_pct=TRANSLATE_FRACTION):
        self.op_names = tuple(op_names)
        self.magnitude = magnitude
        self.num_ops = num_ops
        self.magnitude_std = magnitude_std
        self.magnitude_max = magnitude_max
        self.prob = prob
        self.fill = fill
        self.interpolation = interpolation
        self.translate_pct = translate_pct
        self.weights = None
        if weights is not None:
            weights = np.asarray(weights, np.float64)
            if weights.shape != (len(self.op_names),) or (weights < 0).any() or weights.sum() <= 0:
                raise ValueError(f"RandAugment weights: one non-negative weight per op ({len(self.op_names)}), "
                                 f"not all zero, got {weights.tolist()}")
            if np.count_nonzero(weights) < num_ops:
                raise ValueError(f"RandAugment draws {num_ops} different ops by weight, but only "
                                 f"{np.count_nonzero(weights)} have a weight above 0")
            self.weights = weights / weights.sum()

    def sample_magnitude(self, rng):
        return sample_magnitude(self.magnitude, self.magnitude_std, self.magnitude_max, rng)

    def __call__(self, img, rng):
        if self.weights is None:
            chosen = rng.integers(len(self.op_names), size=self.num_ops)
        else:
            chosen = rng.choice(len(self.op_names), self.num_ops, replace=False, p=self.weights)
        for op_index in chosen:
            if rng.random() >= self.prob:
                continue
            magnitude = self.sample_magnitude(rng)
            img = apply_op(img, self.op_names[op_index], magnitude, negate=rng.random() < 0.5, fill=self.fill,
                           interpolation=self.interpolation, translate_pct=self.translate_pct, rng=rng)
        return img


class AutoAugment:
    """One sub-policy drawn uniformly per image; each of its (op, probability, magnitude) is applied with its
    probability, at its magnitude plus timm's optional noise (`magnitude_std`)."""

    def __init__(self, policy, magnitude_std=0.0, magnitude_max=MAX_LEVEL, fill=(128, 128, 128),
                 interpolation=Image.BILINEAR):
        self.policy = tuple(tuple(sub) for sub in policy)
        unknown = sorted({name for sub in self.policy for name, _, _ in sub} - set(OPS))
        if unknown:
            raise ValueError(f"AutoAugment policy names unknown ops: {', '.join(unknown)}")
        self.magnitude_std = magnitude_std
        self.magnitude_max = magnitude_max
        self.fill = fill
        self.interpolation = interpolation

    def __call__(self, img, rng):
        for name, prob, magnitude in self.policy[rng.integers(len(self.policy))]:
            if prob < 1.0 and rng.random() >= prob:
                continue
            magnitude = sample_magnitude(magnitude, self.magnitude_std, self.magnitude_max, rng)
            img = apply_op(img, name, magnitude, negate=rng.random() < 0.5, fill=self.fill,
                           interpolation=self.interpolation, rng=rng)
        return img


class AugMix:
    """AugMix (timm's AugMixAugment): `width` chains of `depth` random ops (1 to 3 when depth <= 0) from
    `op_names`, each at a magnitude from `sample_magnitude(magnitude, magnitude_std, ...)` (uniform in
    [0, magnitude] by default), mixed with Dirichlet(alpha) weights; the mix is then blended with the image by
    m ~ Beta(alpha, alpha): `Image.blend(img, mix, m)`. `blended` mode (timm's "b1") blends each chain into the
    result in turn, with weights that give the same expected mix, instead of summing the chains."""

    def __init__(self, magnitude=3.0, width=3, depth=-1, alpha=1.0, blended=False, magnitude_std=math.inf,
                 magnitude_max=MAX_LEVEL, fill=(128, 128, 128), interpolation=Image.BILINEAR, op_names=AUGMIX_OPS,
                 translate_pct=AUGMIX_TRANSLATE_FRACTION):
        if width < 1 or alpha <= 0:
            raise ValueError(f"AugMix needs width >= 1 and alpha > 0, got width {width}, alpha {alpha}")
        self.magnitude, self.width, self.depth, self.alpha = magnitude, width, depth, alpha
        self.blended = blended
        self.magnitude_std, self.magnitude_max = magnitude_std, magnitude_max
        self.fill, self.interpolation = fill, interpolation
        self.op_names = tuple(op_names)
        self.translate_pct = translate_pct

    def chain(self, img, rng):
        depth = self.depth if self.depth > 0 else int(rng.integers(1, 4))
        for op_index in rng.integers(len(self.op_names), size=depth):
            magnitude = sample_magnitude(self.magnitude, self.magnitude_std, self.magnitude_max, rng)
            img = apply_op(img, self.op_names[op_index], magnitude, negate=rng.random() < 0.5, fill=self.fill,
                           interpolation=self.interpolation, translate_pct=self.translate_pct, rng=rng)
        return img

    def __call__(self, img, rng):
        weights = rng.dirichlet([self.alpha] * self.width).astype(np.float32)
        m = np.float32(rng.beta(self.alpha, self.alpha))
        if self.blended:
            # blend factors that leave chain k with weight m * weights[k] and the image with 1 - m
            scaled, remaining, factors = weights * m, 1.0, []
            for w in scaled[::-1]:
                factor = w / remaining
                remaining *= 1.0 - factor
                factors.append(factor)
            out = img
            for factor in factors[::-1]:
                out = Image.blend(out, self.chain(img, rng), float(factor))
            return out
        mixed = np.zeros(np.asarray(img).shape, np.float32)
        for w in weights:
            mixed += w * np.asarray(self.chain(img, rng), np.float32)
        np.clip(mixed, 0, 255, out=mixed)
        return Image.blend(img, Image.fromarray(mixed.astype(np.uint8), img.mode), float(m))


class TrivialAugmentWide:
    """torchvision's TrivialAugmentWide: one op of `OP_NAMES` per image, a magnitude bin uniform in
    0..`max_bin` of 31 bins (bin b is b/30 of the op's range), signed ops negated with probability 0.5.
    Ranges: shear 0.99, translation 32 pixels, rotation 135 degrees, enhance factor 1 +- 0.99, posterize 8 down
    to 2 bits, solarize threshold 255 down to 0."""

    OP_NAMES = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
                "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
    NUM_BINS = 31

    def __init__(self, max_bin=NUM_BINS - 1, fill=(128, 128, 128), interpolation=Image.BILINEAR):
        if not 0 <= max_bin:
            raise ValueError(f"trivialaugwide: the magnitude bin limit must be >= 0, got {max_bin}")
        self.max_bin = min(int(max_bin), self.NUM_BINS - 1)
        self.fill, self.interpolation = fill, interpolation

    def apply(self, img, name, level, negate):
        """Op `name` at magnitude bin `level` (0..30), negated when `negate` (signed ops)."""
        fraction = level / (self.NUM_BINS - 1)
        fill = self.fill
        if img.mode == "L" and isinstance(fill, tuple):
            fill = int(round(sum(fill) / len(fill)))
        if name == "Identity":
            return img
        if name in ("ShearX", "ShearY"):
            shear = _signed(0.99 * fraction, negate)
            coeffs = (1, shear, 0, 0, 1, 0) if name == "ShearX" else (1, 0, 0, shear, 1, 0)
            return _affine(img, coeffs, fill, self.interpolation)
        if name in ("TranslateX", "TranslateY"):
            pixels = int(_signed(32.0 * fraction, negate))  # torchvision truncates to whole pixels
            return _translate(img, pixels if name == "TranslateX" else 0, pixels if name == "TranslateY" else 0,
                              fill)
        if name == "Rotate":
            return _rotate(img, _signed(135.0 * fraction, negate), fill, self.interpolation)
        if name in ("Brightness", "Color", "Contrast", "Sharpness"):
            return getattr(ImageEnhance, name)(img).enhance(1.0 + _signed(0.99 * fraction, negate))
        if name == "Posterize":
            return _posterize(img, 8 - int(round(level / ((self.NUM_BINS - 1) / 6))))
        if name == "Solarize":
            return ImageOps.solarize(img, 255.0 * (1.0 - fraction))
        if name == "AutoContrast":
            return ImageOps.autocontrast(img)
        if name == "Equalize":
            return ImageOps.equalize(img)
        raise ValueError(f"unknown TrivialAugmentWide op {name}")

    def __call__(self, img, rng):
        name = self.OP_NAMES[rng.integers(len(self.OP_NAMES))]
        level = int(rng.integers(0, self.max_bin + 1))
        return self.apply(img, name, level, rng.random() < 0.5)


def _options(policy, known, named=()):
    """{key: value} of the "-"-separated options of `policy` after its name. `known` maps a key to its type;
    a key in `named` takes the rest of the section as a string (timm's "t<name>")."""
    options = {}
    for part in policy.split("-")[1:]:
        key = next((k for k in named if part.startswith(k)), None)
        if key is not None:
            options[key] = part[len(key):]
            continue
        match = re.fullmatch(r"([a-z]+)(.*)", part)
        if not match or match[1] not in known:
            raise ValueError(f"unknown option '{part}' in auto_augment policy '{policy}' "
                             f"(known: {', '.join(list(known) + list(named))})")
        try:
            options[match[1]] = known[match[1]](match[2])
        except ValueError:
            raise ValueError(f"bad option '{part}' in auto_augment policy '{policy}'") from None
    return options


def rand_augment_from_policy(policy, fill=(128, 128, 128), interpolation=Image.BILINEAR):
    """Build a `RandAugment` from a timm-style string such as "randaug-m9-mstd0.5-inc1" (or "rand-...")."""
    if policy.split("-")[0] not in ("randaug", "rand"):
        raise ValueError(f"unsupported RandAugment policy '{policy}' (a RandAugment policy starts with 'randaug-' "
                         "or 'rand-', e.g. 'randaug-m9-mstd0.5-inc1'; see auto_augment_from_policy for the others)")
    options = _options(policy, {"mstd": float, "mmax": float, "inc": int, "m": float, "n": int, "p": float,
                                "w": int}, named=("t",))
    magnitude_std = options.get("mstd", 0.0)
    op_names = INCREASING_OPS if options.get("inc", 0) else STANDARD_OPS
    weights = None
    if "t" in options:
        if "w" in options:
            raise ValueError(f"auto_augment policy '{policy}': give the op set by t<name> or w0, not both")
        chosen = RAND_OP_SETS.get(options["t"])
        if chosen is None:
            raise ValueError(f"unknown op set 't{options['t']}' in auto_augment policy '{policy}' "
                             f"(known: {', '.join('t' + name for name in RAND_OP_SETS)})")
        op_names, weights = (tuple(chosen), tuple(chosen.values())) if isinstance(chosen, dict) else (chosen, None)
    elif "w" in options:
        if options["w"] != 0:
            raise ValueError(f"auto_augment policy '{policy}': the only op weights are w0")
        weights = CHOICE_WEIGHTS_0
    return RandAugment(op_names, magnitude=options.get("m", MAX_LEVEL), num_ops=options.get("n", 2),
                       magnitude_std=math.inf if magnitude_std > 100 else magnitude_std,
                       magnitude_max=options.get("mmax", MAX_LEVEL), prob=options.get("p", 0.5), fill=fill,
                       interpolation=interpolation, weights=weights)


def auto_augment_from_policy(policy, fill=(128, 128, 128), interpolation=Image.BILINEAR):
    """The augmentation named by `policy` (see the module docstring): a callable `(img, rng) -> img`."""
    if not isinstance(policy, str) or not policy:
        raise ValueError(f"auto_augment must be a policy string such as 'randaug-m9-mstd0.5-inc1', got {policy!r}")
    name = policy.split("-")[0]
    if name in ("randaug", "rand"):
        return rand_augment_from_policy(policy, fill, interpolation)
    if name in AUTO_AUGMENT_POLICIES:
        options = _options(policy, {"mstd": float})
        return AutoAugment(AUTO_AUGMENT_POLICIES[name], options.get("mstd", 0.0), fill=fill,
                           interpolation=interpolation)
    if name == "augmix":
        options = _options(policy, {"mstd": float, "m": float, "w": int, "d": int, "a": float, "b": int})
        return AugMix(options.get("m", 3.0), options.get("w", 3), options.get("d", -1), options.get("a", 1.0),
                      bool(options.get("b", 0)), options.get("mstd", math.inf), fill=fill,
                      interpolation=interpolation)
    if name == "trivialaugwide":
        options = _options(policy, {"m": int})
        return TrivialAugmentWide(options.get("m", TrivialAugmentWide.NUM_BINS - 1), fill, interpolation)
    raise ValueError(f"unsupported auto_augment policy '{policy}' (supported: randaug-... / rand-..., autoaug, "
                     "autoaugr, original, originalr, v0, v0r, 3a, augmix-..., trivialaugwide)")
