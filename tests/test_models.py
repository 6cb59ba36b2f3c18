"""ConvNeXt zoo: registry, architecture, reference numerics and checkpoint loading."""
import logging
import math
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, mint, ops

from conftest import MINI, ROOT, reference, requires_cpu_kernels
from mindcv.models import create_model, is_model, list_models
from mindcv.models.convnext import use_eval_kernels
from mindcv.models.layers import GELU, DropPath, bind_drop_path
from mindcv.ops import fast_cpu_ops
from mindcv.io.checkpoint import save_checkpoint_atomic

V1 = ["atto", "femto", "pico", "nano", "tiny", "small", "base", "large", "xlarge"]
V2 = ["atto", "femto", "pico", "nano", "tiny", "base", "large", "huge"]


def num_params(net) -> int:
    return sum(int(np.prod(p.shape)) for p in net.get_parameters())


def params(net) -> dict:
    return {p.name: p.asnumpy() for p in net.get_parameters()}


@pytest.fixture(autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)


def test_registry_lists_every_size():
    expected = {f"convnext_{s}" for s in V1} | {f"convnextv2_{s}" for s in V2}
    assert set(list_models()) == expected
    assert list_models("convnextv2_*") == sorted(f"convnextv2_{s}" for s in V2)
    assert is_model("convnext_tiny") and not is_model("convnext_tiny2")


def test_unknown_model_lists_close_matches():
    with pytest.raises(ValueError, match="unknown model 'convnext_tinny'.*convnext_tiny"):
        create_model("convnext_tinny")


@pytest.mark.parametrize("name,expected", [("convnext_tiny", 28_589_128), ("convnext_small", 50_223_688),
                                           ("convnext_base", 88_591_464)])
def test_parameter_count_of_reference_architecture(name, expected):
    assert num_params(create_model(name)) == expected


def test_parameter_names_match_mindcv_checkpoints():
    names = [p.name for p in create_model("convnext_tiny").get_parameters()]
    assert len(names) == 182
    assert names[:13] == ["feature.0.0.weight", "feature.0.0.bias", "feature.0.1.gamma", "feature.0.1.beta",
                          "feature.1.0.gamma_", "feature.1.0.dwconv.weight", "feature.1.0.dwconv.bias",
                          "feature.1.0.norm.gamma", "feature.1.0.norm.beta", "feature.1.0.pwconv1.weight",
                          "feature.1.0.pwconv1.bias", "feature.1.0.pwconv2.weight", "feature.1.0.pwconv2.bias"]
    assert names[-4:] == ["norm.gamma", "norm.beta", "classifier.weight", "classifier.bias"]
    assert {"feature.2.0.gamma", "feature.2.1.weight", "feature.4.1.weight", "feature.6.1.bias"} <= set(names)
    shapes = {p.name: p.shape for p in create_model("convnext_tiny").get_parameters()}
    assert shapes["feature.1.0.dwconv.weight"] == (96, 1, 7, 7)
    assert shapes["feature.1.0.pwconv1.weight"] == (384, 96)
    assert shapes["classifier.weight"] == (1000, 768)


@pytest.mark.parametrize("family,sizes", [("convnext", V1), ("convnextv2", V2)])
def test_every_size_runs_forward_and_backward(family, sizes):
    """Each registered size with one block per stage (its real widths), at a 32x32 input."""
    for size in sizes:
        net = create_model(f"{family}_{size}", num_classes=3, depths=(1, 1, 1, 1))
        x = Tensor(np.random.default_rng(0).standard_normal((1, 3, 32, 32)), ms.float32)
        grads = ms.grad(lambda inp: net(inp).sum(), grad_position=None, weights=net.trainable_params())(x)
        assert net(x).shape == (1, 3)
        assert len(grads) == len(net.trainable_params())
        assert all(np.isfinite(g.asnumpy()).all() for g in grads)
        has_grn = any(".grn." in p.name for p in net.get_parameters())
        has_layer_scale = any(p.name.endswith("gamma_") for p in net.get_parameters())
        assert has_grn == (family == "convnextv2") and has_layer_scale == (family == "convnext")


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE], ids=["graph", "pynative"])
@pytest.mark.parametrize("model_name,fixture", [("convnext_atto", "convnext_mini.timm"),
                                                ("convnext_atto", "convnext_mini.official"),
                                                ("convnextv2_atto", "convnextv2_mini.timm")])
