"""ConvNeXt ("A ConvNet for the 2020s", Liu et al., CVPR 2022) and ConvNeXt V2 (Woo et al., CVPR 2023).

Parameter names follow MindCV's published checkpoints (`feature.1.0.dwconv.weight`, ...), so those
files load strictly; `mindcv.models.weights` maps timm and official names onto them.
"""
from typing import Dict, Sequence

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import TruncatedNormal, Zero, initializer

from ..ops.depthwise_conv import depthwise_conv_norm_op, fast_depthwise_available
from ..ops.mlp import mlp_residual_op
from ..io.download import cache_dir, fetch, fetch_from_hub
from .layers import GRN, ConvNeXtMlp, DepthwiseConv2d, LayerNorm, LayerNorm2d, LayerScaleResidual, Linear, \
    PatchifyConv2d
from .registry import register_model
from .weights import load_weights

MINDCV_URL = "https://download.mindspore.cn/toolkits/mindcv/convnext/"
# Where `pretrained=True` keeps the published weights it downloads (named as in their URL).
PRETRAINED_DIR = cache_dir()
# Published ImageNet-1k weights: MindCV's .ckpt (url) where MindCV has them, else timm's on the Hugging Face Hub (hub)
_TIMM_TAGS = {"convnext_atto": "d2_in1k", "convnext_femto": "d1_in1k", "convnext_pico": "d1_in1k",
              "convnext_nano": "d1h_in1k", "convnext_large": "fb_in1k", "convnext_xlarge": "fb_in22k_ft_in1k"}

# One place for every size: stage depths, stage widths, and published MindCV weights where they exist.
model_cfgs: Dict[str, dict] = {
    "convnext_atto": dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)),
    "convnext_femto": dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384)),
    "convnext_pico": dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512)),
    "convnext_nano": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640)),
    "convnext_tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), url=MINDCV_URL + "convnext_tiny-ae5ff8d7.ckpt"),
    "convnext_small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768), url=MINDCV_URL + "convnext_small-e23008f3.ckpt"),
    "convnext_base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024), url=MINDCV_URL + "convnext_base-ee3544b8.ckpt"),
    "convnext_large": dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
    "convnext_xlarge": dict(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048)),
    "convnextv2_atto": dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), use_grn=True),
    "convnextv2_femto": dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384), use_grn=True),
    "convnextv2_pico": dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512), use_grn=True),
    "convnextv2_nano": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), use_grn=True),
    "convnextv2_tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), use_grn=True),
    "convnextv2_base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024), use_grn=True),
    "convnextv2_large": dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536), use_grn=True),
    "convnextv2_huge": dict(depths=(3, 3, 27, 3), dims=(352, 704, 1408, 2816), use_grn=True),
}
for _name, _cfg in model_cfgs.items():
    if "url" not in _cfg:
        _cfg["hub"] = f"timm/{_name}.{_TIMM_TAGS.get(_name, 'fcmae_ft_in1k')}"


