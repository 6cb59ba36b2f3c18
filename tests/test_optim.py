"""create_optimizer: update rules against NumPy transcriptions of PyTorch's, decay filters, layer decay, state."""
import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor

from mindcv.models import create_model
from mindcv.models.weights import is_training_state
from mindcv.ops import fast_cpu_ops
from mindcv.optim import convnext_layer_ids, create_optimizer, weight_decay_mask

RNG = np.random.default_rng(1)
INIT = {"w": RNG.normal(size=(3, 4)).astype(np.float32), "b": RNG.normal(size=4).astype(np.float32)}
GRADS = [{k: RNG.normal(size=v.shape).astype(np.float32) for k, v in INIT.items()} for _ in range(3)]
LRS = [0.1, 0.05, 0.02]
WD = {"w": 0.3, "b": 0.0}  # what the norm_and_bias filter gives


@pytest.fixture(scope="module", autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)


def run_optimizer(opt, **kwargs):
    params = [Parameter(Tensor(INIT[k]), name=k) for k in ("w", "b")]
    optimizer = create_optimizer(params, opt, lr=LRS, weight_decay=WD["w"], weight_decay_filter="norm_and_bias",
                                 **kwargs)
    for grads in GRADS:
        optimizer(tuple(Tensor(grads[k]) for k in ("w", "b")))
    return {p.name: p.asnumpy() for p in params}, optimizer


def reference(update):
    """Apply `update(name, param, grad, state, lr, wd, t)` for the three steps in float64."""
    params = {k: v.astype(np.float64) for k, v in INIT.items()}
    state = {k: {} for k in INIT}
    for t, (grads, lr) in enumerate(zip(GRADS, LRS), start=1):
        for k in params:
            params[k] = update(params[k], grads[k].astype(np.float64), state[k], lr, WD[k], t)
    return params


def adam_rule(decoupled, beta1=0.9, beta2=0.999, eps=1e-8):
    def update(p, g, s, lr, wd, t):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        s["m"] = beta1 * s.get("m", 0) + (1 - beta1) * g
        s["v"] = beta2 * s.get("v", 0) + (1 - beta2) * g * g
        denom = np.sqrt(s["v"]) / math.sqrt(1 - beta2 ** t) + eps
        return p - lr / (1 - beta1 ** t) * s["m"] / denom
    return update


def sgd_rule(momentum, nesterov):
    def update(p, g, s, lr, wd, t):
        g = g + wd * p
        s["buf"] = momentum * s.get("buf", 0) + g
        return p - lr * (g + momentum * s["buf"] if nesterov else s["buf"])
    return update


def lion_rule(beta1=0.9, beta2=0.99):
    def update(p, g, s, lr, wd, t):
        m = s.get("m", 0)
        p = p * (1 - lr * wd) - lr * np.sign(beta1 * m + (1 - beta1) * g)
        s["m"] = beta2 * m + (1 - beta2) * g
        return p
    return update


@pytest.mark.parametrize("opt, kwargs, rule", [
    ("adamw", {}, adam_rule(decoupled=True)),
    ("adam", {}, adam_rule(decoupled=False)),
    ("adamw", dict(betas=(0.8, 0.99), eps=1e-3), adam_rule(True, 0.8, 0.99, 1e-3)),
    ("sgd", dict(momentum=0.9, nesterov=True), sgd_rule(0.9, True)),
    ("momentum", dict(momentum=0.5), sgd_rule(0.5, False)),
    ("lion", {}, lion_rule()),
])
def test_update_rules_match_pytorch(opt, kwargs, rule):
    ours, optimizer = run_optimizer(opt, **kwargs)
    expected = reference(rule)
    for k in INIT:
        np.testing.assert_allclose(ours[k], expected[k], rtol=1e-5, atol=1e-6)
    assert optimizer.global_step.asnumpy()[0] == 3


