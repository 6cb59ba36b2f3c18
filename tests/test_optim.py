"""create_optimizer: update rules against NumPy transcriptions of PyTorch's (timm's for Adan and LAMB), MindCV's
signature and parameter groups, argument checks, decay filters, layer decay, state and resume."""
import inspect
import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from mindcv.models import create_model
from mindcv.models.weights import is_training_state
from mindcv.ops import fast_cpu_ops
from mindcv.optim import (OPTIMIZERS, STATE_KEYS, STATE_PREFIXES, StepwiseLR, convnext_layer_ids,
                          create_optimizer, weight_decay_mask)

RNG = np.random.default_rng(1)
INIT = {"w": RNG.normal(size=(3, 4)).astype(np.float32), "b": RNG.normal(size=4).astype(np.float32)}
GRADS = [{k: RNG.normal(size=v.shape).astype(np.float32) for k, v in INIT.items()} for _ in range(3)]
LRS = [0.1, 0.05, 0.02]
WD = {"w": 0.3, "b": 0.0}  # what the norm_and_bias filter gives


@pytest.fixture(scope="module", autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)


def make_params(dtype=np.float32):
    return [Parameter(Tensor(INIT[k].astype(dtype)), name=k) for k in ("w", "b")]


def step(optimizer, grads):
    """One update; gradients in the optimizer's parameter order (parameter groups may reorder) and dtype."""
    optimizer(tuple(Tensor(grads[p.name].astype(p.asnumpy().dtype)) for p in optimizer.parameters))


def run_optimizer(opt, groups=None, steps=3, dtype=np.float32, **kwargs):
    """Three updates with GRADS at the per-step LRS, decay WD["w"] through the norm_and_bias filter; `groups` turns
    the parameter list into the parameter-group dicts given to create_optimizer."""
    params = make_params(dtype)
    kwargs = {"lr": LRS, "weight_decay": WD["w"], "weight_decay_filter": "norm_and_bias", **kwargs}
    optimizer = create_optimizer(params if groups is None else groups(*params), opt, **kwargs)
    for grads in GRADS[:steps]:
        step(optimizer, grads)
    return {p.name: p.asnumpy() for p in params}, optimizer


def reference(update, lrs=None, wds=None):
    """Apply `update(param, grad, state, lr, wd, t, grads)` (grads: every parameter's gradient of this step) for
    the three steps in float64; lrs / wds: per-parameter lr lists and decays (default LRS and WD)."""
    lrs = lrs or {k: LRS for k in INIT}
    wds = wds or WD
    params = {k: v.astype(np.float64) for k, v in INIT.items()}
    state = {k: {} for k in INIT}
    for t, grads in enumerate(GRADS, start=1):
        grads = {k: g.astype(np.float64) for k, g in grads.items()}
        for k in params:
            params[k] = update(params[k], grads[k], state[k], lrs[k][t - 1], wds[k], t, grads)
    return params


# The rules below are transcribed from the references' documented algorithms (torch.optim.Adam / AdamW / NAdam /
# RMSprop / Adagrad / SGD, timm's Adan and Lamb, Lion's paper), not from mindcv's code.

def adam_rule(decoupled, beta1=0.9, beta2=0.999, eps=1e-8):
    def update(p, g, s, lr, wd, t, _):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        s["m"] = beta1 * s.get("m", 0) + (1 - beta1) * g
        s["v"] = beta2 * s.get("v", 0) + (1 - beta2) * g * g
        denom = np.sqrt(s["v"]) / math.sqrt(1 - beta2 ** t) + eps
        return p - lr / (1 - beta1 ** t) * s["m"] / denom
    return update


