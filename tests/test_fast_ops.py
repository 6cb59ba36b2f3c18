"""The CPU fast paths (mindcv.ops kernels and the MatMul form of the patchify convolutions) against MindSpore's
stock operators: forward and gradients, odd sizes, batch 1, several channel counts; and that ConvNeXt uses
them on CPU. Tiny inputs, PyNative mode, no timing."""
import warnings

import numpy as np
import mindspore as ms
import pytest
from mindspore import nn, ops

from mindcv.models import create_model
from mindcv.models.layers import (GELU, ConvNeXtMlp, DepthwiseConv2d, LayerNorm, LayerNorm2d, LayerScaleResidual, Linear,
                                  PatchifyConv2d, RowBiasAdd)
from mindcv.native import build as _build
from mindcv.ops import depthwise_conv_op, fast_cpu_ops, gelu
from mindcv.ops.depthwise_conv import depthwise_conv_nhwc_op
from mindcv.ops.finite import all_finite_op
from mindcv.ops.gelu import bias_gelu_op, gelu_op

from conftest import MINI, requires_cpu_kernels

pytestmark = requires_cpu_kernels
RTOL = 1e-5


@pytest.fixture(autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)


def _assert_close(actual, expected):
    """Equal to 1e-5 relative, elementwise or to the tensor's largest magnitude: sums of dozens of products
    cancel to near zero in places, where only the summation order separates the two operators."""
    expected = expected.asnumpy()
    np.testing.assert_allclose(actual.asnumpy(), expected, rtol=RTOL, atol=RTOL * np.abs(expected).max())


def _assert_layer_matches(layer, stock, x, dy):
    """layer(x) and the gradients of sum(layer(x) * dy) with respect to x and each parameter, against `stock`."""
    _assert_close(layer(x), stock(x))
    fast_grads, stock_grads = (
        ms.grad(lambda v, c=cell: (c(v) * dy).sum(), grad_position=0, weights=cell.trainable_params())(x)
        for cell in (layer, stock))
    (dx, param_grads), (dx_ref, param_grads_ref) = fast_grads, stock_grads
    assert len(param_grads) == len(param_grads_ref) > 0
    for grad, ref in zip((dx, *param_grads), (dx_ref, *param_grads_ref)):
        _assert_close(grad, ref)


def _value_and_grads(fn, inputs, dy):
    """fn(*inputs) and the gradients of sum(fn(*inputs) * dy) with respect to every input."""
    return ms.value_and_grad(lambda *args: (fn(*args) * dy).sum(), grad_position=tuple(range(len(inputs))))(*inputs)


@pytest.mark.parametrize("shape,kernel", [((1, 3, 5, 7), 7), ((2, 8, 9, 11), 7), ((1, 17, 13, 6), 7),
                                          ((2, 32, 7, 20), 7), ((1, 5, 4, 19), 3), ((2, 4, 6, 3), 5),
                                          ((2, 40, 9, 11), 7), ((1, 17, 1, 6), 5)])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_depthwise_conv_matches_stock(shape, kernel, channels_last):
    """Forward, input, weight and bias gradients; shape is (N, C, H, W), laid out [N, H, W, C] for channels-last."""
    rng = np.random.default_rng(sum(shape) + kernel)
    n, c, h, w = shape
    layout = (n, h, w, c) if channels_last else shape
    x = ms.Tensor(rng.standard_normal(layout).astype(np.float32))
    weight = ms.Tensor(rng.standard_normal((c, 1, kernel, kernel)).astype(np.float32))
    bias = ms.Tensor(rng.standard_normal(c).astype(np.float32))
    dy = ms.Tensor(rng.standard_normal(layout).astype(np.float32))
    fast = depthwise_conv_nhwc_op() if channels_last else depthwise_conv_op()

    def stock(x, weight, bias):
        x = ops.transpose(x, (0, 3, 1, 2)) if channels_last else x
        y = ops.conv2d(x, weight, bias, stride=1, pad_mode="pad", padding=kernel // 2, groups=c)
        return ops.transpose(y, (0, 2, 3, 1)) if channels_last else y

    (_, fast_grads), (_, stock_grads) = (_value_and_grads(fn, (x, weight, bias), dy) for fn in (fast, stock))
    _assert_close(fast(x, weight, bias), stock(x, weight, bias))
    for fast_grad, stock_grad in zip(fast_grads, stock_grads):  # input, weight and bias gradients
        _assert_close(fast_grad, stock_grad)


def test_depthwise_conv_layer_keeps_conv2d_parameters():
    layer = DepthwiseConv2d(6, 7)
    assert isinstance(layer, nn.Conv2d) and layer.uses_fast_kernel
    assert layer.weight.shape == (6, 1, 7, 7) and layer.bias.shape == (6,)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((1, 6, 9, 9)).astype(np.float32))
    stock = ops.conv2d(x, layer.weight, layer.bias, pad_mode="pad", padding=3, groups=6)
    _assert_close(layer(x), stock)


