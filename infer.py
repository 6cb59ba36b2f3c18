"""Predict the classes of images with a trained checkpoint.

    python infer.py --ckpt_path runs/my_run/convnext_tiny_best.ckpt photo.jpg more_photos/
    python infer.py -c my_recipe.yaml --ckpt_path convnext_tiny.ckpt photos/ --topk 3 --output results.json
    python infer.py --model convnext_tiny --ckpt_path convnext_tiny.ckpt --image_path photo.jpg   (MindCV's flags)

Each input is an image file or a folder (searched recursively for .jpg/.jpeg/.png/.webp/.bmp/... files).
For every image one line `PATH: CLASS PROBABILITY, CLASS PROBABILITY, ...` is printed, best first.
Images are preprocessed with the evaluation transform of the recipe (image_resize, crop_pct, interpolation,
mean/std, in_channels): the one given with -c; without -c, the run's config.yaml beside a checkpoint in a run
folder, so that prediction sees images as validation did; else the defaults of the config schema. The
command line overrides the recipe. Grayscale, palette and RGBA images are
converted to the model's in_channels (alpha is dropped). A file that cannot be decoded is reported on
stderr and skipped.

A checkpoint that holds EMA weights is used with them, as validation scored it (--ema False: the raw weights);
the log says which.

Class names, first found wins: --class_names FILE (one name per line, line i = class i), class_names.txt
beside the checkpoint (train.py writes it into the run folder), the class folders of data_dir's train
split, else the class indices.
"""
import json
import os
import sys

import mindspore as ms
import numpy as np

from mindcv.config.builders import (apply_eval_amp, build_eval_model, build_transform, exit_on_user_error,
                                    read_class_names, setup_context)
from mindcv.config.schema import parse_config
from mindcv.data import UnreadableImageError, get_class_names
from mindcv.data.dataset import IMAGE_EXTENSIONS
from mindcv.engine.evaluate import log_softmax
from mindcv.errors import ConfigError
from mindcv.io.files import read_regular_file
from mindcv.io.names import RUN_CLASS_NAMES, beside_checkpoint

MAX_IMAGE_BYTES = 256 << 20  # a larger file is refused unread (a link to /dev/zero would fill the memory)


def _extra_arguments(parser):
    parser.add_argument("inputs", nargs="*", metavar="IMAGE_OR_FOLDER", help="image files and/or folders")
    # MindCV's infer.py names its one image so (and its documentation --image-path)
    parser.add_argument("--image_path", "--image-path", action="append", default=[], metavar="IMAGE_OR_FOLDER",
                        help="an image or folder, as MindCV's infer.py; may be repeated, and adds to the others")
    parser.add_argument("--topk", type=int, default=5, help="classes printed per image (at most the class count)")
    parser.add_argument("--class_names", default="", help="text file with one class name per line")
    parser.add_argument("--output", default="", help="also write the predictions to this JSON file")


def find_images(inputs):
    """Image paths named by `inputs`: files as given, folders searched recursively for image extensions
    (sorted). Raises FileNotFoundError for a missing path and ValueError when nothing is found."""
    paths = []
    for item in inputs:
        if os.path.isfile(item):
            paths.append(item)
        elif os.path.isdir(item):
            found = sorted(os.path.join(folder, name) for folder, _, names in os.walk(item) for name in names
                           if name.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise ValueError(f"no images in folder {item} (looked for {', '.join(IMAGE_EXTENSIONS)})")
            paths.extend(found)
        else:
            raise FileNotFoundError(f"no such image or folder: {item}")
    return paths


def resolve_class_names(config, num_classes: int):
    """(class names, where they came from); see the module docstring for the search order."""
    run_classes = beside_checkpoint(config.ckpt_path, RUN_CLASS_NAMES)
    if config.class_names or os.path.isfile(run_classes):
        source = config.class_names or run_classes
        names = read_class_names(source)
    elif config.data_dir:
        source = os.path.join(config.data_dir, config.train_split)
        names = get_class_names(config.data_dir, config.train_split)
    else:
        return [str(i) for i in range(num_classes)], "class indices (no class names given)"
    if len(names) != num_classes:
        raise ValueError(f"{source} names {len(names)} classes but the checkpoint's classifier has {num_classes}; "
                         "pass the class names the model was trained with (--class_names FILE)")
    return names, source


def predict(network, transform, paths, batch_size: int):
    """Yield (path, probabilities float64 [num_classes]) or (path, error message) for unreadable files.
    Batches are padded to `batch_size` so that graph mode compiles one input shape only."""
    batch, batch_paths = [], []

    def run():
        images = np.stack(batch + [np.zeros_like(batch[0])] * (batch_size - len(batch)))
        probabilities = np.exp(log_softmax(network(ms.Tensor(images)).asnumpy().astype(np.float64)))
        return list(zip(batch_paths, probabilities[:len(batch)]))

    for path in paths:
        try:
            batch.append(transform(read_regular_file(path, MAX_IMAGE_BYTES)))
        except (UnreadableImageError, OSError) as error:
            yield path, f"cannot read image: {error}"
            continue
        batch_paths.append(path)
        if len(batch) == batch_size:
            yield from run()
            batch, batch_paths = [], []
    if batch:
        yield from run()


@exit_on_user_error
def main(argv=None) -> int:
    """Returns 0 when at least one image was classified, 1 when every image was unreadable."""
    config = parse_config(argv, description=__doc__.split("\n")[0], extra=_extra_arguments,
                          recipe_beside_checkpoint=True, script="infer")
    if config.topk < 1:
        raise ConfigError(f"--topk must be at least 1, got {config.topk}")
    if config.batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {config.batch_size}")
    if not config.inputs and not config.image_path:
        raise ConfigError("no images given: pass image files or folders (IMAGE_OR_FOLDER ..., or --image_path IMAGE)")
    paths = find_images(config.inputs + config.image_path)
    config.distribute = False  # a run folder's config.yaml of an msrun run says True; prediction is one process
    setup_context(config)
    network = build_eval_model(config)
    num_classes = network.num_classes
    class_names, names_source = resolve_class_names(config, num_classes)
    transform = build_transform(config, is_training=False)
    topk = min(config.topk, num_classes)

    predictions, skipped = [], []
    network = apply_eval_amp(network, config)
    for path, result in predict(network, transform, paths, min(config.batch_size, len(paths))):
        if isinstance(result, str):
            print(f"skipped {path}: {result}", file=sys.stderr)
            skipped.append({"path": path, "error": result})
            continue
        best = np.argsort(-result)[:topk]
        top = [{"class": class_names[i], "index": int(i), "probability": float(result[i])} for i in best]
        predictions.append({"path": path, "topk": top})
        print(f"{path}: " + ", ".join(f"{t['class']} {t['probability']:.4f}" for t in top))
    print(f"{len(predictions)} image(s) classified, {len(skipped)} skipped; class names from {names_source}",
          file=sys.stderr)
    if config.output:
        with open(config.output, "w") as f:
            json.dump({"model": config.model, "ckpt_path": config.ckpt_path, "image_resize": config.image_resize,
                       "predictions": predictions, "skipped": skipped}, f, indent=2)
    return 0 if predictions else 1


if __name__ == "__main__":
    sys.exit(main())