class Block(nn.Cell):
    """dwconv 7x7 -> LayerNorm -> Linear C->4C -> GELU [-> GRN] -> Linear 4C->C [-> layer scale] -> drop path -> + x.
    The pointwise layers run channels-last as Dense layers, as in the official code (`ConvNeXtMlp`, one fused
    kernel on the CPU back end). Input and output NCHW, or with `channels_last` [N, H, W, C] (the CPU back end's
    layout). In eval mode on the CPU, `use_eval_kernels` runs a built model's blocks as two kernels."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6, use_grn: bool = False,
                 channels_last: bool = False):
        super().__init__()
        self.dwconv = DepthwiseConv2d(dim, 7, channels_last)
        self.norm = LayerNorm(dim, epsilon=1e-6, nchw_input=not channels_last)  # channels-last out
        self.pwconv1 = Linear(dim, 4 * dim)
        self.grn = GRN(4 * dim) if use_grn else None
        self.pwconv2 = Linear(4 * dim, dim)
        self.mlp = ConvNeXtMlp(self.pwconv1, self.pwconv2, self.grn)  # runs the three layers above
        self.gamma_ = None
        if layer_scale_init_value > 0:
            self.gamma_ = Parameter(Tensor(np.full(dim, layer_scale_init_value, np.float32)), name="gamma_")
        self.residual = LayerScaleResidual(drop_path, channels_last)  # pwconv2's bias, layer scale, drop path, + x

    def construct(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm(self.dwconv(x))  # channels-last from here on
        x = self.mlp(x)
        return self.residual(shortcut, x, self.pwconv2.bias, self.gamma_)


class EvalKernelBlock(Block):
    """A ConvNeXt block that in eval mode, in float32 on the CPU back end, runs as two kernels: depthwise conv +
    LayerNorm row by row (the conv output is never stored), and MLP + layer scale + residual add in the MLP's
    chunks. Training mode, and float16, run the Block. Made from a built Block by `use_eval_kernels`."""

    def construct(self, x: Tensor) -> Tensor:
        if self.training or x.dtype != ms.float32 or self.pwconv1.weight.dtype != ms.float32:
            return super().construct(x)
        y = self.dwconv_norm_op(x, self.dwconv.weight, self.dwconv.bias, self.norm.gamma, self.norm.beta,
                                self.norm.epsilon_tensor)
        return self.mlp_residual_op(y, self.pwconv1.weight, self.pwconv1.bias, self.pwconv2.weight, self.pwconv2.bias,
                                    self.gamma_, x)


def use_eval_kernels(network: nn.Cell) -> nn.Cell:
    """Turn, in place, every ConvNeXt block of `network` that the two eval-mode kernels fit into an
    `EvalKernelBlock`: channels-last on the CPU kernels, a fused MLP (no GRN) and a layer scale. Parameters (their
    objects and names) and training mode are unchanged; any other network is left as it is. Returns `network`.

    The scripts apply it to every model they build (training validates its network in eval mode)."""
    blocks = [cell for _, cell in network.cells_and_names() if type(cell) is Block and cell.dwconv.channels_last
              and cell.dwconv.uses_fast_kernel and cell.mlp.uses_fused_kernel and cell.gamma_ is not None]
    kernels = (depthwise_conv_norm_op(), mlp_residual_op()) if blocks else (None,)
    if None in kernels:  # (a kernel did not build: warned) the blocks stay as they are
        return network
    for block in blocks:
        # the same object, so its parameters, their names and every reference to the block stay valid
        block.__class__ = EvalKernelBlock
        block.dwconv_norm_op, block.mlp_residual_op = kernels
    return network


class ConvNeXt(nn.Cell):
    """ConvNeXt v1 / v2 classifier or backbone.

    Args:
        in_channels: input image channels. Default 3.
        num_classes: classifier outputs. Default 1000.
        depths: blocks per stage (4 values). Default (3, 3, 9, 3), ConvNeXt-T.
        dims: channels per stage (4 values). Default (96, 192, 384, 768).
        drop_path_rate: stochastic depth rate of the last block; rates rise linearly from 0 over all blocks.
        layer_scale_init_value: initial layer-scale gamma; 0 disables layer scale (V2). Default 1e-6.
        head_init_scale: factor applied to the initial classifier weights (the bias starts at zero). Default 1.0.
        drop_rate: dropout before the classifier in training (timm's head dropout; MindCV's drop_rate). Default 0.
        use_grn: Global Response Normalization after the GELU (ConvNeXt V2). Default False.
        features_only: build a backbone without the head; `construct` returns the stage outputs
            selected by `out_indices` (strides 4, 8, 16, 32). Default False.
        out_indices: which stage outputs a backbone returns. Default (0, 1, 2, 3).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1000, depths: Sequence[int] = (3, 3, 9, 3),
                 dims: Sequence[int] = (96, 192, 384, 768), drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6, head_init_scale: float = 1.0, use_grn: bool = False,
                 features_only: bool = False, out_indices: Sequence[int] = (0, 1, 2, 3), drop_rate: float = 0.0):
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"depths and dims take 4 integers each, one per stage; got {list(depths)} and "
                             f"{list(dims)}")
        self.num_classes = num_classes
        self.dims = tuple(dims)
        self.depths = tuple(depths)
        self.use_grn = use_grn
        drop_rates = np.linspace(0, drop_path_rate, sum(depths)).tolist()
        # With the CPU kernels the feature maps are channels-last [N, H, W, C] from the stem to the head (no
        # transposes; the kernels' vectors run along the channels); elsewhere NCHW. Outputs are NCHW either way.
        self.channels_last = cl = fast_depthwise_available(7)
        layers = [nn.SequentialCell(PatchifyConv2d(in_channels, dims[0], 4, channels_last_output=cl),
                                    LayerNorm2d(dims[0], channels_last_input=cl, channels_last_output=cl))]
        for i, depth in enumerate(depths):
            if i > 0:
                layers.append(nn.SequentialCell(
                    LayerNorm2d(dims[i - 1], channels_last_input=cl, channels_last_output=cl),
                    PatchifyConv2d(dims[i - 1], dims[i], 2, channels_last_input=cl, channels_last_output=cl)))
            rates, drop_rates = drop_rates[:depth], drop_rates[depth:]
            layers.append(nn.SequentialCell([Block(dims[i], r, layer_scale_init_value, use_grn, cl) for r in rates]))
        self.feature = nn.SequentialCell(layers)  # stem, stage 0, downsample 1, stage 1, ...
        self.features_only = features_only
        self.out_indices = tuple(out_indices)
        self.feature_info = [dict(chs=dims[i], reduction=4 * 2 ** i, name=f"feature.{2 * i + 1}") for i in range(4)]
        if not features_only:
            self.norm = LayerNorm(dims[-1], epsilon=1e-6)
            self.head_drop = nn.Dropout(p=drop_rate) if drop_rate > 0 else nn.Identity()
            self.classifier = Linear(dims[-1], num_classes)
        self._init_weights(head_init_scale)

    def _init_weights(self, head_init_scale: float) -> None:
        for _, cell in self.cells_and_names():
            if isinstance(cell, (nn.Conv2d, nn.Dense)):
                cell.weight.set_data(initializer(TruncatedNormal(0.02), cell.weight.shape, cell.weight.dtype))
                if cell.bias is not None:
                    cell.bias.set_data(initializer(Zero(), cell.bias.shape, cell.bias.dtype))
        if not self.features_only:
            self.classifier.weight.set_data(self.classifier.weight * head_init_scale)

    def forward_features(self, x: Tensor) -> Tensor:
        """Last stage feature map [N, dims[-1], H/32, W/32]."""
        return self._nchw(self.feature(x))

    def forward_head(self, x: Tensor) -> Tensor:
        """Logits from a last stage feature map [N, dims[-1], h, w]."""
        return self.classifier(self.head_drop(self.norm(x.mean((2, 3)))))

    def construct(self, x: Tensor):
        if not self.features_only:
            return self.forward_head(self.forward_features(x))
        outputs = ()
        for index, layer in enumerate(self.feature):
            x = layer(x)
            if index % 2 == 1 and index // 2 in self.out_indices:
                outputs += (self._nchw(x),)
        return outputs

    def _nchw(self, x: Tensor) -> Tensor:
        return ops.transpose(x, (0, 3, 1, 2)) if self.channels_last else x

    def flops(self, image_size: int = 224) -> int:
        """Multiply-accumulate count of one forward pass at `image_size` x `image_size` (convs and Dense layers)."""
        side = image_size // 4
        macs = side * side * 16 * 3 * self.dims[0]
        for i, (depth, dim) in enumerate(zip(self.depths, self.dims)):
            if i > 0:
                side //= 2
                macs += side * side * 4 * self.dims[i - 1] * dim
            macs += depth * side * side * (49 * dim + 8 * dim * dim)
        return macs + (0 if self.features_only else self.dims[-1] * self.num_classes)