def test_gelu_matches_stock():
    rng = np.random.default_rng(1)
    values = np.concatenate([np.linspace(-10, 10, 401), rng.standard_normal(98) * 3, [0.0, 30.0]])
    x = ms.Tensor(values.astype(np.float32).reshape(3, 167))
    dy = ms.Tensor(rng.standard_normal(x.shape).astype(np.float32))
    dx, dx_ref = (ms.grad(lambda v, fn=fn: (fn(v) * dy).sum())(x)
                  for fn in (gelu_op(), lambda v: ops.gelu(v, approximate="none")))
    _assert_close(gelu_op()(x), ops.gelu(x, approximate="none"))
    _assert_close(dx, dx_ref)
    assert GELU().uses_fast_kernel


@pytest.mark.parametrize("shape", [(4, 32), (2, 3, 5, 20), (67, 7)])
def test_bias_gelu_matches_stock(shape):
    """gelu(x + bias) (the kernel ConvNeXtMlp adds pwconv1's bias with): the value and the gradients of x and of
    the bias (summed over rows)."""
    rng = np.random.default_rng(shape[-1])
    x = ms.Tensor((3 * rng.standard_normal(shape)).astype(np.float32))
    bias = ms.Tensor(rng.standard_normal(shape[-1]).astype(np.float32))
    dy = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    out, grads = _value_and_grads(bias_gelu_op(), (x, bias), dy)
    out_ref, grads_ref = _value_and_grads(lambda v, b: ops.gelu(v + b, approximate="none"), (x, bias), dy)
    _assert_close(out, out_ref)
    for grad, ref in zip(grads, grads_ref):
        _assert_close(grad, ref)


@pytest.mark.parametrize("in_channels,out_channels,kernel,side", [(3, 8, 4, 12), (5, 7, 2, 6)])
@pytest.mark.parametrize("channels_last_input,channels_last_output", [(False, False), (False, True), (True, False)])
def test_patchify_conv_matches_stock(in_channels, out_channels, kernel, side, channels_last_input,
                                     channels_last_output):
    rng = np.random.default_rng(kernel)
    layer = PatchifyConv2d(in_channels, out_channels, kernel, channels_last_input, channels_last_output)
    layer.bias.set_data(ms.Tensor(rng.standard_normal(out_channels).astype(np.float32)))
    x_shape = (2, side, side, in_channels) if channels_last_input else (2, in_channels, side, side)
    y_side = side // kernel
    y_shape = (2, y_side, y_side, out_channels) if channels_last_output else (2, out_channels, y_side, y_side)
    x = ms.Tensor(rng.standard_normal(x_shape).astype(np.float32))
    dy = ms.Tensor(rng.standard_normal(y_shape).astype(np.float32))

    def stock(x, weight, bias):  # the layouts the options say, around the stock NCHW convolution
        y = ops.conv2d(ops.transpose(x, (0, 3, 1, 2)) if channels_last_input else x, weight, bias, stride=kernel)
        return ops.transpose(y, (0, 2, 3, 1)) if channels_last_output else y

    def fast(x, weight, bias):
        return layer(x)

    assert layer.uses_matmul
    _assert_close(layer(x), stock(x, layer.weight, layer.bias))
    _, (dx, *_) = _value_and_grads(fast, (x, layer.weight, layer.bias), dy)
    _, (dx_ref, *_) = _value_and_grads(stock, (x, layer.weight, layer.bias), dy)
    _assert_close(dx, dx_ref)
    # Parameter gradients of the layer, through its own parameters.
    grads = ms.grad(lambda v: (layer(v) * dy).sum(), grad_position=None, weights=layer.trainable_params())(x)
    stock_grads = ms.grad(lambda w, b: (stock(x, w, b) * dy).sum(), grad_position=(0, 1))(layer.weight, layer.bias)
    for grad, stock_grad in zip(grads, stock_grads):
        _assert_close(grad, stock_grad)