def test_reference_logits(mode, model_name, fixture, tmp_path):
    """Converted timm / official weights reproduce timm's eval-mode logits (fp32, CPU), with the blocks as built
    and after `use_eval_kernels`."""
    ms.set_context(mode=mode)
    stem = fixture.split(".")[0]
    converted = str(tmp_path / "converted.ckpt")
    subprocess.run([sys.executable, "-m", "mindcv.convert", reference(f"{fixture}.safetensors"), converted,
                    "--model", model_name, "--depths", "1", "1", "2", "1", "--dims", "16", "32", "64", "128",
                    "--quiet"], check=True, cwd=ROOT, capture_output=True)
    for path in (reference(f"{fixture}.safetensors"), converted):
        net = create_model(model_name, checkpoint_path=path, **MINI)
        if path == converted:  # the blocks as the scripts run them in eval mode (two kernels each on the CPU)
            use_eval_kernels(net)
        net.set_train(False)
        logits = net(Tensor(np.load(reference(f"{stem}.input.npy")))).asnumpy()
        assert np.abs(logits - np.load(reference(f"{stem}.logits.npy"))).max() <= 5e-5


def test_features_only_returns_four_strides():
    net = create_model("convnext_atto", features_only=True, depths=(1, 1, 1, 1))
    net.set_train(False)
    outputs = net(Tensor(np.zeros((2, 3, 64, 64), np.float32)))
    assert [tuple(o.shape) for o in outputs] == [(2, 40, 16, 16), (2, 80, 8, 8), (2, 160, 4, 4), (2, 320, 2, 2)]
    assert [f["reduction"] for f in net.feature_info] == [4, 8, 16, 32]
    subset = create_model("convnext_atto", features_only=True, out_indices=(1, 3), depths=(1, 1, 1, 1))
    assert [o.shape[1] for o in subset(Tensor(np.zeros((1, 3, 64, 64), np.float32)))] == [80, 320]


@requires_cpu_kernels
def test_channels_last_cpu_layout_gives_the_stock_nchw_outputs():
    """On CPU the fast kernels keep the feature maps channels-last; logits, backbone outputs (NCHW) and
    forward_features equal those of the stock NCHW operators."""
    with fast_cpu_ops(False):
        stock = create_model("convnext_atto", features_only=True, **MINI)
    fast = create_model("convnext_atto", features_only=True, **MINI)
    assert fast.channels_last and not stock.channels_last
    ms.load_param_into_net(fast, {p.name: p for p in stock.get_parameters()})
    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 64, 64)), ms.float32)
    for out, ref in zip((*fast(x), fast.forward_features(x)), (*stock(x), stock.forward_features(x))):
        assert out.shape == ref.shape
        np.testing.assert_allclose(out.asnumpy(), ref.asnumpy(), rtol=1e-5, atol=1e-5 * np.abs(ref.asnumpy()).max())


def test_backbone_loads_classification_weights():
    net = create_model("convnext_atto", features_only=True, checkpoint_path=reference("convnext_mini.timm.safetensors"),
                       **MINI)
    assert not any(p.name.startswith(("norm.", "classifier.")) for p in net.get_parameters())


def test_initialisation():
    net = create_model("convnext_atto", num_classes=10, head_init_scale=0.5, layer_scale_init_value=1e-3, **{
        "depths": (1, 1, 1, 1)})
    values = params(net)
    weights = values["feature.3.0.pwconv1.weight"]
    # timm's trunc_normal_(std=0.02) truncates at +-2 in absolute value, i.e. practically a plain normal
    assert abs(weights.std() - 0.02) < 0.002 and abs(weights.mean()) < 0.002
    assert abs(values["classifier.weight"].std() - 0.01) < 0.002
    assert not values["feature.0.0.bias"].any() and not values["feature.1.0.pwconv1.bias"].any()
    assert np.all(values["feature.1.0.gamma_"] == np.float32(1e-3))


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    net = create_model("convnext_atto", **MINI)
    path = save_checkpoint_atomic(net, str(tmp_path / "net.ckpt"))
    reloaded = create_model("convnext_atto", checkpoint_path=path, **MINI)
    original, loaded = params(net), params(reloaded)
    assert original.keys() == loaded.keys()
    assert all(np.array_equal(original[k], loaded[k]) for k in original)