def test_adamw_is_fused_on_the_device_path_too_and_matches_the_per_operation_rule():
    """AdamW runs MindSpore's in-place AdamWeightDecay primitive (the one nn.AdamWeightDecay uses on Ascend, GPU and
    CPU) with the bias correction folded into its lr, eps and decay, whatever the fast-kernel switch (off = the
    device path); the parametrized test above checks it against PyTorch. The per-operation rule (Adam, float16
    parameters) gives the same parameters."""
    fused, optimizer = run_optimizer("adamw", betas=(0.8, 0.99), eps=1e-3)
    assert optimizer.fused_op is not None
    with fast_cpu_ops(False):
        device_path, device_optimizer = run_optimizer("adamw", betas=(0.8, 0.99), eps=1e-3)
    assert device_optimizer.fused_op is not None and run_optimizer("adam")[1].fused_op is None
    params = [Parameter(Tensor(INIT[k]), name=k) for k in ("w", "b")]
    per_operation = create_optimizer(params, "adamw", lr=LRS, weight_decay=WD["w"],
                                     weight_decay_filter="norm_and_bias", betas=(0.8, 0.99), eps=1e-3)
    per_operation.fused_op = None  # as for float16 parameters
    for grads in GRADS:
        per_operation(tuple(Tensor(grads[k]) for k in ("w", "b")))
    for k in INIT:
        np.testing.assert_array_equal(device_path[k], fused[k])
        np.testing.assert_allclose(fused[k], params[("w", "b").index(k)].asnumpy(), rtol=1e-6, atol=1e-7)


def test_adamw_state_names_mark_training_state():
    _, optimizer = run_optimizer("adamw")
    names = {p.name for p in optimizer.get_parameters()}
    assert {"adam_m.w", "adam_v.w", "adam_m.b", "adam_v.b", "beta1_power", "beta2_power", "global_step",
            "learning_rate"} <= names
    # the weight loader recognises every state entry as non-model state
    assert all(is_training_state(n) for n in names - {"w", "b"})
    np.testing.assert_allclose(optimizer.beta1_power.asnumpy(), 0.9 ** 3, rtol=1e-6)


def test_lr_list_holds_last_value_past_the_end():
    param = Parameter(Tensor(np.zeros(2, np.float32)), name="p")
    optimizer = create_optimizer([param], "sgd", lr=[1.0, 0.5], momentum=0.0)
    for _ in range(4):
        optimizer((Tensor(np.ones(2, np.float32)),))
    np.testing.assert_allclose(param.asnumpy(), -(1.0 + 0.5 + 0.5 + 0.5))


@pytest.fixture(scope="module")
def convnext_v2():
    return create_model("convnextv2_atto", num_classes=10, depths=(1, 1, 2, 1), dims=(8, 8, 8, 8))


def decayed_names(model, weight_decay_filter):
    params = model.trainable_params()
    return {p.name for p, decayed in zip(params, weight_decay_mask(params, weight_decay_filter)) if decayed}


def test_decay_filters(convnext_v2):
    all_names = {p.name for p in convnext_v2.trainable_params()}
    assert decayed_names(convnext_v2, "disable") == all_names
    auto = decayed_names(convnext_v2, "auto")
    assert "feature.1.0.pwconv1.bias" in auto and "classifier.bias" in auto  # MindSpore's filter decays biases
    assert not any("gamma" in n or "beta" in n for n in auto)
    norm_and_bias = decayed_names(convnext_v2, "norm_and_bias")
    assert norm_and_bias == {p.name for p in convnext_v2.trainable_params()
                             if len(p.shape) > 1 and ".grn." not in p.name}
    assert "feature.1.0.grn.gamma" not in norm_and_bias and "feature.1.0.pwconv1.weight" in norm_and_bias
    assert all(n.endswith("weight") for n in norm_and_bias)  # conv / dense kernels only