@pytest.mark.parametrize("leading_shape", [(7,), (2, 3, 5)])
def test_linear_matches_dense(leading_shape):
    rng = np.random.default_rng(len(leading_shape))
    layer = Linear(6, 10)
    stock = nn.Dense(6, 10)
    layer.bias.set_data(ms.Tensor(rng.standard_normal(10).astype(np.float32)))
    stock.weight.set_data(layer.weight.data.copy())
    stock.bias.set_data(layer.bias.data.copy())
    assert isinstance(layer.row_bias_add, RowBiasAdd)
    x = ms.Tensor(rng.standard_normal(leading_shape + (6,)).astype(np.float32))
    dy = ms.Tensor(rng.standard_normal(leading_shape + (10,)).astype(np.float32))
    _assert_layer_matches(layer, stock, x, dy)


@pytest.mark.parametrize("shape", [(7, 16), (2, 5, 3, 40), (3, 768), (1, 2, 2, 5)])
def test_layer_norm_matches_stock(shape):
    rng = np.random.default_rng(shape[-1])
    channels = shape[-1]
    layer = LayerNorm(channels, epsilon=1e-6)
    with fast_cpu_ops(False):
        stock = LayerNorm(channels, epsilon=1e-6)
    assert layer.uses_fast_kernel and not stock.uses_fast_kernel
    for cell in (layer, stock):
        cell.gamma.set_data(ms.Tensor(1 + 0.5 * np.sin(np.arange(channels)).astype(np.float32)))
        cell.beta.set_data(ms.Tensor(0.1 * np.cos(np.arange(channels)).astype(np.float32)))
    # an offset and a spread per row, as activations have
    x = ms.Tensor((3 + 2 * rng.standard_normal(shape) * rng.uniform(0.1, 3, shape[:-1] + (1,))).astype(np.float32))
    dy = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    _assert_layer_matches(layer, stock, x, dy)