def test_mindcv_checkpoint_with_optimizer_entries_loads_strictly(tmp_path):
    source = create_model("convnext_atto", **MINI)
    entries = [{"name": p.name, "data": p.data} for p in source.get_parameters()]
    entries += [{"name": f"adam_m.{p.name}", "data": ops.zeros_like(p.data)} for p in source.get_parameters()]
    entries += [{"name": f"adam_v.{p.name}", "data": ops.zeros_like(p.data)} for p in source.get_parameters()]
    entries += [{"name": "global_step", "data": Tensor([7], ms.int32)},
                {"name": "learning_rate", "data": Tensor(0.1, ms.float32)}]
    path = str(tmp_path / "mindcv.ckpt")
    ms.save_checkpoint(entries, path)
    loaded = params(create_model("convnext_atto", checkpoint_path=path, **MINI))
    assert all(np.array_equal(v, loaded[k]) for k, v in params(source).items())


def test_checkpoint_of_another_model_is_a_clear_error():
    with pytest.raises(ValueError) as error:
        create_model("convnext_atto", num_classes=10, checkpoint_path=reference("convnext_mini.timm.safetensors"))
    message = str(error.value)
    assert "does not fit this model" in message and "wrong shape" in message and "missing" in message
    with pytest.raises(ValueError, match="unexpected .*grn"):
        create_model("convnext_atto", checkpoint_path=reference("convnextv2_mini.timm.safetensors"),
                     **dict(MINI, layer_scale_init_value=0.0))


def test_classifier_of_another_size_is_left_out_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        net = create_model("convnext_atto", checkpoint_path=reference("convnext_mini.timm.safetensors"),
                           **dict(MINI, num_classes=4))
    assert "does not fit this model's num_classes" in caplog.text
    reference_net = create_model("convnext_atto", checkpoint_path=reference("convnext_mini.timm.safetensors"), **MINI)
    ours, theirs = params(net), params(reference_net)
    assert ours["classifier.weight"].shape == (4, 128)
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours if not k.startswith("classifier."))


def test_pth_without_torch_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    path = tmp_path / "weights.pth"
    path.write_bytes(b"not really")
    with pytest.raises(ImportError, match="needs PyTorch.*pip install torch"):
        create_model("convnext_atto", checkpoint_path=str(path), **MINI)


def test_missing_checkpoint_file():
    with pytest.raises(FileNotFoundError, match="checkpoint not found: /nowhere.ckpt"):
        create_model("convnext_atto", checkpoint_path="/nowhere.ckpt", **MINI)


@pytest.mark.parametrize("draw", ["generator", "counter"])
def test_drop_path_is_identity_in_eval_and_drops_samples_in_training(draw):
    drop = DropPath(0.3)
    if draw == "counter":
        bind_drop_path(drop, Parameter(Tensor(7, ms.int32), name="step", requires_grad=False), seed=1)
    x = Tensor(np.ones((20000, 4), np.float32))
    drop.set_train(False)
    assert np.array_equal(drop(x).asnumpy(), x.asnumpy())
    drop.set_train(True)
    out = drop(x).asnumpy()
    kept = out[:, 0] != 0
    assert np.all(out[kept] == np.float32(1 / 0.7))  # survivors rescaled, whole samples dropped
    assert np.all(out[~kept] == 0)
    assert abs((~kept).mean() - 0.3) < 0.015  # 4.6 standard deviations of a binomial(20000, 0.3) fraction