def test_layer_scale_gamma_is_spared():
    model = create_model("convnext_atto", num_classes=10, depths=(1, 1, 1, 1), dims=(8, 8, 8, 8))
    for name in ("auto", "norm_and_bias"):
        assert "feature.1.0.gamma_" not in decayed_names(model, name)
    with pytest.raises(ValueError, match="weight_decay_filter"):
        weight_decay_mask(model.trainable_params(), "bias")


def test_layer_ids_match_official_scheme_for_27_blocks():
    model = create_model("convnext_atto", num_classes=10, depths=(3, 3, 27, 3), dims=(8, 8, 8, 8))
    ids, head_id = convnext_layer_ids([p.name for p in model.trainable_params()])
    assert head_id == 13
    assert ids["feature.0.0.weight"] == 0                      # stem
    assert ids["feature.1.2.dwconv.weight"] == 1               # stage 0
    assert ids["feature.2.1.weight"] == ids["feature.3.0.dwconv.weight"] == 2  # stage 1 with its downsampling
    assert ids["feature.4.1.weight"] == ids["feature.5.2.norm.gamma"] == 3     # stage 2: blocks grouped by three
    assert ids["feature.5.3.pwconv1.weight"] == 4 and ids["feature.5.26.pwconv2.bias"] == 11
    assert ids["feature.6.1.weight"] == ids["feature.7.2.gamma_"] == 12        # stage 3
    assert ids["norm.gamma"] == ids["classifier.weight"] == 13                 # head


def official_convnext_layer_id(name):
    """Layer id of a parameter in the official ConvNeXt fine-tuning code (get_num_layer_for_convnext, 12 layers),
    applied to our names: feature.0 is downsample_layers.0 (the stem), feature.2s downsample_layers.s and
    feature.2s+1.b stages.s.b; anything else (norm, classifier) is the head, 13."""
    parts = name.split(".")
    if parts[0] != "feature":
        return 13
    index = int(parts[1])
    if index % 2 == 0:  # downsample_layers.<stage>
        return {0: 0, 1: 2, 2: 3, 3: 12}[index // 2]
    stage, block = index // 2, int(parts[2])  # stages.<stage>.<block>
    return {0: 1, 1: 2, 2: 3 + block // 3, 3: 12}[stage]


def test_layer_decay_scales_the_sgd_update():
    # lr * layer_decay ** (13 - layer id): one SGD step without momentum or decay moves each parameter by exactly
    # lr * scale * grad; 4 blocks in stage 2 give it two ids (blocks 0-2 and 3)
    model = create_model("convnext_atto", num_classes=10, depths=(1, 1, 4, 1), dims=(8, 8, 8, 8))
    lr, decay = 1.0, 0.8
    optimizer = create_optimizer(model, "sgd", lr=lr, momentum=0.0, layer_decay=decay)
    params = list(optimizer.parameters)
    assert [p.name for p in params] == [p.name for p in model.trainable_params()]
    before = [p.asnumpy().astype(np.float64) for p in params]
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=p.shape).astype(np.float32) for p in params]
    optimizer(tuple(Tensor(g) for g in grads))
    ids = set()
    for param, old, grad in zip(params, before, grads):
        layer_id = official_convnext_layer_id(param.name)
        ids.add(layer_id)
        np.testing.assert_allclose(old - param.asnumpy(), lr * decay ** (13 - layer_id) * grad, rtol=1e-5,
                                   atol=1e-7, err_msg=param.name)
    assert ids == {0, 1, 2, 3, 4, 12, 13}
    with pytest.raises(ValueError, match="ConvNeXt"):
        create_optimizer([Parameter(Tensor(np.zeros(2, np.float32)), name="encoder.w")], layer_decay=0.8)


def test_bad_optimizer_name():
    with pytest.raises(ValueError, match="unknown optimizer"):
        create_optimizer([Parameter(Tensor(np.zeros(2, np.float32)), name="p")], "adagrad")
