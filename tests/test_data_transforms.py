"""Transforms, RandAugment ops, random erasing and mixup/cutmix of mindcv.data."""

import io
import math

import numpy as np
import pytest
from PIL import Image

from mindcv.data import MixupCutmix, apply_op, create_transforms, rand_augment_from_policy
from mindcv.data.auto_augment import INCREASING_OPS, STANDARD_OPS
from mindcv.data.transforms import RandomErasing, center_crop_box, random_resized_crop_box

FILL = (124, 116, 104)


def encode(array, fmt="PNG", **kwargs):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kwargs)
    return buf.getvalue()


def gray_image(value, size=32):
    return Image.fromarray(np.full((size, size, 3), value, np.uint8))


def ramp_image():
    """32x32 RGB whose red channel is 4 * x, green 4 * y and blue 100."""
    y, x = np.mgrid[0:32, 0:32]
    return Image.fromarray(np.stack([4 * x, 4 * y, np.full_like(x, 100)], -1).astype(np.uint8))


def px(img):
    return np.asarray(img).astype(np.int32)


# ---- evaluation geometry ------------------------------------------------------------------------------------------

def test_eval_transform_resizes_shorter_side_then_centre_crops():
    # 400x300 image, red = x * 255 / 399 (a horizontal ramp), green = y * 255 / 299
    y, x = np.mgrid[0:300, 0:400]
    array = np.stack([x * 255 / 399, y * 255 / 299, np.zeros_like(x)], -1).round().astype(np.uint8)
    transform = create_transforms("imagenet", image_resize=224, is_training=False, crop_pct=0.875, mean=(0, 0, 0),
                                  std=(1, 1, 1))
    out = transform(encode(array))
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    # shorter side 300 -> int(224 / 0.875) = 256, so 400x300 -> 341x256; crop offsets round(117/2)=58, 16
    sx, sy = 400 / 341, 300 / 256
    for j in (0, 100, 223):
        source_x = (58 + j + 0.5) * sx - 0.5
        assert abs(out[0, 112, j] - source_x * 255 / 399) < 1.5
    for i in (0, 223):
        source_y = (16 + i + 0.5) * sy - 0.5
        assert abs(out[1, i, 112] - source_y * 255 / 299) < 1.5
    # the fused crop matches resize-then-crop with PIL
    reference = Image.fromarray(array).resize((341, 256), Image.BILINEAR).crop((58, 16, 282, 240))
    assert np.abs(out.transpose(1, 2, 0) - np.asarray(reference)).max() <= 1


def test_center_crop_box_portrait():
    left, top, right, bottom = center_crop_box((300, 600), 224, 0.875)  # -> 256x512, crop at (16, 144)
    assert (left, top) == pytest.approx((16 * 300 / 256, 144 * 600 / 512))
    assert right - left == pytest.approx(224 * 300 / 256)


# ---- training transform -------------------------------------------------------------------------------------------

def test_train_transform_shapes_ranges_and_grayscale_to_rgb():
    gray = np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)
    transform = create_transforms("imagefolder", image_resize=32, is_training=True,
                                  auto_augment="randaug-m9-mstd0.5-inc1", re_prob=0.5, re_value="random")
    out = transform(encode(gray), np.random.default_rng(1))
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    assert -2.2 < out.mean() < 2.7 and np.isfinite(out).all()
    one = create_transforms("imagefolder", image_resize=32, is_training=True, in_channels=1)
    assert one(encode(np.dstack([gray] * 3)), np.random.default_rng(1)).shape == (1, 32, 32)


