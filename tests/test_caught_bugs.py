"""Behaviours that single-line bugs once broke without any test failing (issue 25). Each test here was checked
by planting its bug in a copy of the code and seeing the test fail (tests/README.md says how); the bug each one
catches is named in its docstring."""
import inspect
import io
import json
import math
import os
import subprocess
import sys

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
import pytest
from mindspore import Tensor, nn
from PIL import Image

from conftest import DEMO_DATA, MINI, ROOT, reference, requires_cpu_kernels
from mindcv.config.builders import build_model, build_transform
from mindcv.config.schema import SCHEMA, parse_config
from mindcv.data.transforms import create_transforms, random_resized_crop_box
from mindcv.engine.evaluate import evaluate
from mindcv.engine.train_step import create_train_step
from mindcv.loss import create_loss
from mindcv.models import create_model
from mindcv.models.convnext import ConvNeXt
from mindcv.optim import create_optimizer

# the published ImageNet statistics, written out here rather than imported so that a wrong constant fails too
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225]) * 255
SMALL = ["--depths", "1", "1", "2", "1", "--dims", "16", "32", "64", "128"]
SCRIPT_ARGS = ["--model", "convnext_atto", *SMALL, "--image_resize", "32", "--num_parallel_workers", "1", "--mode",
               "0"]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def run_script(script, *args):
    result = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def parameters(cell):
    return {p.name: p.asnumpy().copy() for p in cell.get_parameters()}


# ---- gradient accumulation ----

def sgd_train_step(gradient_accumulation_steps):
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    network = nn.SequentialCell(nn.Dense(4, 8), nn.GELU(approximate=False), nn.Dense(8, 3))
    # plain SGD, lr 1: the update is minus the gradient, so a gradient twice too large shows as such (AdamW's
    # update barely depends on the gradient's scale)
    optimizer = create_optimizer(network, "sgd", lr=1.0, weight_decay=0.0, momentum=0.0)
    return create_train_step(network, create_loss("ce"), optimizer,
                             gradient_accumulation_steps=gradient_accumulation_steps)