def nadam_rule(beta1=0.9, beta2=0.999, eps=1e-8, momentum_decay=4e-3):
    def update(p, g, s, lr, wd, t, _):
        g = g + wd * p
        mu = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        s["mu_product"] = s.get("mu_product", 1.0) * mu
        s["m"] = beta1 * s.get("m", 0) + (1 - beta1) * g
        s["v"] = beta2 * s.get("v", 0) + (1 - beta2) * g * g
        denom = np.sqrt(s["v"] / (1 - beta2 ** t)) + eps
        p = p - lr * (1 - mu) / (1 - s["mu_product"]) * g / denom
        return p - lr * mu_next / (1 - s["mu_product"] * mu_next) * s["m"] / denom
    return update


def rmsprop_rule(alpha, eps, momentum, centered=False):
    def update(p, g, s, lr, wd, t, _):
        g = g + wd * p
        s["square_avg"] = alpha * s.get("square_avg", 0) + (1 - alpha) * g * g
        if centered:
            s["grad_avg"] = alpha * s.get("grad_avg", 0) + (1 - alpha) * g
            avg = np.sqrt(s["square_avg"] - s["grad_avg"] ** 2) + eps
        else:
            avg = np.sqrt(s["square_avg"]) + eps
        if momentum > 0:
            s["buf"] = momentum * s.get("buf", 0) + g / avg
            return p - lr * s["buf"]
        return p - lr * g / avg
    return update


def adagrad_rule(eps=1e-10, lr_decay=0.0, initial_accumulator_value=0.0):
    def update(p, g, s, lr, wd, t, _):
        g = g + wd * p
        clr = lr / (1 + (t - 1) * lr_decay)
        s["sum"] = s.get("sum", initial_accumulator_value) + g * g
        return p - clr * g / (np.sqrt(s["sum"]) + eps)
    return update


def sgd_rule(momentum, nesterov):
    def update(p, g, s, lr, wd, t, _):
        g = g + wd * p
        s["buf"] = momentum * s.get("buf", 0) + g
        return p - lr * (g + momentum * s["buf"] if nesterov else s["buf"])
    return update


def lion_rule(beta1=0.9, beta2=0.99):
    def update(p, g, s, lr, wd, t, _):
        m = s.get("m", 0)
        p = p * (1 - lr * wd) - lr * np.sign(beta1 * m + (1 - beta1) * g)
        s["m"] = beta2 * m + (1 - beta2) * g
        return p
    return update


def adan_rule(beta1=0.98, beta2=0.92, beta3=0.99, eps=1e-8, no_prox=False):
    def update(p, g, s, lr, wd, t, _):
        if t == 1:
            s["neg_pre_grad"] = -g
        diff = g + s["neg_pre_grad"]
        s["m"] = beta1 * s.get("m", 0) + (1 - beta1) * g
        s["diff"] = beta2 * s.get("diff", 0) + (1 - beta2) * diff
        s["n"] = beta3 * s.get("n", 0) + (1 - beta3) * (g + beta2 * diff) ** 2
        denom = np.sqrt(s["n"]) / math.sqrt(1 - beta3 ** t) + eps
        step_size, step_size_diff = lr / (1 - beta1 ** t), lr * beta2 / (1 - beta2 ** t)
        if no_prox:
            p = p * (1 - lr * wd) - step_size * s["m"] / denom - step_size_diff * s["diff"] / denom
        else:
            p = (p - step_size * s["m"] / denom - step_size_diff * s["diff"] / denom) / (1 + lr * wd)
        s["neg_pre_grad"] = -g
        return p
    return update


def lamb_rule(beta1=0.9, beta2=0.999, eps=1e-6, max_grad_norm=1.0, trust_clip=False, always_adapt=False):
    def update(p, g, s, lr, wd, t, grads):
        if max_grad_norm is not None:
            global_norm = math.sqrt(sum(float(np.sum(x * x)) for x in grads.values()))
            g = g / max(global_norm / max_grad_norm, 1.0)
        s["m"] = beta1 * s.get("m", 0) + (1 - beta1) * g
        s["v"] = beta2 * s.get("v", 0) + (1 - beta2) * g * g
        u = (s["m"] / (1 - beta1 ** t)) / (np.sqrt(s["v"]) / math.sqrt(1 - beta2 ** t) + eps)
        if wd != 0:
            u = u + wd * p
        if wd != 0 or always_adapt:
            w_norm, u_norm = np.linalg.norm(p), np.linalg.norm(u)
            ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
            u = u * (min(ratio, 1.0) if trust_clip else ratio)
        return p - lr * u
    return update


