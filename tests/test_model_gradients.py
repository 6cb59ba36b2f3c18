"""Whole-model gradients: ConvNeXt on mindcv's CPU kernels (channels-last, fused MLP, fused block tail) against the
same model on MindSpore's stock operators (the device path), for every parameter, in graph mode."""
import mindspore as ms
import numpy as np
import pytest

from conftest import MINI, requires_cpu_kernels
from mindcv.loss import create_loss
from mindcv.models import create_model
from mindcv.ops import fast_cpu_ops

pytestmark = requires_cpu_kernels


def loss_and_gradients(model, images, labels):
    ms.set_context(mode=ms.GRAPH_MODE)
    loss_fn = create_loss("ce", label_smoothing=0.1)
    params = model.trainable_params()

    def forward(x, y):
        return loss_fn(model(x), y)

    loss, grads = ms.value_and_grad(forward, None, params)(ms.Tensor(images), ms.Tensor(labels))
    return float(loss.asnumpy()), {p.name: g.asnumpy().astype(np.float64) for p, g in zip(params, grads)}


@pytest.mark.parametrize("family", ["convnext_atto", "convnextv2_atto"])
def test_kernel_model_gradients_match_the_stock_operators(family):
    rng = np.random.default_rng(11)
    images = rng.normal(size=(3, 3, 64, 64)).astype(np.float32)
    labels = np.array([1, 7, 3], np.int32)
    fast = create_model(family, **MINI).set_train(True)
    with fast_cpu_ops(False):
        stock = create_model(family, **MINI).set_train(True)
    ms.load_param_into_net(stock, {p.name: p for p in fast.get_parameters()}, strict_load=True)
    fast_loss, fast_grads = loss_and_gradients(fast, images, labels)
    stock_loss, stock_grads = loss_and_gradients(stock, images, labels)
    assert fast_loss == pytest.approx(stock_loss, rel=1e-5)
    assert fast_grads.keys() == stock_grads.keys() and len(fast_grads) > 20
    for name, expected in stock_grads.items():
        scale = max(np.abs(expected).max(), 1e-8)
        assert np.abs(fast_grads[name] - expected).max() <= 1e-4 * scale, name