def test_accumulated_update_is_the_mean_gradient_of_the_micro_batches():
    """Catches: the accumulated gradient sum not divided by gradient_accumulation_steps."""
    rng = np.random.default_rng(5)
    images = rng.normal(size=(8, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=8).astype(np.int32)
    full, accumulated = sgd_train_step(1), sgd_train_step(2)
    start = parameters(full.network)
    for name, value in parameters(accumulated.network).items():
        np.testing.assert_array_equal(value, start[name])
    full(Tensor(images), Tensor(labels))
    accumulated(Tensor(images[:4]), Tensor(labels[:4]))
    accumulated(Tensor(images[4:]), Tensor(labels[4:]))
    # the batch loss is a mean, so the mean of the two half-batch gradients is the full batch's gradient
    full_after, accumulated_after = parameters(full.network), parameters(accumulated.network)
    for name in start:
        expected = full_after[name].astype(np.float64) - start[name]
        update = accumulated_after[name].astype(np.float64) - start[name]
        assert np.abs(expected).max() > 1e-4, name  # every parameter moved: the comparison means something
        error = np.linalg.norm(update - expected) / np.linalg.norm(expected)
        assert error < 1e-4, f"{name}: the accumulated update differs from the full batch's by {error:.2%} of it"


# ---- random resized crop scale ----

def test_every_crop_scale_default_is_imagenets():
    """Catches: the lower crop scale 0.08 changed in create_transforms', random_resized_crop_box's or the
    config's default."""
    assert inspect.signature(create_transforms).parameters["scale"].default == (0.08, 1.0)
    assert inspect.signature(random_resized_crop_box).parameters["scale"].default == (0.08, 1.0)
    assert parse_config([]).scale == [0.08, 1.0]


def crop_areas(transform, draws=200, side=256):
    """Fractions of the image that `draws` training crops cover, read from an image whose red channel is the
    column and green channel the row (the crop is resized, but the coordinates it spans survive)."""
    rows, columns = np.mgrid[0:side, 0:side]
    data = png(np.stack([columns, rows, np.zeros_like(rows)], axis=-1))
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(draws):
        out = transform(data, rng)
        width = out[0].max() - out[0].min() + 1
        height = out[1].max() - out[1].min() + 1
        areas.append(width * height / side ** 2)
    return np.array(areas)


def test_default_training_crops_sometimes_cover_under_15_percent():
    """Catches: a lower crop scale of 0.5 instead of 0.08 (then no crop is under half the image). With areas
    uniform in [0.08, 1], about 7 % of the crops are under 0.15 of the image."""
    plain = dict(hflip=0.0, color_jitter=None, mean=(0, 0, 0), std=(1, 1, 1))
    from_function = create_transforms("imagenet", image_resize=32, is_training=True, **plain)
    config = parse_config(["--image_resize", "32", "--hflip", "0", "--mean", "0", "0", "0", "--std", "1", "1", "1"])
    from_config = build_transform(config, is_training=True)
    for source, transform in (("create_transforms", from_function), ("the default config", from_config)):
        areas = crop_areas(transform)
        assert (areas < 0.15).sum() >= 3, (f"{source}: the smallest of 200 crops covers {areas.min():.1%} "
                                           "of the image")
        assert areas.max() > 0.8, f"{source}: the largest of 200 crops covers {areas.max():.1%} of the image"
    rng = np.random.default_rng(1)
    boxes = np.array([random_resized_crop_box((256, 256), rng) for _ in range(200)])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / 256 ** 2
    assert (areas < 0.15).sum() >= 3, f"random_resized_crop_box: the smallest of 200 boxes covers {areas.min():.1%}"


# ---- top-5 accuracy ----

class Identity(nn.Cell):
    """A 'network' whose logits are its input: the test chooses every ranking."""

    def construct(self, x):
        return x + 0.0


def test_evaluate_counts_a_label_ranked_second_to_fifth_in_top5():
    """Catches: top-5 computed as top-1 (or over fewer or more than 5 classes)."""
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(2)
    ranks = [1, 2, 3, 4, 5, 6, 7, 10, 1, 5, 2, 8]  # where each sample's label is in its ranking, 1 = highest
    logits = rng.normal(size=(len(ranks), 10)).astype(np.float32)
    labels = np.array([np.argsort(-row)[rank - 1] for row, rank in zip(logits, ranks)], np.int32)
    loader = ds.NumpySlicesDataset((logits, labels), column_names=["image", "label"],
                                   shuffle=False).batch(5)  # batches of 5, 5 and 2
    metrics = evaluate(Identity(), loader)
    assert metrics["num_samples"] == 12
    assert metrics["top1"] == pytest.approx(100 * 2 / 12)
    assert metrics["top5"] == pytest.approx(100 * 8 / 12)
    shifted = logits - logits.max(axis=1, keepdims=True)
    cross_entropy = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(12), labels]
    assert metrics["loss"] == pytest.approx(cross_entropy.mean(), rel=1e-5)


def test_validate_prints_and_writes_a_hand_computed_top5(tmp_path):
    """Catches: top-5 computed as top-1, as validate.py shows it. The checkpoint's classifier has zero weights and
    biases 0..9, so every image gets the ranking 9, 8, ..., 0; one image per class: the image of class 9 is a
    top-1 hit, those of classes 8 to 5 top-5 hits only."""
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(3)
    for label in range(10):
        os.makedirs(tmp_path / "data" / "val" / str(label))
        Image.fromarray(rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)).save(
            tmp_path / "data" / "val" / str(label) / "image.png")
    model = create_model("convnext_atto", num_classes=10, depths=(1, 1, 2, 1), dims=(16, 32, 64, 128))
    model.classifier.weight.set_data(Tensor(np.zeros((10, 128), np.float32)))
    model.classifier.bias.set_data(Tensor(np.arange(10, dtype=np.float32)))
    checkpoint = str(tmp_path / "ranked.ckpt")
    ms.save_checkpoint(model, checkpoint)
    output = tmp_path / "results.json"
    result = run_script("validate.py", *SCRIPT_ARGS, "--data_dir", str(tmp_path / "data"), "--batch_size", "4",
                        "--ckpt_path", checkpoint, "--json", str(output))
    assert "top-1 10.00%  top-5 50.00%" in result.stdout
    results = json.loads(output.read_text())
    assert (results["num_samples"], results["top1"], results["top5"]) == (10, 10.0, 50.0)
    expected_loss = math.log(sum(math.exp(b) for b in range(10))) - 4.5  # mean of logsumexp - bias[label]
    assert results["loss"] == pytest.approx(expected_loss, rel=1e-5)


# ---- model defaults that the config repeats ----