def test_train_transform_is_deterministic_given_rng():
    data = encode(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    transform = create_transforms("imagefolder", image_resize=32, is_training=True,
                                  auto_augment="randaug-m9-mstd0.5-inc1", re_prob=0.5, re_value="random",
                                  color_jitter=0.4)
    a = transform(data, np.random.default_rng([0, 5]))
    assert np.array_equal(a, transform(data, np.random.default_rng([0, 5])))
    assert not np.array_equal(a, transform(data, np.random.default_rng([0, 6])))


def test_random_resized_crop_box_within_image_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = random_resized_crop_box((500, 375), rng)
        assert 0 <= left < right <= 500 and 0 <= top < bottom <= 375
        assert 0.08 * 0.9 <= (right - left) * (bottom - top) / (500 * 375) <= 1.0
        assert 0.7 <= (right - left) / (bottom - top) <= 1.4


def test_reduced_size_jpeg_decode_matches_full_decode():
    # a large crop of a large JPEG is decoded at 1/4 size; the result must match the full-size path
    y, x = np.mgrid[0:1200, 0:1600]
    array = np.stack([x % 256, y % 256, (x + y) // 12 % 256], -1).astype(np.uint8)
    array = np.asarray(Image.fromarray(array).resize((200, 150)).resize((1600, 1200), Image.BICUBIC))
    data = encode(array, "JPEG", quality=95)
    transform = create_transforms("imagenet", image_resize=224, is_training=False, crop_pct=1.0, mean=(0, 0, 0),
                                  std=(1, 1, 1))
    fast = transform(data).transpose(1, 2, 0)
    full = Image.open(io.BytesIO(data)).convert("RGB")
    reference = np.asarray(full.resize((224, 224), Image.BILINEAR, box=center_crop_box(full.size, 224, 1.0)))
    assert np.abs(fast - reference).mean() < 3


# ---- RandAugment ops at magnitudes 0 and 10 -----------------------------------------------------------------------

def test_every_policy_op_is_defined():
    assert len(STANDARD_OPS) == len(INCREASING_OPS) == 15


def test_autocontrast_equalize_invert():
    low = Image.fromarray(np.tile(np.arange(100, 132, dtype=np.uint8), (32, 1)))
    stretched = px(apply_op(low, "AutoContrast", 0))
    assert stretched.min() == 0 and stretched.max() == 255
    equalized = px(apply_op(low, "Equalize", 10))
    assert equalized.max() - equalized.min() > 200 and (np.diff(equalized[0]) >= 0).all()
    assert (px(apply_op(ramp_image(), "Invert", 5)) == 255 - px(ramp_image())).all()


@pytest.mark.parametrize("name, m0_bits, m10_bits", [("Posterize", 0, 4), ("PosterizeIncreasing", 4, 0)])
def test_posterize(name, m0_bits, m10_bits):
    img = gray_image(0b10110111)
    for magnitude, bits in ((0, m0_bits), (10, m10_bits)):
        expected = 0b10110111 & ((0xFF << (8 - bits)) & 0xFF)
        assert (px(apply_op(img, name, magnitude)) == expected).all()


@pytest.mark.parametrize("name, m0_inverts, m10_inverts", [("Solarize", True, False),
                                                           ("SolarizeIncreasing", False, True)])
def test_solarize(name, m0_inverts, m10_inverts):
    img = ramp_image()
    for magnitude, inverts in ((0, m0_inverts), (10, m10_inverts)):
        expected = 255 - px(img) if inverts else px(img)
        assert (px(apply_op(img, name, magnitude)) == expected).all()


def test_solarize_add():
    img = Image.fromarray(np.array([[[100, 200, 127]]], np.uint8))
    assert px(apply_op(img, "SolarizeAdd", 0)).tolist() == [[[100, 200, 127]]]
    assert px(apply_op(img, "SolarizeAdd", 10)).tolist() == [[[210, 200, 237]]]


def test_brightness():
    img = gray_image(100)
    assert (px(apply_op(img, "Brightness", 0)) == 10).all()  # factor 0.1
    assert (px(apply_op(img, "Brightness", 10)) == 190).all()  # factor 1.9
    assert (px(apply_op(img, "BrightnessIncreasing", 0)) == 100).all()  # factor 1
    assert (px(apply_op(img, "BrightnessIncreasing", 10)) == 190).all()
    assert (px(apply_op(img, "BrightnessIncreasing", 10, negate=True)) == 10).all()


def test_color_and_contrast():
    img = Image.fromarray(np.array([[[200, 100, 50], [20, 40, 60]]], np.uint8))
    gray = px(img.convert("L"))[..., None]
    for name in ("ColorIncreasing", "ContrastIncreasing", "SharpnessIncreasing"):
        assert (px(apply_op(img, name, 0)) == px(img)).all()
    washed = px(apply_op(img, "Color", 0))  # factor 0.1: 10 % of the way from gray to the colour
    assert np.abs(washed - (gray + 0.1 * (px(img) - gray))).max() <= 1
    vivid = px(apply_op(img, "ColorIncreasing", 10))  # factor 1.9
    assert np.abs(vivid - np.clip(gray + 1.9 * (px(img) - gray), 0, 255)).max() <= 1
    flat = px(apply_op(img, "Contrast", 0))
    assert np.ptp(flat) < 0.15 * np.ptp(px(img))
    assert np.ptp(px(apply_op(img, "ContrastIncreasing", 10))) > np.ptp(px(img))


def test_sharpness():
    img = np.full((16, 16, 3), 100, np.uint8)
    img[:, 8:] = 160
    soft, sharp = px(apply_op(Image.fromarray(img), "Sharpness", 0)), px(apply_op(Image.fromarray(img), "Sharpness", 10))
    # the edge is blurred at factor 0.1 and overshoots at factor 1.9; flat interiors are unchanged
    assert 100 < soft[5, 7, 0] and soft[5, 8, 0] < 160
    assert sharp[5, 7, 0] < 100 and sharp[5, 8, 0] > 160
    assert soft[5, 2, 0] == sharp[5, 2, 0] == 100


def test_rotate():
    img = ramp_image()
    assert (px(apply_op(img, "Rotate", 0)) == px(img)).all()
    rotated = px(apply_op(img, "Rotate", 10, fill=FILL))  # 30 degrees counter-clockwise about the centre
    assert rotated[0, 0].tolist() == list(FILL) and rotated[31, 31].tolist() == list(FILL)
    # a point at radius r right of the centre moves up by r * sin(30 deg)
    cx, cy = 15.5, 15.5
    x, y = cx + 10 * math.cos(math.radians(30)), cy - 10 * math.sin(math.radians(30))
    assert abs(rotated[int(round(y)), int(round(x)), 0] - 4 * (cx + 10)) <= 8


def test_shear():
    img = ramp_image()
    assert (px(apply_op(img, "ShearX", 0)) == px(img)).all()
    # output (x, y) = input (x + 0.3 y, y), on pixel centres (y + 0.5); values within interpolation rounding
    sheared = px(apply_op(img, "ShearX", 10, fill=FILL))
    assert np.abs(sheared[0, :28, 0] - px(img)[0, :28, 0]).max() <= 2
    assert abs(sheared[20, 0, 0] - 4 * 0.3 * 20.5) <= 2 and sheared[20, 31].tolist() == list(FILL)
    sheared_y = px(apply_op(img, "ShearY", 10, negate=True, fill=FILL))  # input (x, y - 0.3 x)
    assert abs(sheared_y[30, 20, 1] - 4 * (30 - 0.3 * 20.5)) <= 2 and sheared_y[0, 20].tolist() == list(FILL)


def test_translate():
    img = ramp_image()
    assert (px(apply_op(img, "TranslateXRel", 0)) == px(img)).all()
    moved = px(apply_op(img, "TranslateXRel", 10, fill=FILL))  # 0.45 * 32 = 14.4 -> 14 pixels
    assert (moved[:, :18] == px(img)[:, 14:]).all() and (moved[:, 18:] == FILL).all()
    moved_y = px(apply_op(img, "TranslateYRel", 10, negate=True, fill=FILL))
    assert (moved_y[14:] == px(img)[:18]).all() and (moved_y[:14] == FILL).all()


def test_increasing_ops_grow_with_magnitude():
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    for name in INCREASING_OPS:
        if name in ("AutoContrast", "Equalize", "Invert"):
            continue
        # geometric changes saturate on noise, sharpening does nothing on a ramp
        img = ramp_image() if name.startswith(("Rotate", "Shear", "Translate")) else noise
        changes = [np.abs(px(apply_op(img, name, m)) - px(img)).mean() for m in (0, 5, 10)]
        assert changes[0] <= changes[1] <= changes[2] and changes[2] > changes[0], name


# ---- RandAugment policy -------------------------------------------------------------------------------------------

def test_policy_string_parsing():
    ra = rand_augment_from_policy("randaug-m9-mstd0.5-inc1")
    assert (ra.magnitude, ra.magnitude_std, ra.num_ops, ra.prob) == (9, 0.5, 2, 0.5)
    assert ra.op_names == INCREASING_OPS
    ra = rand_augment_from_policy("randaug-m7-n3-mstd101-p1.0")
    assert ra.op_names == STANDARD_OPS and ra.num_ops == 3 and ra.magnitude_std == math.inf and ra.prob == 1.0
    with pytest.raises(ValueError, match="unknown option"):
        rand_augment_from_policy("randaug-m9-x3")
    with pytest.raises(ValueError, match="unsupported"):
        rand_augment_from_policy("augmix-m5")


def clipped_normal_moments(mean, std, low, high):
    """Mean and standard deviation of clip(X, low, high) for X ~ N(mean, std), in closed form."""
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    a, b = (low - mean) / std, (high - mean) / std
    inside = cdf(b) - cdf(a)
    first = low * cdf(a) + high * (1 - cdf(b)) + mean * inside + std * (pdf(a) - pdf(b))
    second = (low ** 2 * cdf(a) + high ** 2 * (1 - cdf(b)) + (mean ** 2 + std ** 2) * inside
              + 2 * mean * std * (pdf(a) - pdf(b)) + std ** 2 * (a * pdf(a) - b * pdf(b)))
    return first, math.sqrt(second - first ** 2)


@pytest.mark.parametrize("policy, m, std, mmax", [("randaug-m9-mstd0.5", 9, 0.5, 10),
                                                 ("randaug-m9-mstd1-mmax9.5", 9, 1.0, 9.5)])
def test_magnitude_noise(policy, m, std, mmax):
    # timm's rule: every op application draws magnitude ~ N(m, mstd), clipped to [0, mmax] (default 10)
    n = 4000
    augment, rng = rand_augment_from_policy(policy), np.random.default_rng(0)
    noisy = np.array([augment.sample_magnitude(rng) for _ in range(n)])
    mean, sd = clipped_normal_moments(m, std, 0.0, mmax)
    assert noisy.min() >= 0 and noisy.max() == mmax  # clipped at the top, and often enough to hit it
    # within 4 standard errors of the closed form (the std's standard error taken as sd / sqrt(2 n))
    assert abs(noisy.mean() - mean) < 4 * sd / math.sqrt(n)
    assert abs(noisy.std() - sd) < 4 * sd / math.sqrt(2 * n)
    clipped = 0.5 * math.erfc((mmax - m) / std / math.sqrt(2))  # P(X > mmax)
    assert abs((noisy == mmax).mean() - clipped) < 4 * math.sqrt(clipped * (1 - clipped) / n)
    # one normal draw per application from the caller's generator, so runs replay: the same stream by hand
    np.testing.assert_allclose(noisy, np.clip(np.random.default_rng(0).normal(m, std, n), 0, mmax), rtol=1e-12)


def test_magnitude_noise_above_100_is_uniform_and_zero_is_none():
    n = 4000
    augment, rng = rand_augment_from_policy("randaug-m9-mstd101"), np.random.default_rng(1)
    uniform = np.array([augment.sample_magnitude(rng) for _ in range(n)])
    sd = 9 / math.sqrt(12)  # U(0, 9); its kurtosis 1.8 makes the std's standard error sd * sqrt(0.8 / (4 n))
    assert uniform.min() >= 0 and uniform.max() <= 9
    assert abs(uniform.mean() - 4.5) < 4 * sd / math.sqrt(n)
    assert abs(uniform.std() - sd) < 4 * sd * math.sqrt(0.8 / (4 * n))
    assert np.histogram(uniform, bins=9, range=(0, 9))[0].min() > n / 9 * 0.8  # flat, not bunched at m
    assert [rand_augment_from_policy("randaug-m9").sample_magnitude(rng) for _ in range(3)] == [9, 9, 9]


def test_rand_augment_prob_zero_and_one():
    img = ramp_image()
    never = rand_augment_from_policy("randaug-m9-p0.0")
    assert (px(never(img, np.random.default_rng(0))) == px(img)).all()
    always = rand_augment_from_policy("randaug-m10-n1-p1.0-inc1")
    changed = sum(not np.array_equal(px(always(img, np.random.default_rng(s))), px(img)) for s in range(20))
    assert changed >= 15


# ---- random erasing -----------------------------------------------------------------------------------------------

def test_random_erasing_constant_and_random():
    rng = np.random.default_rng(0)
    for _ in range(20):
        erased = RandomErasing(1.0, value=0)(np.full((3, 64, 64), 5.0, np.float32), rng)
        fraction = (erased == 0).all(0).mean()
        assert 0.02 * 0.8 <= fraction <= 0.33 * 1.1
    noisy = RandomErasing(1.0, value="random", scale=(0.3, 0.3))(np.full((3, 64, 64), 5.0, np.float32), rng)
    filled = noisy[noisy != 5.0]
    assert filled.size > 3000 and abs(filled.mean()) < 0.1 and abs(filled.std() - 1) < 0.1
    untouched = RandomErasing(0.0)(np.ones((3, 8, 8), np.float32), rng)
    assert (untouched == 1).all()


# ---- mixup / cutmix -----------------------------------------------------------------------------------------------

def constant_batch(batch=6):
    return [np.full((3, 20, 30), i, np.float32) for i in range(batch)], np.arange(batch)


def test_mixup_pairs_and_targets():
    images, labels = constant_batch()
    mixed, targets = MixupCutmix(mixup=0.8, num_classes=10)(images, labels, np.random.default_rng(3))
    assert targets.shape == (6, 10) and targets.dtype == np.float32
    assert np.allclose(targets.sum(1), 1)
    lam = targets[0, 0]
    for i in range(6):  # image i mixed with image 5 - i, with the same weight as its label
        assert np.allclose(mixed[i], lam * i + (1 - lam) * (5 - i), atol=1e-5)
        assert np.isclose(targets[i, i], lam) and np.isclose(targets[i, 5 - i], 1 - lam)


def test_cutmix_area_matches_label_weight_and_smoothing():
    for seed in range(10):
        images, labels = constant_batch()
        mixed, targets = MixupCutmix(cutmix=1.0, label_smoothing=0.1, num_classes=10)(
            images, labels, np.random.default_rng(seed))
        assert np.allclose(targets.sum(1), 1, atol=1e-6)
        pasted = (mixed[1] == 4).mean()  # pixels of image 1 taken from its partner, image 4
        off = 0.1 / 10
        lam = (targets[1, 1] - off) / (1 - 0.1)
        assert np.isclose(1 - lam, pasted, atol=1e-6)
        assert np.isclose(targets[1, 4], (1 - lam) * (1 - 0.1) + off, atol=1e-6)


def test_mix_switch_and_prob():
    images, labels = constant_batch()
    kinds = set()
    for seed in range(40):
        mixed, _ = MixupCutmix(mixup=0.8, cutmix=1.0)(list(images), labels, np.random.default_rng(seed))
        kinds.add("cutmix" if set(np.unique(mixed[0])) <= {0.0, 5.0} else "mixup")
    assert kinds == {"mixup", "cutmix"}
    mixed, targets = MixupCutmix(mixup=0.8, prob=0.0, num_classes=6)(images, labels, np.random.default_rng(0))
    assert np.array_equal(mixed, np.stack(images)) and np.array_equal(targets, np.eye(6, dtype=np.float32))


# ---- the list create_transforms returns -----------------------------------------------------------------------------

PHOTO = (np.random.default_rng(4).random((50, 70, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("name, is_training, options, data", [
    ("imagenet", True, dict(auto_augment="randaug-m9-mstd0.5", re_prob=0.5, vflip=0.5), encode(PHOTO, "JPEG")),
    ("imagenet", True, dict(interpolation="bicubic", hflip=0.5), encode(PHOTO)),
    ("imagenet", False, {}, encode(PHOTO, "JPEG")),
    ("cifar10", True, {}, PHOTO[:32, :32].copy()),
    ("cifar10", True, {}, encode(PHOTO[:32, :32].copy())),
    ("cifar100", False, {}, PHOTO[:32, :32].copy()),
    ("mnist", True, {}, PHOTO[:28, :28, 0].copy()),
], ids=["train-jpeg-randaug", "train-png", "eval", "cifar-train", "cifar-train-png", "cifar-eval", "mnist"])
def test_list_applied_op_by_op_is_the_fused_transform(name, is_training, options, data):
    """The operations of the list, applied one by one as the loader applies a changed list, give exactly what the
    fused fast path of the unchanged list gives: same draws in the same order, same pixels."""
    from mindcv.data.transforms import SampleTransform
    transforms = create_transforms(name, 40, is_training, **options)
    assert isinstance(transforms, list) and transforms.fused() is not None
    for seed in range(8):
        fused = transforms(data, np.random.default_rng(seed))
        one_by_one = SampleTransform(list(transforms))(data, np.random.default_rng(seed))
        np.testing.assert_array_equal(one_by_one, fused)


def test_changed_list_is_no_longer_fused_and_settings_reach_the_fast_path():
    transforms = create_transforms("imagenet", 32, True, hflip=0.0)
    fused = transforms.fused()
    data = encode(PHOTO, "JPEG")
    plain = transforms(data, np.random.default_rng(0))
    transforms[1].prob = 1.0  # the horizontal flip: a setting of an operation, read by the fused transform
    assert transforms.fused() is fused
    np.testing.assert_array_equal(transforms(data, np.random.default_rng(0)), plain[:, :, ::-1])
    transforms.append(lambda chw: -chw)
    assert transforms.fused() is None
    np.testing.assert_array_equal(transforms(data, np.random.default_rng(0)), -plain[:, :, ::-1])
    transforms.pop()
    assert transforms.fused() is fused  # the same operations again: fused again