@pytest.mark.parametrize("shape", [(2, 5, 7, 16), (1, 3, 3, 40), (3, 17, 1, 5)])
def test_layer_scale_residual_matches_stock(shape):
    """shortcut + scale[n] * gamma * (x + bias), channels-last: the fused kernel against stock operators, with a
    per-sample drop-path scale (0, 1 / keep_prob or 1), forward and the gradients of all four tensors; and the
    layer's NCHW (stock) form, which transposes the branch."""
    rng = np.random.default_rng(shape[-1])
    n, h, w, c = shape
    x, shortcut = (ms.Tensor(rng.standard_normal(shape).astype(np.float32)) for _ in range(2))
    bias, gamma = (ms.Tensor(rng.standard_normal(c).astype(np.float32)) for _ in range(2))
    scale = ms.Tensor(np.resize(np.array([0.0, 1.25, 1.0], np.float32), n))
    dy = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    layer = LayerScaleResidual(0.2, channels_last=True)
    assert layer.uses_fast_kernel and not LayerScaleResidual(0.2).uses_fast_kernel

    def fast(x, bias, gamma, shortcut):
        return layer.fast_op(x, bias, gamma, shortcut, scale)

    def stock(x, bias, gamma, shortcut):
        return shortcut + gamma * (x + bias) * scale.reshape(-1, 1, 1, 1)

    inputs = (x, bias, gamma, shortcut)
    out, grads = _value_and_grads(fast, inputs, dy)
    out_ref, grads_ref = _value_and_grads(stock, inputs, dy)
    _assert_close(out, out_ref)
    for grad, ref in zip(grads, grads_ref):
        _assert_close(grad, ref)
    layer.set_train(False)  # eval: no drop path, the fused and stock paths of the layer agree
    with fast_cpu_ops(False):
        stock_layer = LayerScaleResidual(0.2, channels_last=True)
    stock_layer.set_train(False)
    _assert_close(layer(shortcut, x, bias, gamma), stock_layer(shortcut, x, bias, gamma))
    nchw_layer = LayerScaleResidual(0.2)
    nchw_layer.set_train(False)
    nchw_shortcut = ops.transpose(shortcut, (0, 3, 1, 2))
    _assert_close(nchw_layer(nchw_shortcut, x, bias, gamma), ops.transpose(layer(shortcut, x, bias, gamma), (0, 3, 1, 2)))


# (2, 15, 20) x 8: 600 rows, several chunks per thread (the weight gradients are summed over chunks and threads)
@pytest.mark.parametrize("leading_shape,channels", [((2, 5, 7), 16), ((1, 1, 1), 5), ((3, 17, 2), 40), ((2, 15, 20), 8)])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "separate"])
def test_convnext_mlp_matches_stock(leading_shape, channels, fused):
    """gelu(x @ w1.T + b1) @ w2.T: the layer in training mode (value and the gradients of x, w1, b1, w2) and in
    eval mode (the same), against stock MatMul and GELU; fused: one kernel; separate: the MatMuls around the bias +
    GELU kernel (the path of a block with GRN, here without)."""
    rng = np.random.default_rng(channels)
    hidden = 4 * channels
    x = ms.Tensor(rng.standard_normal(leading_shape + (channels,)).astype(np.float32))
    pwconv1, pwconv2 = Linear(channels, hidden), Linear(hidden, channels)
    pwconv1.weight.set_data(ms.Tensor((rng.standard_normal((hidden, channels)) / np.sqrt(channels)).astype(np.float32)))
    pwconv1.bias.set_data(ms.Tensor(rng.standard_normal(hidden).astype(np.float32)))
    pwconv2.weight.set_data(ms.Tensor((rng.standard_normal((channels, hidden)) / np.sqrt(hidden)).astype(np.float32)))
    pwconv2.bias.set_data(ms.Tensor(rng.standard_normal(channels).astype(np.float32)))  # not the layer's to add
    dy = ms.Tensor(rng.standard_normal(leading_shape + (channels,)).astype(np.float32))
    layer = ConvNeXtMlp(pwconv1, pwconv2)
    assert layer.uses_fused_kernel
    layer.uses_fused_kernel = fused

    def stock(x, w1, b1, w2):
        rows = x.reshape(-1, channels)
        return ops.matmul(ops.gelu(ops.matmul(rows, w1.T) + b1, approximate="none"), w2.T).reshape(x.shape)

    params = [pwconv1.weight, pwconv1.bias, pwconv2.weight]
    for training in (True, False):  # eval mode keeps no hidden values; a gradient there recomputes them
        layer.set_train(training)
        out, (dx, param_grads) = ms.value_and_grad(lambda v: (layer(v) * dy).sum(), grad_position=0,
                                                   weights=params)(x)
        _, grads_ref = _value_and_grads(stock, (x, *params), dy)
        _assert_close(layer(x), stock(x, *params))
        for grad, ref in zip((dx, *param_grads), grads_ref):
            _assert_close(grad, ref)