@pytest.mark.parametrize("opt, kwargs, rule", [
    ("adamw", dict(eps=1e-8), adam_rule(decoupled=True)),
    ("adam", dict(eps=1e-8), adam_rule(decoupled=False)),
    ("AdamW", dict(betas=(0.8, 0.99), eps=1e-3), adam_rule(True, 0.8, 0.99, 1e-3)),
    ("adam", dict(beta1=0.8, beta2=0.99, eps=1e-3), adam_rule(False, 0.8, 0.99, 1e-3)),
    ("nadam", dict(eps=1e-8), nadam_rule()),
    ("nadam", dict(betas=(0.8, 0.99), eps=1e-3, schedule_decay=0.2), nadam_rule(0.8, 0.99, 1e-3, 0.2)),
    ("rmsprop", dict(eps=1e-3), rmsprop_rule(alpha=0.9, eps=1e-3, momentum=0.9)),  # the factory's alpha 0.9
    ("rmsprop", dict(alpha=0.99, eps=1e-3, momentum=0.0), rmsprop_rule(0.99, 1e-3, 0.0)),
    ("rmsprop", dict(decay=0.8, eps=1e-3, momentum=0.5, centered=True), rmsprop_rule(0.8, 1e-3, 0.5, True)),
    ("adagrad", {}, adagrad_rule()),
    ("adagrad", dict(eps=1e-3, lr_decay=0.5, initial_accumulator_value=0.1), adagrad_rule(1e-3, 0.5, 0.1)),
    ("sgd", dict(momentum=0.9, nesterov=True), sgd_rule(0.9, True)),
    ("SGD", dict(momentum=0.0), sgd_rule(0.0, False)),
    ("momentum", dict(momentum=0.5), sgd_rule(0.5, False)),
    ("nesterov", dict(momentum=0.5), sgd_rule(0.5, True)),
    ("lion", {}, lion_rule()),
    ("lion", dict(betas=(0.8, 0.9)), lion_rule(0.8, 0.9)),
    ("adan", dict(eps=1e-3), adan_rule(eps=1e-3)),
    ("adan", dict(betas=(0.9, 0.8, 0.95), eps=1e-8, no_prox=True), adan_rule(0.9, 0.8, 0.95, 1e-8, True)),
    ("lamb", dict(eps=1e-6), lamb_rule()),
    ("lamb", dict(eps=1e-3, max_grad_norm=None, trust_clip=True, always_adapt=True),
     lamb_rule(eps=1e-3, max_grad_norm=None, trust_clip=True, always_adapt=True)),
    ("lamb", dict(beta1=0.8, eps=1e-6, max_grad_norm=10.0), lamb_rule(0.8, 0.999, 1e-6, max_grad_norm=10.0)),
])
def test_update_rules_match_the_references(opt, kwargs, rule):
    ours, optimizer = run_optimizer(opt, **kwargs)
    expected = reference(rule)
    for k in INIT:
        np.testing.assert_allclose(ours[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert optimizer.global_step.asnumpy()[0] == 3


@pytest.mark.parametrize("name, kwargs, rule", [
    ("Adam", dict(betas=(0.8, 0.99), eps=1e-3), adam_rule(False, 0.8, 0.99, 1e-3)),
    ("AdamW", dict(betas=(0.8, 0.99), eps=1e-3), adam_rule(True, 0.8, 0.99, 1e-3)),
    ("NAdam", dict(betas=(0.8, 0.99), eps=1e-3, momentum_decay=0.2), nadam_rule(0.8, 0.99, 1e-3, 0.2)),
    ("NAdam", {}, nadam_rule()),
    ("RMSprop", dict(alpha=0.9, eps=1e-3, momentum=0.9), rmsprop_rule(0.9, 1e-3, 0.9)),
    ("RMSprop", dict(alpha=0.8, eps=1e-3, momentum=0.5, centered=True), rmsprop_rule(0.8, 1e-3, 0.5, True)),
    ("Adagrad", dict(eps=1e-3, lr_decay=0.5, initial_accumulator_value=0.1), adagrad_rule(1e-3, 0.5, 0.1)),
    ("SGD", dict(momentum=0.9, nesterov=True), sgd_rule(0.9, True)),
])
def test_numpy_rules_are_pytorch_s(name, kwargs, rule):
    """The transcriptions above against torch.optim itself (float64, per-step lr, per-parameter decay)."""
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install -r requirements-dev.txt)")
    params = {k: torch.tensor(v.astype(np.float64), requires_grad=True) for k, v in INIT.items()}
    optimizer = getattr(torch.optim, name)([{"params": [params[k]], "weight_decay": WD[k]} for k in INIT],
                                           lr=LRS[0], **kwargs)
    for grads, lr in zip(GRADS, LRS):
        for group in optimizer.param_groups:
            group["lr"] = lr
        for k, p in params.items():
            p.grad = torch.tensor(grads[k].astype(np.float64))
        optimizer.step()
    expected = reference(rule)
    for k in INIT:  # 1e-7: torch keeps NAdam's mu_product and the step counts in float32
        np.testing.assert_allclose(params[k].detach().numpy(), expected[k], rtol=1e-7, atol=1e-9, err_msg=k)


def test_every_name_is_tested_and_the_rules_differ():
    """Each name has a rule above, and the rules are far enough apart for the comparison to tell them apart."""
    assert set(OPTIMIZERS) == {"sgd", "momentum", "nesterov", "adam", "adamw", "lion", "nadam", "adan", "rmsprop",
                               "adagrad", "lamb"}
    results = [reference(rule)["w"] for rule in (adam_rule(False), nadam_rule(), rmsprop_rule(0.9, 1e-8, 0.9),
                                                 adagrad_rule(), sgd_rule(0.9, False), lion_rule(), adan_rule(),
                                                 lamb_rule(), adam_rule(True))]
    for i, a in enumerate(results):
        for b in results[i + 1:]:
            assert np.max(np.abs(a - b)) > 1e-3


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_float16_parameters_follow_the_float32_run(opt):
    """float16 parameters (state in float16, arithmetic in float32) end where float32 ones do, to float16 precision;
    AdamW runs its per-operation rule there (the fused primitive needs float32)."""
    half, optimizer = run_optimizer(opt, dtype=np.float16, eps=1e-3)
    full, _ = run_optimizer(opt, eps=1e-3)
    per_parameter = [p for p in optimizer.get_parameters() if p.name.split(".")[-1] in INIT]  # weights, moments
    assert len(per_parameter) > 2 and all(p.asnumpy().dtype == np.float16 for p in per_parameter)
    assert getattr(optimizer, "fused_op", None) is None
    for k in INIT:
        np.testing.assert_allclose(half[k].astype(np.float32), full[k], rtol=3e-3, atol=3e-3, err_msg=k)


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
        create_optimizer([Parameter(Tensor(np.zeros(2, np.float32)), name="p")], "adadelta")


def test_signature_and_defaults_are_mindcv_s():
    signature = inspect.signature(create_optimizer)
    assert [(name, p.default) for name, p in signature.parameters.items()] == [
        ("model_or_params", inspect.Parameter.empty), ("opt", "adam"), ("lr", 1e-3), ("weight_decay", 0),
        ("momentum", 0.9), ("nesterov", False), ("weight_decay_filter", "disable"), ("layer_decay", None),
        ("loss_scale", 1.0), ("schedule_decay", 4e-3), ("checkpoint_path", ""), ("eps", 1e-10),
        ("kwargs", inspect.Parameter.empty)]
    optimizer = create_optimizer(make_params())
    assert (optimizer.decoupled, optimizer.eps, optimizer.loss_scale) == (False, 1e-10, 1.0)  # Adam, L2 decay
    # positional, in MindCV's order
    optimizer = create_optimizer(make_params(), "sgd", 0.1, 0.2, 0.5, True, "norm_and_bias", None, 1.0, 4e-3, "",
                                 1e-10)
    assert (optimizer.momentum, optimizer.nesterov, optimizer.weight_decays) == (0.5, True, (0.2, 0.0))


def mindcv_groups(w, b):
    """MindCV's parameter groups as it builds them (own lr list and decay per group), in reversed order."""
    return [{"params": [w], "weight_decay": 0.2, "lr": [0.3, 0.2, 0.1]},
            {"params": [b], "weight_decay": 0.1},
            {"order_params": [b, w]}]


@pytest.mark.parametrize("opt, kwargs, rule", [
    ("adamw", dict(eps=1e-3), adam_rule(True, eps=1e-3)),  # the fused path, one lr per group
    ("adam", dict(eps=1e-3), adam_rule(False, eps=1e-3)),
    ("sgd", dict(momentum=0.9), sgd_rule(0.9, False)),
    ("lamb", dict(eps=1e-6), lamb_rule()),  # b decayed: adapted too
    ("adagrad", {}, adagrad_rule()),
])
def test_parameter_groups_set_decay_lr_and_order(opt, kwargs, rule):
    ours, optimizer = run_optimizer(opt, groups=mindcv_groups, weight_decay_filter="disable", **kwargs)
    assert [p.name for p in optimizer.parameters] == ["b", "w"]  # order_params
    expected = reference(rule, lrs={"w": [0.3, 0.2, 0.1], "b": LRS}, wds={"w": 0.2, "b": 0.1})
    for k in INIT:
        np.testing.assert_allclose(ours[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=k)
    names = {p.name for p in optimizer.get_parameters()}
    assert {"learning_rate", "learning_rate_group_1"} <= names


def test_group_without_decay_or_lr_takes_the_arguments_and_the_filter_still_applies():
    def groups(w, b):
        return [{"params": [w], "lr": 0.07}, {"params": [b], "weight_decay": 0.1}]
    ours, optimizer = run_optimizer("sgd", groups=groups, weight_decay=0.05, weight_decay_filter="disable",
                                    momentum=0.0)
    assert optimizer.weight_decays == (0.05, 0.1)
    expected = reference(sgd_rule(0.0, False), lrs={"w": [0.07] * 3, "b": LRS}, wds={"w": 0.05, "b": 0.1})
    for k in INIT:
        np.testing.assert_allclose(ours[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # norm_and_bias spares the 1-D b whatever its group says
    assert run_optimizer("sgd", groups=groups, steps=0, weight_decay=0.05)[1].weight_decays == (0.05, 0.0)


def test_group_lr_may_be_a_schedule():
    def groups(w, b):
        return [{"params": [w], "lr": StepwiseLR([0.3, 0.2], name="w_lr")}, {"params": [b]}]
    ours, optimizer = run_optimizer("sgd", groups=groups, momentum=0.0)
    expected = reference(sgd_rule(0.0, False), lrs={"w": [0.3, 0.2, 0.2], "b": LRS})
    for k in INIT:
        np.testing.assert_allclose(ours[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert "w_lr" in {p.name for p in optimizer.get_parameters()}


def test_model_no_weight_decay_names_are_spared_by_the_filters():
    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w, self.b = make_params()

        def no_weight_decay(self):
            return {"w"}

    assert create_optimizer(Net(), "adamw", weight_decay=0.1, weight_decay_filter="auto").weight_decays == (0.0, 0.1)
    assert create_optimizer(Net(), "adamw", weight_decay=0.1).weight_decays == (0.1, 0.1)  # "disable": as MindCV


def one_group(**group):
    return lambda w, b: [{"params": [w, b], **group}]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(weight_decay=-0.1), ValueError, "weight_decay must be >= 0"),
    (dict(lr=-0.1), ValueError, "lr must be >= 0"),
    (dict(lr=[0.1, -0.01]), ValueError, "lr must be >= 0"),
    (dict(lr=[0.1, float("nan")]), ValueError, "lr must be >= 0"),
    (dict(groups=one_group(weight_decay=-0.1)), ValueError, "group 0: weight_decay must be >= 0"),
    (dict(groups=one_group(lr=-1.0)), ValueError, "group 0: lr must be >= 0"),
    (dict(groups=one_group(lr=[0.1, -0.1])), ValueError, "group 0: lr must be >= 0"),
    (dict(groups=one_group(momentum=0.5)), ValueError, "unknown keys"),
    (dict(groups=one_group(grad_centralization=1)), TypeError, "grad_centralization must be True or False"),
    (dict(groups=lambda w, b: [{"params": [w, b]}, {"params": [b]}]), ValueError, "more than one group"),
    (dict(groups=lambda w, b: [{"params": [w, b]}, {"order_params": [w]}]), ValueError, "order_params"),
    (dict(groups=lambda w, b: [{"params": [w]}, b]), TypeError, "mixes"),
    (dict(groups=lambda w, b: [{"weight_decay": 0.1}]), ValueError, "no 'params'"),
    (dict(weight_decay_filter="bias"), ValueError, "weight_decay_filter"),
    (dict(opt="sgd", betas=(0.9, 0.99)), ValueError, "sgd takes no betas"),
    (dict(opt="adam", beta3=0.9), TypeError, "adam takes no beta3"),
    (dict(opt="adam", clip=True), TypeError, "adam does not take clip"),
    (dict(opt="rmsprop", no_prox=True), TypeError, "rmsprop does not take no_prox"),
    (dict(opt="adam", nesterov=True), ValueError, "nadam"),
    (dict(opt="adamw", betas=(0.9, 1.0)), ValueError, r"betas must lie in \[0, 1\)"),
    (dict(opt="adan", betas=(0.9, 0.9)), ValueError, "Adan takes 3 betas"),
    (dict(opt="adamw", eps=-1e-8), ValueError, "eps must be >= 0"),
    (dict(opt="nesterov", momentum=0.0), ValueError, "momentum"),
])
def test_bad_arguments_are_refused(kwargs, error, match):
    kwargs = {"opt": "adamw", **kwargs}
    with pytest.raises(error, match=match):
        run_optimizer(steps=0, **kwargs)


@pytest.mark.parametrize("opt", ["adamw", "adam", "nadam", "adan", "rmsprop", "adagrad", "lamb", "sgd", "lion"])
def test_checkpoint_path_resumes_the_optimizer_state(opt, tmp_path):
    """Two updates, the optimizer saved, a new optimizer over the weights so far built with checkpoint_path takes
    the third: the same weights as three updates in one go (moments, step counters and the lr position restored)."""
    kwargs = dict(lr=LRS, weight_decay=WD["w"], weight_decay_filter="norm_and_bias", eps=1e-3)
    straight, _ = run_optimizer(opt, **kwargs)
    params = make_params()
    first = create_optimizer(params, opt, **kwargs)
    for grads in GRADS[:2]:
        step(first, grads)
    path = str(tmp_path / "optimizer.ckpt")
    ms.save_checkpoint(first, path)
    weights = [Parameter(Tensor(p.asnumpy()), name=p.name) for p in params]
    resumed = create_optimizer(weights, opt, checkpoint_path=path, **kwargs)
    assert resumed.global_step.asnumpy()[0] == 2
    step(resumed, GRADS[2])
    for p in weights:
        np.testing.assert_allclose(p.asnumpy(), straight[p.name], rtol=1e-6, atol=1e-7, err_msg=p.name)


def test_checkpoint_path_refuses_missing_files_and_other_optimizers_state(tmp_path):
    first = create_optimizer(make_params(), "sgd", lr=LRS)
    path = str(tmp_path / "sgd.ckpt")
    ms.save_checkpoint(first, path)
    with pytest.raises(ValueError, match="lacks the optimizer state"):
        create_optimizer(make_params(), "adamw", lr=LRS, checkpoint_path=path)
    with pytest.raises(FileNotFoundError):
        create_optimizer(make_params(), "sgd", lr=LRS, checkpoint_path=str(tmp_path / "none.ckpt"))
    # the learning rate is this run's, not the checkpoint's (a per-step list there, a float here)
    resumed = create_optimizer(make_params(), "sgd", lr=0.5, checkpoint_path=path)
    assert resumed.learning_rate.asnumpy() == pytest.approx(0.5)


@pytest.mark.parametrize("opt, kwargs", [(name, {}) for name in OPTIMIZERS] + [("rmsprop", dict(centered=True))])
def test_state_names_are_listed_and_unique(opt, kwargs):
    """Every optimizer's state is named by STATE_PREFIXES / STATE_KEYS (for checkpoint loaders telling optimizer
    state from weights) and no two entries share a name."""
    _, optimizer = run_optimizer(opt, groups=mindcv_groups, steps=0, **kwargs)
    names = [p.name for p in optimizer.get_parameters()]
    assert len(names) == len(set(names))
    state = set(names) - {"w", "b"}
    assert state and all(n in STATE_KEYS or n.startswith(STATE_PREFIXES) for n in state), state


@pytest.mark.parametrize("opt, decoupled", [("sgd", False), ("adamw", True), ("adam", False)])
def test_grad_centralization_as_mindspore(opt, decoupled):
    """MindSpore's rule (mindspore/nn/optim/optimizer.py): the gradient of a weight of 2+ dimensions whose second
    dimension is a multiple of 16 loses its mean over all axes but the first, after an L2 decay joins it; other
    parameters, and groups that say False, keep theirs. One update against NumPy."""
    rng = np.random.default_rng(3)
    shapes = {"conv": (3, 16, 2), "dense": (2, 16), "narrow": (3, 4), "bias": (16,), "off": (2, 32)}
    init = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    grads = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    params = {k: Parameter(Tensor(v), name=k) for k, v in init.items()}
    groups = [{"params": [params[k] for k in ("conv", "dense", "narrow", "bias")], "grad_centralization": True},
              {"params": [params["off"]]}]
    lr, wd = 0.1, 0.3
    optimizer = create_optimizer(groups, opt, lr=lr, weight_decay=wd, momentum=0.0, eps=1e-8)
    step(optimizer, grads)
    for k, value in init.items():
        g = grads[k].astype(np.float64) + (0.0 if decoupled else wd * value)
        if k in ("conv", "dense"):
            g = g - g.mean(axis=tuple(range(1, g.ndim)), keepdims=True)
        if opt == "sgd":
            expected = value - lr * g
        else:  # Adam's first step: p - lr * g / (|g| + eps), decoupled decay first
            expected = value * (1 - lr * wd if decoupled else 1.0) - lr * g / (np.abs(g) + 1e-8)
        np.testing.assert_allclose(params[k].asnumpy(), expected, rtol=1e-4, atol=1e-5, err_msg=k)
    # the keyword centralizes every parameter that qualifies; a group may opt out
    keyword = create_optimizer([{"params": [params["conv"]]}, {"params": [params["off"]],
                                                               "grad_centralization": False}],
                               "sgd", grad_centralization=True)
    assert keyword.centralize_flags == (True, False)
