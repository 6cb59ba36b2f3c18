"""Evaluate a checkpoint: top-1, top-5 and loss on the validation split.

    python validate.py -c configs/convnext/convnext_tiny_ascend.yaml --data_dir /path/to/imagenet \
        --ckpt_path convnext_tiny.ckpt [--json results.json]

Given a checkpoint inside a run folder and no -c, the run's config.yaml is the recipe (the command line still
overrides it), and the validation split must hold the classes of the run's class_names.txt.
A checkpoint that holds EMA weights (train.py with ema True writes them beside the raw ones) is scored with
them, as training scored and ranked it (checkpoint_scores.json); --ema False scores the raw weights. The log
says which weights were evaluated. Mixed precision follows val_amp_level (default: amp_level). The 8-device
recipe runs on one device unless a launcher (msrun) started the process. The checkpoint may be of any kind
`create_model(checkpoint_path=...)` reads: ours or MindCV's `.ckpt` (training state included or not), timm /
official `.safetensors`, official `.pth` (needs torch).
"""
import json
import os
import sys

from mindcv.config.builders import (apply_eval_amp, build_dataset, build_eval_model, build_loader, build_model,
                                    check_same_classes, exit_on_user_error, read_class_names, require_data_dir,
                                    setup_context)
from mindcv.config.schema import parse_config
from mindcv.engine.evaluate import evaluate
from mindcv.errors import ConfigError
from mindcv.io.names import RUN_CLASS_NAMES, beside_checkpoint


def _extra_arguments(parser):
    parser.add_argument("--json", default="", help="also write the results to this JSON file")


@exit_on_user_error
def main(argv=None) -> int:
    config = parse_config(argv, description=__doc__.split("\n")[0], extra=_extra_arguments,
                          recipe_beside_checkpoint=True, script="validate")
    rank, group_size = setup_context(config)
    require_data_dir(config)
    if not config.ckpt_path and not config.pretrained:
        raise ConfigError("nothing to evaluate: pass --ckpt_path CHECKPOINT (or --pretrained True)")
    loader = build_loader(config, build_dataset(config, config.val_split, False, rank, group_size), False,
                          num_classes=config.num_classes)
    if config.ckpt_path:  # the classifier must be the checkpoint's: a fresh one would score by chance
        run_classes = beside_checkpoint(config.ckpt_path, RUN_CLASS_NAMES)
        if os.path.isfile(run_classes):
            check_same_classes(read_class_names(run_classes), loader.class_names, run_classes,
                               f"{config.data_dir}/{config.val_split}")
        network = build_eval_model(config)
    else:
        network = build_model(config, config.num_classes or len(loader.class_names))
    outputs = network.classifier.weight.shape[0]
    if outputs != len(loader.class_names):
        raise ValueError(f"the model has {outputs} outputs but {config.data_dir}/{config.val_split} has "
                         f"{len(loader.class_names)} class folders; is this checkpoint for another dataset?")
    network = apply_eval_amp(network, config)
    metrics = evaluate(network, loader, config.distribute)
    if rank == 0:
        print(f"{config.model} on {config.data_dir}/{config.val_split} ({metrics['num_samples']} images): "
              f"top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  loss {metrics['loss']:.4f}")
        if config.json:
            with open(config.json, "w") as f:
                json.dump(dict(metrics, model=config.model, ckpt_path=config.ckpt_path), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