@pytest.mark.parametrize("channels_last_input,channels_last_output", [(False, False), (True, False), (False, True)])
def test_layer_norm_2d_layouts_match_stock(channels_last_input, channels_last_output):
    """LayerNorm2d with each layout option against the stock norm over the channels of an NCHW tensor."""
    rng = np.random.default_rng(int(channels_last_input) + 2 * int(channels_last_output))
    x = ms.Tensor((3 + 2 * rng.standard_normal((2, 12, 5, 7))).astype(np.float32))
    layer = LayerNorm2d(12, channels_last_input=channels_last_input, channels_last_output=channels_last_output)
    layer.gamma.set_data(ms.Tensor(1 + 0.5 * np.sin(np.arange(12)).astype(np.float32)))
    expected = ops.transpose(layer.layer_norm(ops.transpose(x, (0, 2, 3, 1)), layer.gamma, layer.beta)[0], (0, 3, 1, 2))
    y = layer(ops.transpose(x, (0, 2, 3, 1)) if channels_last_input else x)
    _assert_close(ops.transpose(y, (0, 3, 1, 2)) if channels_last_output else y, expected)


@pytest.mark.parametrize("shape", [(2, 16, 5, 7), (1, 40, 3, 3), (3, 5, 17, 1)])
def test_layer_norm_of_nchw_input_matches_transpose_then_stock(shape):
    rng = np.random.default_rng(shape[1])
    channels = shape[1]
    layer = LayerNorm(channels, epsilon=1e-6, nchw_input=True)
    with fast_cpu_ops(False):
        stock = LayerNorm(channels, epsilon=1e-6, nchw_input=True)
    for cell in (layer, stock):
        cell.gamma.set_data(ms.Tensor(1 + 0.5 * np.sin(np.arange(channels)).astype(np.float32)))
        cell.beta.set_data(ms.Tensor(0.1 * np.cos(np.arange(channels)).astype(np.float32)))
    x = ms.Tensor((3 + 2 * rng.standard_normal(shape)).astype(np.float32))
    dy = ms.Tensor(rng.standard_normal((shape[0], shape[2], shape[3], channels)).astype(np.float32))
    _assert_layer_matches(layer, stock, x, dy)


def test_convnext_uses_fast_paths_on_cpu():
    net = create_model("convnext_atto", **MINI)
    cells = dict(net.cells_and_names())
    blocks = [cell for name, cell in cells.items() if name.endswith("dwconv")]
    assert len(blocks) == sum(MINI["depths"])
    assert all(isinstance(b, DepthwiseConv2d) and b.uses_fast_kernel for b in blocks)
    assert all(cell.uses_fast_kernel for name, cell in cells.items() if name.endswith(".act"))
    mlps = [cell for cell in cells.values() if isinstance(cell, ConvNeXtMlp)]
    assert len(mlps) == sum(MINI["depths"]) and all(cell.uses_fused_kernel for cell in mlps)
    patchify = [cell for cell in cells.values() if isinstance(cell, PatchifyConv2d)]
    assert len(patchify) == 4 and all(cell.uses_matmul for cell in patchify)
    assert all(cell.uses_fast_kernel for cell in cells.values() if isinstance(cell, LayerScaleResidual))
    norms = [cell for cell in cells.values() if isinstance(cell, LayerNorm)]
    assert len(norms) == sum(MINI["depths"]) + 4 + 1 and all(cell.uses_fast_kernel for cell in norms)
    linears = [cell for name, cell in cells.items() if name.endswith(("pwconv1", "pwconv2", "classifier"))]
    assert len(linears) == 2 * sum(MINI["depths"]) + 1 and all(isinstance(c.row_bias_add, RowBiasAdd) for c in linears)
    params = {p.name: p.shape for p in net.get_parameters()}
    assert params["feature.1.0.dwconv.weight"] == (16, 1, 7, 7) and params["feature.1.0.dwconv.bias"] == (16,)


