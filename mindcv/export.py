"""Export a checkpoint to MindIR (MindSpore Lite, serving) or ONNX.

    python -m mindcv.export --ckpt_path runs/my_run/convnext_tiny_best.ckpt --format MINDIR
    python -m mindcv.export -c my_recipe.yaml --ckpt_path convnext_tiny.ckpt \
        --format MINDIR --image_size 224 --batch_size 1 --output convnext_tiny.mindir

Without -c, a checkpoint inside a run folder takes its recipe from the run's config.yaml (the command line
overrides it).

The exported graph takes one float32 input [batch_size, in_channels, image_size, image_size], images
already transformed as for evaluation (resized, centre-cropped, normalized with mean/std), and returns the
logits [batch_size, num_classes]; apply softmax for probabilities. Both sizes are fixed at export.

Options beside the recipe keys (-c RECIPE and --model, --depths, --dims, --in_channels, ... as in train.py):
    --format       MINDIR (default) or ONNX.
    --image_size   input height and width, pixels (default: the recipe's image_resize, 224 without one).
    --batch_size   input batch (default 1 here, whatever the recipe's training batch).
    --num_classes  classifier outputs (default: the checkpoint's; must agree with it when given).
    --output       file to write (default: <model>.mindir or <model>.onnx beside the checkpoint); the
                   extension is added when missing. The file gets the user's umask (MindSpore writes 0400).
ONNX is written where MindSpore can express every operator of the network in ONNX; when it cannot, the
command says which operator is missing and exits with status 1. With MindSpore 2.10 this is the case for
ConvNeXt: its exact GELU is computed with Erf, for which MindSpore's ONNX exporter has no converter.
The exported graph always uses MindSpore's stock operators, never the CPU kernels of `mindcv.ops`.
"""
import os
import sys

import mindspore as ms
import numpy as np

from mindcv.config.builders import build_eval_model, exit_on_user_error, setup_context
from mindcv.config.schema import parse_config
from mindcv.errors import ConfigError
from mindcv.io.checkpoint import user_file_mode
from mindcv.io.download import is_url
from mindcv.ops import fast_cpu_ops

EXTENSIONS = {"MINDIR": ".mindir", "ONNX": ".onnx"}


class ExportNotSupportedError(RuntimeError):
    """MindSpore cannot write this network in the requested format."""


def _extra_arguments(parser):
    parser.add_argument("--format", default="MINDIR", type=str.upper, choices=sorted(EXTENSIONS),
                        help="file format")
    parser.add_argument("--image_size", type=int, default=None,
                        help="input height and width, pixels (default: image_resize)")
    parser.add_argument("--output", default="", help="output file (default: <model>.<format> beside the checkpoint)")


def export_model(network, file_format: str, output: str, batch_size: int, in_channels: int,
                 image_size: int) -> str:
    """Write `network` (in eval mode, built with the fast CPU kernels switched off) as `file_format` ("MINDIR" or "ONNX") with a
    float32 input [batch_size, in_channels, image_size, image_size] (pixels). Returns the path written,
    `output` with the format's extension added when missing. Raises ExportNotSupportedError when MindSpore
    cannot express the network in that format."""
    extension = EXTENSIONS[file_format]
    # MindSpore writes the lower-case extension whatever the name says
    path = output[:-len(extension)] + extension if output.lower().endswith(extension) else output + extension
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    dummy = ms.Tensor(np.zeros((batch_size, in_channels, image_size, image_size), np.float32))
    if file_format == "MINDIR":
        # MindSpore appends the extension itself
        ms.export(network, dummy, file_name=path[:-len(EXTENSIONS["MINDIR"])], file_format="MINDIR")
        os.chmod(path, user_file_mode())
        return path
    from mindspore import onnx
    try:
        onnx.export(network, dummy, file_name=path)
    except RuntimeError as error:
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise ExportNotSupportedError(f"MindSpore {ms.__version__} cannot export {type(network).__name__} to "
                                      f"ONNX: {reason} Export MINDIR instead.") from None
    if not os.path.isfile(path):
        raise ExportNotSupportedError(f"MindSpore reported no error but wrote no ONNX file at {path}")
    os.chmod(path, user_file_mode())
    return path


@exit_on_user_error
def main(argv=None) -> int:
    config = parse_config(argv, description=__doc__.split("\n")[0], extra=_extra_arguments,
                          recipe_beside_checkpoint=True, script="export")
    # The training batch of a recipe is not the batch of a deployed model: export one image unless told.
    given = sys.argv[1:] if argv is None else argv
    if not any(arg == "--batch_size" or arg.startswith("--batch_size=") for arg in given):
        config.batch_size = 1
    image_size = config.image_size or config.image_resize
    if image_size < 32 or config.batch_size < 1:
        raise ConfigError(f"image_size must be at least 32 pixels (the network downsamples 32x) and batch_size "
                          f"at least 1; got {image_size} and {config.batch_size}")
    config.distribute = False  # a run folder's config.yaml of an msrun run says True; export is one process
    setup_context(config)
    # MindSpore Lite, serving and ONNX cannot run mindcv's CPU kernels (ops.Custom over a local library)
    with fast_cpu_ops(False):
        network = build_eval_model(config)
    # beside the checkpoint, as the run folder's other files (the current folder is the repository in the README);
    # weights fetched from a URL: the current folder
    folder = "" if is_url(config.ckpt_path) else os.path.dirname(config.ckpt_path)
    output = config.output or os.path.join(folder, f"{config.model}{EXTENSIONS[config.format]}")
    try:
        path = export_model(network, config.format, output, config.batch_size, config.in_channels, image_size)
    except ExportNotSupportedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}: input float32 [{config.batch_size}, {config.in_channels}, {image_size}, {image_size}], "
          f"output logits [{config.batch_size}, {network.num_classes}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
