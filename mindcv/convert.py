"""Convert ConvNeXt weights from timm, Hugging Face or the official code into a MindSpore checkpoint.

    python -m mindcv.convert SRC DST.ckpt --model convnext_tiny [--num_classes N] [--depths 3 3 9 3 --dims 96 192 384 768]

SRC may be `.safetensors`, `.pth` (needs torch) or `.ckpt`. `num_classes` defaults to the size of the
classifier in SRC. Prints every name it mapped.
"""
import argparse
import sys

from mindspore import Tensor

from mindcv.config.builders import exit_on_user_error
from mindcv.io.checkpoint import save_checkpoint_atomic
from mindcv.models import create_model, is_model
from mindcv.models.weights import match_state, read_state, to_mindcv_names


def convert(src: str, dst: str, model_name: str, num_classes: int = None, quiet: bool = False, **model_kwargs) -> None:
    """Read `src`, rename into our naming, check it against `model_name` (built with `model_kwargs`,
    e.g. depths/dims of a custom size) and write `dst` atomically."""
    renamed, mapping = to_mindcv_names(read_state(src))
    if num_classes is None:
        num_classes = renamed["classifier.weight"].shape[0] if "classifier.weight" in renamed else 1000
    model = create_model(model_name, num_classes=num_classes, **model_kwargs)
    fitted = match_state(model, renamed, source=src)
    save_checkpoint_atomic([{"name": name, "data": Tensor(value)} for name, value in fitted.items()], dst)
    if not quiet:
        for source_name, our_name in mapping:
            print(f"{source_name:55s} -> {our_name}")
    print(f"wrote {dst}: {len(fitted)} tensors for {model_name} with {num_classes} classes")


@exit_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mindcv.convert", description=__doc__.split("\n")[1])
    parser.add_argument("src", help="source weights: .safetensors, .pth or .ckpt")
    parser.add_argument("dst", help="MindSpore checkpoint to write (.ckpt)")
    parser.add_argument("--model", required=True, help="registered model name, e.g. convnext_tiny")
    parser.add_argument("--num_classes", type=int, default=None, help="classifier size (default: from SRC)")
    parser.add_argument("--depths", type=int, nargs=4, default=None, help="custom blocks per stage")
    parser.add_argument("--dims", type=int, nargs=4, default=None, help="custom channels per stage")
    parser.add_argument("--quiet", action="store_true", help="do not print the name mapping")
    args = parser.parse_args(argv)
    if not is_model(args.model):
        parser.error(f"unknown model '{args.model}'; see mindcv.models.list_models()")
    custom = {k: tuple(v) for k, v in (("depths", args.depths), ("dims", args.dims)) if v}
    convert(args.src, args.dst, args.model, args.num_classes, args.quiet, **custom)
    return 0


if __name__ == "__main__":
    sys.exit(main())