def test_switch_builds_models_with_stock_operators_inside_the_block():
    with fast_cpu_ops(False):
        stock = dict(create_model("convnext_atto", **MINI).cells_and_names())
    assert not any(getattr(cell, "uses_fast_kernel", False) or getattr(cell, "uses_matmul", False)
                   for cell in stock.values())
    fast = dict(create_model("convnext_atto", **MINI).cells_and_names())
    assert all(cell.uses_matmul for cell in fast.values() if isinstance(cell, PatchifyConv2d))


def test_build_falls_back_with_a_warning_without_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDCV_OPS_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-mindcv")
    monkeypatch.setattr(_build, "_built", {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _build.build(gelu.SOURCE) is None
    assert any("stock operators" in str(w.message) for w in caught)


def test_all_finite_flags_any_inf_or_nan_in_any_tensor():
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(shape).astype(np.float32) * 1e30 for shape in ((3,), (17, 5), (2, 3, 4, 33), (1,))]
    op = all_finite_op()
    assert op(*(ms.Tensor(a) for a in arrays)).asnumpy().tolist() == [1.0]  # large but finite
    for index, position, value in ((0, 2, np.inf), (2, 100, -np.inf), (3, 0, np.nan), (1, 84, np.nan)):
        broken = [a.copy() for a in arrays]
        broken[index].reshape(-1)[position] = value
        assert op(*(ms.Tensor(a) for a in broken)).asnumpy().tolist() == [0.0], (index, position, value)


@pytest.mark.parametrize("shape", [(2, 9, 11, 16), (1, 7, 7, 40)])
def test_block_eval_kernels_match_training_operators(shape):
    """`use_eval_kernels` makes a channels-last ConvNeXt block run in eval mode as two fused kernels (dwconv + norm;
    MLP + layer scale + residual); in training mode (no drop path) the separate ones. Output and gradients agree,
    and the parameters keep their names."""
    from mindcv.models.convnext import Block, EvalKernelBlock, use_eval_kernels

    rng = np.random.default_rng(shape[-1])
    block = Block(shape[-1], drop_path=0.0, layer_scale_init_value=0.5, channels_last=True)
    names = [p.name for p in block.get_parameters()]
    assert use_eval_kernels(block) is block and type(block) is EvalKernelBlock
    assert [p.name for p in block.get_parameters()] == names == [n for n, _ in block.parameters_and_names()]
    for param in block.trainable_params():
        param.set_data(ms.Tensor(rng.standard_normal(param.shape).astype(np.float32) * 0.3))
    x = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    dy = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    results = []
    calls = []
    fused_tail = block.mlp_residual_op
    block.mlp_residual_op = lambda *args: calls.append(1) or fused_tail(*args)  # (PyNative: a Python call)
    for training in (True, False):
        block.set_train(training)
        out = block(x)
        grads = ms.grad(lambda v: (block(v) * dy).sum(), grad_position=0, weights=block.trainable_params())(x)
        results.append((out, grads[0], *grads[1]))
    assert calls, "eval mode did not run the fused kernels"
    for fused, separate in zip(results[1], results[0]):
        _assert_close(fused, separate)


def test_eval_kernels_leave_other_blocks_and_the_stock_path_alone():
    """Blocks the two kernels do not fit (GRN, no layer scale, or built with the kernels off) stay Blocks."""
    from mindcv.models.convnext import Block, use_eval_kernels

    with fast_cpu_ops(False):
        stock = Block(8, channels_last=False)
    others = [Block(8, use_grn=True, layer_scale_init_value=0.0, channels_last=True),
              Block(8, layer_scale_init_value=0.0, channels_last=True), stock]
    for block in others:
        assert type(use_eval_kernels(block)) is Block
