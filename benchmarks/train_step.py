"""Training and inference throughput of a mindcv model on random data.

Example (the README's figures):
    python benchmarks/train_step.py --model convnext_tiny --batch_size 16 --image_size 224 --mode 0 --amp_level O0

Prints the first training step's time (graph compilation included), the steady-state training
throughput (median of `--steps` steps after one warm-up step; a full step is forward, loss, backward and
AdamW update), the inference throughput (median of `--steps` forward passes after a warm-up pass) and
the process's peak resident memory.
"""
import argparse
import resource
import statistics
import time

import numpy as np
import mindspore as ms
from mindspore import nn

from mindcv.loss import create_loss
from mindcv.models import create_model
from mindcv.models.convnext import use_eval_kernels
from mindcv.models.layers import bind_drop_path
from mindcv.optim import create_optimizer
from mindcv.engine.train_step import create_train_step


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="convnext_tiny", help="registered model name. Default convnext_tiny.")
    parser.add_argument("--batch_size", type=int, default=16, help="images per step. Default 16.")
    parser.add_argument("--image_size", type=int, default=224, help="input side in pixels. Default 224.")
    parser.add_argument("--num_classes", type=int, default=1000, help="classifier outputs. Default 1000.")
    parser.add_argument("--mode", type=int, default=0, help="0: graph mode, 1: PyNative. Default 0.")
    parser.add_argument("--amp_level", default="O0", help="mindspore.amp level O0/O1/O2/O3. Default O0 (fp32).")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after warm-up) per phase. Default 5.")
    parser.add_argument("--step_impl", choices=("mindcv", "stock"), default="mindcv",
                        help="training step: mindcv's create_train_step/create_optimizer/create_loss (as train.py), "
                             "or MindSpore's nn.TrainOneStepCell + nn.AdamWeightDecay + nn.CrossEntropyLoss, "
                             "which compiles faster. Default mindcv.")
    parser.add_argument("--drop_path_rate", type=float, default=0.0, help="stochastic depth rate. Default 0.")
    parser.add_argument("--drop_path_draw", choices=("counter", "generator"), default="counter",
                        help="drop-path masks from the train step's counter (bind_drop_path, as train.py) or from "
                             "MindSpore's random generator. Default counter.")
    parser.add_argument("--skip_train", action="store_true", help="measure inference only.")
    parser.add_argument("--skip_infer", action="store_true", help="measure training only.")
    return parser.parse_args(argv)


def build_train_step(net: nn.Cell, amp_level: str, step_impl: str) -> nn.Cell:
    """Forward, cross-entropy loss, backward and AdamW update (lr 1e-3, weight decay 0.05) in one cell,
    built with the same factories as train.py, or from MindSpore's stock cells (`step_impl` "stock")."""
    if step_impl == "stock":
        if amp_level != "O0":
            net = ms.amp.auto_mixed_precision(net, amp_level)
        optimizer = nn.AdamWeightDecay(net.trainable_params(), learning_rate=1e-3, weight_decay=0.05)
        return nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()), optimizer)
    optimizer = create_optimizer(net, "adamw", lr=1e-3, weight_decay=0.05)
    return create_train_step(net, create_loss("ce"), optimizer, amp_level=amp_level)


def timed(fn, steps: int):
    """Seconds of the first call and of each of `steps` further calls. Reading the (first) output back
    with asnumpy waits for the computation to finish."""
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        out = fn()
        (out[0] if isinstance(out, tuple) else out).asnumpy()
        times.append(time.perf_counter() - start)
    return times[0], times[1:]


def main(argv=None) -> dict:
    args = parse_args(argv)
    ms.set_context(mode=args.mode)
    np.random.seed(0)
    images = ms.Tensor(np.random.randn(args.batch_size, 3, args.image_size, args.image_size).astype(np.float32))
    labels = ms.Tensor(np.random.randint(0, args.num_classes, args.batch_size).astype(np.int32))
    # as the scripts build it (build_model): on the CPU, eval mode runs each ConvNeXt block as two kernels
    net = use_eval_kernels(create_model(args.model, num_classes=args.num_classes, drop_path_rate=args.drop_path_rate))
    print(f"{args.model}: batch {args.batch_size}, {args.image_size}x{args.image_size}, mode {args.mode}, "
          f"amp {args.amp_level}, {args.step_impl} step, drop path {args.drop_path_rate} ({args.drop_path_draw}), "
          f"{args.steps} timed steps, MindSpore {ms.__version__}")
    result = {}
    if not args.skip_train:
        step = build_train_step(net, args.amp_level, args.step_impl)
        if args.drop_path_draw == "counter" and args.step_impl == "mindcv":
            bind_drop_path(net, step.current_iterator_step, seed=0)
        step.set_train(True)
        first, times = timed(lambda: step(images, labels), args.steps)
        result["compile_s"] = first
        result["train_ips"] = args.batch_size / statistics.median(times)
        print(f"first training step (compile + run): {first:.1f} s")
        print(f"training: {result['train_ips']:.2f} images/s (median step {statistics.median(times):.3f} s, "
              f"min {min(times):.3f} s)")
    if not args.skip_infer:
        net.set_train(False)
        first, times = timed(lambda: net(images), args.steps)
        result["infer_compile_s"] = first
        result["infer_ips"] = args.batch_size / statistics.median(times)
        print(f"first inference pass (compile + run): {first:.1f} s")
        print(f"inference: {result['infer_ips']:.2f} images/s (median pass {statistics.median(times):.3f} s, "
              f"min {min(times):.3f} s)")
    # ru_maxrss is in KiB on Linux.
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {result['peak_rss_mib']:.0f} MiB")
    return result


if __name__ == "__main__":
    main()