def test_bound_drop_path_masks_are_a_function_of_seed_rank_step_and_layer():
    """Each rank, layer and step its own masks (about 50% agreement between two of them at drop_prob 0.5); the same
    seed, rank, layer and step, the same masks: what a resumed run needs, and what no generator state can change."""
    step = Parameter(Tensor(0, ms.int32), name="step", requires_grad=False)
    x = Tensor(np.ones((4000, 1), np.float32))

    def masks(rank, at_step, seed=5):
        layers = ms.nn.SequentialCell([DropPath(0.5), DropPath(0.5)]).set_train(True)
        assert bind_drop_path(layers, step, seed=seed, rank=rank) == 2
        step.set_data(Tensor(at_step, ms.int32))
        ops.rand((10,))  # the generator moves on: no effect on a bound layer
        return [layer(x).asnumpy()[:, 0] > 0 for layer in layers]

    first, second = masks(rank=0, at_step=3)
    assert np.array_equal(masks(rank=0, at_step=3)[0], first)
    for other in (second, masks(rank=1, at_step=3)[0], masks(rank=0, at_step=4)[0], masks(0, 3, seed=6)[0]):
        assert 0.45 < (other == first).mean() < 0.55
    assert not [p for p in ms.nn.SequentialCell([DropPath(0.5)]).get_parameters()]


def test_bound_drop_path_trains_the_same_steps_again_bit_for_bit():
    """Graph mode, the train step's own counter: two steps, the whole state put back (weights, moments, counters),
    the same two steps again give the same weights, as a resumed run must (MindSpore's generator would draw new
    masks the second time)."""
    from mindcv.engine.train_step import create_train_step
    from mindcv.loss import create_loss
    from mindcv.optim import create_optimizer

    ms.set_context(mode=ms.GRAPH_MODE)
    net = create_model("convnext_atto", num_classes=4, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), drop_path_rate=0.6)
    names = [p.name for p in net.get_parameters()]
    step = create_train_step(net, create_loss("ce"), create_optimizer(net, "adamw", lr=0.01))
    assert bind_drop_path(net, step.current_iterator_step, seed=3) == 4
    assert [p.name for p in net.get_parameters()] == names
    rng = np.random.default_rng(0)
    images = Tensor(rng.standard_normal((6, 3, 32, 32)).astype(np.float32))
    labels = Tensor(rng.integers(0, 4, 6).astype(np.int32))
    saved = {p.name: p.asnumpy().copy() for p in step.get_parameters()}

    def two_steps():
        for p in step.get_parameters():
            p.set_data(Tensor(saved[p.name]))
        step(images, labels)
        step(images, labels)
        return {p.name: p.asnumpy() for p in net.get_parameters()}

    first, again = two_steps(), two_steps()
    assert any(not np.array_equal(first[n], saved[n]) for n in names)
    assert all(np.array_equal(first[n], again[n]) for n in names)


def test_gelu_is_one_operator_on_ascend_and_erf_elsewhere(monkeypatch):
    """The GELU layer picks mint's single operator where the device target is Ascend (the context query is
    stood in for here; the operator too, as it has no CPU kernel), and the erf formula on this CPU."""
    x = Tensor(np.linspace(-6, 6, 49).astype(np.float32))
    exact = np.array([v * (1 + math.erf(v / math.sqrt(2))) / 2 for v in x.asnumpy().astype(np.float64)])
    with fast_cpu_ops(False):
        cpu = GELU()
    get_context = ms.get_context
    monkeypatch.setattr(ms, "get_context", lambda key: "Ascend" if key == "device_target" else get_context(key))
    ascend = GELU()
    monkeypatch.setattr(ms, "get_context", get_context)
    calls = []
    monkeypatch.setattr(mint.nn.functional, "gelu",
                        lambda v, approximate: calls.append(approximate) or ops.gelu(v, approximate=approximate))
    np.testing.assert_allclose(cpu(x).asnumpy(), exact, rtol=1e-6, atol=1e-6)
    assert calls == [] and not cpu.uses_single_operator
    np.testing.assert_allclose(ascend(x).asnumpy(), exact, rtol=1e-6, atol=1e-6)
    assert calls == ["none"] and not ascend.uses_fast_kernel