def pretrained_weights(name: str, pretrained) -> str:
    """The local path of the weights `pretrained` names for model `name`, downloaded into the cache if needed:
    True = the published ImageNet-1k weights (MindCV's model zoo for convnext_tiny/small/base, verified by the hash
    in their names; timm's on the Hugging Face Hub for the other sizes); a text "owner/repository" = that Hub
    repository's `model.safetensors` (another published variant, e.g. "timm/convnextv2_tiny.fcmae_ft_in22k_in1k")."""
    if isinstance(pretrained, str):
        return fetch_from_hub(pretrained)
    cfg = model_cfgs[name]
    return fetch(cfg["url"], PRETRAINED_DIR) if "url" in cfg else fetch_from_hub(cfg["hub"])


def _create(name: str, pretrained, **kwargs) -> ConvNeXt:
    args = {k: v for k, v in model_cfgs[name].items() if k not in ("url", "hub")}
    if args.get("use_grn"):
        args["layer_scale_init_value"] = 0.0
    args.update(kwargs)
    model = ConvNeXt(**args)
    if pretrained:
        load_weights(model, pretrained_weights(name, pretrained))  # the classifier is resized as for any file
    return model


def _register_all() -> None:
    def make(name):
        def constructor(pretrained: bool = False, num_classes: int = 1000, in_channels: int = 3,
                        **kwargs) -> ConvNeXt:
            return _create(name, pretrained, num_classes=num_classes, in_channels=in_channels, **kwargs)
        constructor.__name__ = constructor.__qualname__ = name
        constructor.__doc__ = (f"{name}: depths {model_cfgs[name]['depths']}, dims {model_cfgs[name]['dims']}. "
                               "MindCV's arguments: pretrained (True: the published weights, downloaded into PRETRAINED_DIR; or a Hub "
                               "repository such as 'timm/convnext_tiny.fb_in22k'), "
                               "num_classes, in_channels; other keyword arguments reach ConvNeXt.")
        return constructor

    for name in model_cfgs:
        globals()[name] = register_model(make(name))


_register_all()