def test_config_model_defaults_are_the_constructors():
    """Catches: a config default (layer_scale_init_value, head_init_scale, drop rates, in_channels) that differs
    from ConvNeXt's own; None in the config means 'the model's default'."""
    constructor = inspect.signature(ConvNeXt.__init__).parameters
    config_defaults = {option.name: option.default for option in SCHEMA}
    shared = sorted(set(constructor) & set(config_defaults))
    assert {"layer_scale_init_value", "head_init_scale", "drop_path_rate", "drop_rate", "in_channels"} <= set(shared)
    for name in shared:
        if name in ("depths", "dims"):  # None: the size's own (convnext_tiny's are the constructor's)
            assert config_defaults[name] is None
            continue
        assert config_defaults[name] in (None, constructor[name].default), (
            f"config default {name}={config_defaults[name]!r}, ConvNeXt's {constructor[name].default!r}")


@pytest.mark.parametrize("name", [
    "convnext_atto",
    "convnextv2_atto",  # the config's layer_scale_init_value once overrode V2's 0 with 1e-6
])
def test_a_model_from_the_default_config_is_the_models_default(name):
    """Catches: layer_scale_init_value / head_init_scale in the config other than the model's: the model that
    train.py builds from the default config must be the one create_model builds."""
    ms.set_seed(0)
    from_config = parameters(build_model(parse_config(["--model", name, *SMALL]), 10))
    ms.set_seed(0)
    default = parameters(create_model(name, num_classes=10, depths=(1, 1, 2, 1), dims=(16, 32, 64, 128)))
    assert sorted(from_config) == sorted(default)
    for key, value in default.items():
        np.testing.assert_array_equal(from_config[key], value, err_msg=key)


# ---- EMA: validation and the best checkpoint ----

def test_an_ema_run_validates_and_keeps_the_ema_weights(tmp_path):
    """Catches: validation metrics or *_best.ckpt taken from the training weights when ema is on."""
    run_dir = str(tmp_path / "run")
    run_script("train.py", *SCRIPT_ARGS, "--data_dir", DEMO_DATA, "--num_samples", "32", "--batch_size", "16",
               "--epoch_size", "1", "--ema", "True", "--ema_decay", "0.5", "--scheduler", "constant", "--lr", "0.01",
               "--warmup_epochs", "0", "--ckpt_save_dir", run_dir)
    state = {k: v.asnumpy() for k, v in ms.load_checkpoint(os.path.join(run_dir, "convnext_atto-1_2.ckpt")).items()}
    best = {k: v.asnumpy() for k, v in ms.load_checkpoint(os.path.join(run_dir, "convnext_atto_best.ckpt")).items()}
    assert any(not np.array_equal(state[name], state[f"ema.{name}"]) for name in best)  # EMA != trained weights
    for name, value in best.items():
        np.testing.assert_array_equal(value, state[f"ema.{name}"], err_msg=f"{name} of the best checkpoint")
    # the epoch's validation scored the EMA weights, which the best checkpoint holds
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        record = json.loads(f.readline())
    output = tmp_path / "val.json"
    run_script("validate.py", "--ckpt_path", os.path.join(run_dir, "convnext_atto_best.ckpt"), "--json", str(output))
    validated = json.loads(output.read_text())
    assert validated["loss"] == pytest.approx(record["val_loss"], rel=1e-5)
    assert validated["top1"] == pytest.approx(record["val_top1"])


# ---- block LayerNorm eps ----

def layer_norm(x, gamma, beta, eps):
    return (x - x.mean()) / np.sqrt(x.var() + eps) * gamma + beta


def gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_block_layer_norm_eps_on_nearly_flat_pixels(training):
    """Catches: the block LayerNorm's eps 1e-6 changed (1e-5), which the reference logits of ConvNeXt v1 do not
    see at their 5e-5 tolerance. The first block of the reference model (the fixture's weights) gets a depthwise
    conv of zero weights and biases whose spread over the channels is 1e-3, so every pixel's LayerNorm input has
    variance 1e-6, where eps weighs as much as the variance; the block is compared with numpy at 5e-5."""
    ms.set_context(mode=ms.GRAPH_MODE)
    model = create_model("convnext_atto", **MINI, checkpoint_path=reference("convnext_mini.timm.safetensors"))
    block = model.feature[1][0]
    p = {name: getattr(cell, attribute).asnumpy().astype(np.float64) for name, cell, attribute in [
        ("norm.gamma", block.norm, "gamma"), ("norm.beta", block.norm, "beta"), ("layer_scale", block, "gamma_"),
        ("fc1.weight", block.pwconv1, "weight"), ("fc1.bias", block.pwconv1, "bias"),
        ("fc2.weight", block.pwconv2, "weight"), ("fc2.bias", block.pwconv2, "bias")]}
    dim = 16
    flat = (0.5 + 1e-3 * np.where(np.arange(dim) % 2 == 0, 1.0, -1.0)).astype(np.float32)
    block.dwconv.weight.set_data(Tensor(np.zeros((dim, 1, 7, 7), np.float32)))
    block.dwconv.bias.set_data(Tensor(flat))

    def residual_branch(eps):
        normed = layer_norm(flat.astype(np.float64), p["norm.gamma"], p["norm.beta"], eps)
        hidden = gelu(p["fc1.weight"] @ normed + p["fc1.bias"])
        return p["layer_scale"] * (p["fc2.weight"] @ hidden + p["fc2.bias"])

    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 5, 5, dim)).astype(np.float32)  # channels-last
    expected = x + residual_branch(1e-6)
    assert np.abs(residual_branch(1e-5) - residual_branch(1e-6)).max() > 100 * 5e-5  # the case tells eps apart
    block.set_train(training)
    if model.channels_last:
        out = block(Tensor(x)).asnumpy()
    else:
        out = block(Tensor(x.transpose(0, 3, 1, 2))).asnumpy().transpose(0, 2, 3, 1)
    error = np.abs(out - expected).max()
    assert error <= 5e-5, f"the block differs from one with a LayerNorm of eps 1e-6 by {error:.2e}"


# ---- overflow in a gradient's tail ----

class SumOfOutputs(nn.Cell):
    """Loss = sum of the network's outputs (the labels are not used)."""

    def construct(self, logits, labels):
        return logits.sum()


@requires_cpu_kernels
def test_overflow_in_the_last_element_of_a_gradient_skips_the_update():
    """Catches: the CPU overflow kernel not checking a tensor's last elements (those past a multiple of its SIMD
    width: 37 = 2 x 16 + 5 = 4 x 8 + 5 = 9 x 4 + 1). The weight's gradient is loss_scale x image: with a loss
    scale of 2^100 only its last element, where the image holds 1e20, overflows float32; the loss stays finite."""
    ms.set_context(mode=ms.GRAPH_MODE)
    network = nn.Dense(37, 1, weight_init="zeros")
    optimizer = create_optimizer(network, "sgd", lr=0.1, weight_decay=0.0, momentum=0.0)
    train_step = create_train_step(network, SumOfOutputs(), optimizer, loss_scale_type="dynamic",
                                   loss_scale=2.0 ** 100, drop_overflow_update=True)
    assert train_step.all_finite is not None  # mindcv's CPU kernel checks the gradients
    images = np.ones((1, 37), np.float32)
    images[0, -1] = 1e20
    start = parameters(network)
    loss, overflow, _ = train_step(Tensor(images), Tensor(np.zeros(1, np.int32)))
    assert np.isfinite(loss.asnumpy())
    assert bool(overflow.asnumpy()), "an infinite last gradient element was not reported as an overflow"
    for name, value in parameters(network).items():
        np.testing.assert_array_equal(value, start[name], err_msg=f"{name} updated with a non-finite gradient")
    assert float(train_step.loss_scale.asnumpy()) == 2.0 ** 99


# ---- normalisation values ----

def test_normalisation_gives_a_known_pixels_standard_score():
    """Catches: mean and std swapped (or a wrong statistic) anywhere from the config to the pixels: a uniform
    image of a known colour must come out as (pixel - mean) / std per channel."""
    colour = np.array([200, 100, 50])
    data = png(np.broadcast_to(colour, (40, 48, 3)))
    rng = np.random.default_rng(0)
    imagenet = (colour - IMAGENET_MEAN) / IMAGENET_STD
    cases = [
        (create_transforms("imagenet", image_resize=32, is_training=False), imagenet),
        (create_transforms("imagenet", image_resize=32, is_training=True, color_jitter=None), imagenet),
        (build_transform(parse_config(["--image_resize", "32"]), is_training=False), imagenet),
        (build_transform(parse_config(["--image_resize", "32", "--mean", "10", "20", "30", "--std", "2", "4", "5"]),
                         is_training=False), np.array([(200 - 10) / 2, (100 - 20) / 4, (50 - 30) / 5])),
    ]
    for transform, expected in cases:
        out = transform(data, rng)
        assert out.shape == (3, 32, 32)
        np.testing.assert_allclose(out, np.broadcast_to(expected[:, None, None], out.shape), rtol=1e-5, atol=1e-5)
