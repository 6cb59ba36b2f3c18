"""Check this machine's device, CANN and MindSpore with mindcv in about a minute: a table of checks, exit status 0
when none failed, 1 when one did.

    python -m mindcv.selftest                              # the device MindSpore finds (Ascend, GPU, else CPU)
    python -m mindcv.selftest --device_target Ascend --jit_level O2 --amp_level O2   # the Ascend recipes' levels
    msrun --worker_num 2 --local_worker_num 2 --join True python -m mindcv.selftest  # adds the data-parallel rows

The rows:
- ConvNeXt logits: a small ConvNeXt (depths 1,1,2,1, dims 16..128) with weights drawn from a fixed seed, in
  float32 and at --amp_level, against the logits shipped in mindcv/selftest_reference (computed in float32 by
  mindcv's CPU path, which the test suite checks against timm's reference outputs);
- AdamW: three steps of mindcv's AdamW on given gradients against PyTorch's rule, computed in numpy (float64);
- fp16 overflow: a float16 forward pass that really overflows on the device, in its own overflow mode (inf, or
  saturation with the float status register): the update is skipped, the loss scale halves, the next clean step
  is not flagged; the same in the first micro-batch of a gradient accumulation window;
- sink: a data sink of --sink_size steps runs that many steps on the device, also after another network was
  compiled (the validation network at every epoch end); skipped on the CPU, which has no device queue;
- under msrun (2 ranks or more): initial weights equal on all ranks, drop-path masks different on every rank, the
  all-reduced gradient equal to the mean of the ranks' own gradients.
Each rank prints its table (under msrun: in the worker logs); all ranks agree on the data-parallel rows.
"""
import argparse
import json
import os
import sys
import time
import traceback

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from mindcv.config.builders import exit_on_user_error, launched_for_distribution, setup_context
from mindcv.config.schema import parse_config
from mindcv.engine import StepTotals
from mindcv.engine.train_step import NetWithLoss, TrainStep, apply_amp, create_train_step
from mindcv.engine.trainer import SinkFeed
from mindcv.loss import create_loss
from mindcv.models import create_model
from mindcv.models.layers import DropPath, bind_drop_path
from mindcv.ops.switch import fast_cpu_ops_enabled
from mindcv.optim import create_optimizer

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "selftest_reference", "convnext_mini.json")
MINI = dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), num_classes=10)
WEIGHTS_SEED, INPUT_SEED, INPUT_SHAPE = 21, 22, (2, 3, 32, 32)
# logits error as a fraction of the largest reference logit: float32 on any back end (reduction orders differ:
# mindcv's two CPU paths agree to 4e-7), and float16 compute (O1-O3: 0.8e-3 to 1.7e-3 on the CPU)
FLOAT32_TOLERANCE, AMP_TOLERANCE = 1e-4, 1e-2
# of the largest parameter change over the three steps: float32 rounding of parameters near 2 gives a few 1e-6; a
# rule without bias correction gives 3 (tried)
ADAMW_TOLERANCE = 1e-4
GRAD_MEAN_TOLERANCE = 1e-5  # of the largest mean gradient


def seeded_weights(network: nn.Cell, seed: int = WEIGHTS_SEED) -> None:
    """Give `network` weights drawn with numpy from `seed`, the same on every machine and MindSpore version
    (MindSpore's initializers may change): normal with standard deviation 1/sqrt(fan_in) for kernels, 1 + normal
    with standard deviation 0.1 for norm scales and layer scales (names ending in gamma / gamma_), normal with
    standard deviation 0.1 for biases and shifts."""
    rng = np.random.default_rng(seed)
    for parameter in sorted(network.get_parameters(), key=lambda p: p.name):
        shape = parameter.shape
        noise = rng.standard_normal(shape)
        if len(shape) > 1:
            value = noise / np.sqrt(np.prod(shape[1:]))
        elif parameter.name.rsplit(".", 1)[-1].startswith("gamma"):
            value = 1.0 + 0.1 * noise
        else:
            value = 0.1 * noise
        parameter.set_data(Tensor(value.astype(np.float32)))


def mini_convnext_logits(amp_level: str = "O0") -> np.ndarray:
    """Eval-mode logits [2, 10] of the seeded small ConvNeXt on the seeded input, computed at `amp_level`."""
    network = create_model("convnext_atto", **MINI)
    seeded_weights(network)
    network = apply_amp(network, amp_level).set_train(False)
    images = np.random.default_rng(INPUT_SEED).standard_normal(INPUT_SHAPE).astype(np.float32)
    return network(Tensor(images)).asnumpy().astype(np.float64)


def reference_logits() -> np.ndarray:
    with open(REFERENCE) as f:
        return np.array(json.load(f)["logits"], np.float64)


def check_logits(amp_level: str, tolerance: float):
    expected = reference_logits()
    error = np.abs(mini_convnext_logits(amp_level) - expected).max() / np.abs(expected).max()
    return error <= tolerance, f"max error {error:.1e} of max |logit| (tolerance {tolerance:.0e})"


class _ApplyGradients(nn.Cell):
    def __init__(self, optimizer):
        super().__init__()
        self.optimizer = optimizer

    def construct(self, grads):
        return self.optimizer(grads)


def check_adamw():
    """Three steps of create_optimizer("adamw") on a Dense layer, weight decay on the kernel only (PyTorch's
    decoupled decay, bias-corrected moments), against the same rule in float64."""
    lr, betas, eps, weight_decay = 0.05, (0.9, 0.999), 1e-8, 0.05
    rng = np.random.default_rng(5)
    layer = nn.Dense(3, 4)
    start = [rng.standard_normal(p.shape).astype(np.float32) for p in layer.trainable_params()]
    for parameter, value in zip(layer.trainable_params(), start):
        parameter.set_data(Tensor(value))
    optimizer = create_optimizer(layer, "adamw", lr=lr, weight_decay=weight_decay, betas=betas, eps=eps,
                                 weight_decay_filter="norm_and_bias")
    apply_gradients = _ApplyGradients(optimizer)
    grads = [[rng.standard_normal(v.shape).astype(np.float32) * 10.0 ** -k for v in start] for k in range(3)]
    expected = [v.astype(np.float64) for v in start]
    moments = [(np.zeros_like(v), np.zeros_like(v)) for v in expected]
    for step, step_grads in enumerate(grads, 1):
        apply_gradients(ms.mutable(tuple(Tensor(g) for g in step_grads)))  # one compile for the three steps
        for i, grad in enumerate(step_grads):
            m, v = moments[i]
            m, v = betas[0] * m + (1 - betas[0]) * grad, betas[1] * v + (1 - betas[1]) * grad.astype(np.float64) ** 2
            moments[i] = m, v
            decay = weight_decay if expected[i].ndim > 1 else 0.0
            expected[i] = expected[i] * (1 - lr * decay) - lr * (m / (1 - betas[0] ** step)) / (
                np.sqrt(v / (1 - betas[1] ** step)) + eps)
    ours = [p.asnumpy().astype(np.float64) for p in layer.trainable_params()]
    change = max(np.abs(e - s).max() for e, s in zip(expected, start))
    error = max(np.abs(o - e).max() for o, e in zip(ours, expected)) / change
    return error <= ADAMW_TOLERANCE, f"max error {error:.1e} of the largest change (tolerance {ADAMW_TOLERANCE:.0e})"


def _overflow_step(accumulation_steps: int) -> TrainStep:
    """A Dense layer computing in float16 whose forward overflows on OVERFLOWING (4 x 100 x 1000 > 65504)."""
    layer = nn.Dense(4, 3, weight_init=Tensor(np.full((3, 4), 100.0, np.float32)), bias_init="zeros")
    optimizer = create_optimizer(layer, "adamw", lr=1e-3)
    return create_train_step(layer, create_loss("ce"), optimizer, amp_level="O3", loss_scale_type="dynamic",
                             loss_scale=1024.0, drop_overflow_update=True,
                             gradient_accumulation_steps=accumulation_steps)


OVERFLOWING = np.full((2, 4), 1000.0, np.float32)
CLEAN = np.random.default_rng(6).standard_normal((2, 4)).astype(np.float32) * 0.01
LABELS = np.array([0, 1], np.int32)


def check_fp16_overflow(accumulation_steps: int):
    """A window whose first micro-batch overflows in float16 is skipped and halves the scale; the clean window after
    it updates without an overflow flag (the device's overflow state was cleared)."""
    train_step = _overflow_step(accumulation_steps)
    weights = lambda: [p.asnumpy().copy() for p in train_step.network.trainable_params()]  # noqa: E731
    start = weights()
    window = [OVERFLOWING] + [CLEAN] * (accumulation_steps - 1)
    flags = [bool(train_step(Tensor(x), Tensor(LABELS))[1].asnumpy()) for x in window]
    scale = float(train_step.loss_scale.asnumpy())
    skipped = all(np.array_equal(a, b) for a, b in zip(start, weights()))
    if not (flags[0] and skipped and scale == 512.0):
        return False, (f"overflow flagged {flags[0]}, update skipped {skipped}, loss scale 1024 -> {scale:g} "
                       "(expected True, True, 512)")
    clean_flags = [bool(train_step(Tensor(CLEAN), Tensor(LABELS))[1].asnumpy()) for _ in range(accumulation_steps)]
    updated = not all(np.array_equal(a, b) for a, b in zip(start, weights()))
    if any(clean_flags) or not updated:
        return False, f"the clean window after it: flagged {clean_flags}, updated {updated} (expected none, True)"
    return True, "skipped, loss scale 1024 -> 512; the next clean window updates, not flagged"


def check_sink(jit_level: str, sink_size: int, data_sink=None):
    """Two sinks of `sink_size` steps, another network compiled between them; SinkFeed raises when a sink ran
    another number of steps than asked. `data_sink` replaces mindspore.data_sink (the suite runs this row on the
    CPU with a stand-in)."""
    if data_sink is None and ms.get_context("device_target") == "CPU":
        return None, "no device queue on the CPU (host-fed runs step once per batch)"
    layer = nn.Dense(4, 3)
    train_step = create_train_step(layer, create_loss("ce"), create_optimizer(layer, "adamw", lr=1e-3))
    rng = np.random.default_rng(7)
    samples = 4 * sink_size * 2
    dataset = ds.NumpySlicesDataset({"image": rng.standard_normal((samples, 4)).astype(np.float32),
                                     "label": rng.integers(0, 3, samples).astype(np.int32)}, shuffle=False)
    feed = SinkFeed(StepTotals(train_step), dataset.batch(2, drop_remainder=True), sink_size, jit_level, data_sink)
    try:
        feed.run(sink_size)
        nn.Dense(4, 2).set_train(False)(Tensor(np.zeros((1, 4), np.float32)))  # a compile between two sinks
        feed.run(sink_size)
    finally:
        feed.close()
    return True, f"2 sinks of {sink_size} steps ran {2 * sink_size} (jit_level {jit_level})"


def _gathered(values: np.ndarray) -> np.ndarray:
    """`values` of every rank, stacked [ranks, ...] (float32)."""
    flat = Tensor(values.astype(np.float32).reshape(1, -1))
    return ops.AllGather()(flat).asnumpy().reshape((-1,) + values.shape)


def check_initial_weights(seed: int):
    """The model as train.py builds it (MindSpore's initializers after set_seed) holds the same weights on every
    rank; compared through per-parameter sums and sums of squares."""
    ms.set_seed(seed)
    network = create_model("convnext_atto", **MINI)
    values = [p.asnumpy().astype(np.float64) for p in network.get_parameters()]
    digest = np.array([[v.sum(), (v * v).sum()] for v in values])
    every_rank = _gathered(digest)
    same = bool((every_rank == every_rank[0]).all())
    return same, f"{len(values)} parameters on {len(every_rank)} ranks " + ("equal" if same else "DIFFER")


class _SampleScale(nn.Cell):
    def __init__(self):
        super().__init__()
        self.drop_path = DropPath(0.5)

    def construct(self, x):
        return self.drop_path.sample_scale(x)


def check_drop_path_masks(seed: int, rank: int):
    """Drop-path masks drawn in graph mode as train.py draws them (`bind_drop_path`: from seed, rank and the train
    step's call count): no two ranks alike, and the same masks again at the same count (as after a resume)."""
    sample_scale = _SampleScale().set_train(True)
    calls = Parameter(Tensor(7, ms.int32), name="selftest.calls", requires_grad=False)
    bind_drop_path(sample_scale, calls, seed, rank)
    batch = Tensor(np.zeros((64, 1), np.float32))
    masks, again = sample_scale(batch).asnumpy(), sample_scale(batch).asnumpy()
    every_rank = _gathered(masks)
    alike = [(a, b) for a in range(len(every_rank)) for b in range(a) if np.array_equal(every_rank[a], every_rank[b])]
    if alike or not np.array_equal(masks, again):
        return False, (f"ranks alike: {alike or 'none'}; the same count drew the same masks again: "
                       f"{np.array_equal(masks, again)} (expected none, True)")
    return True, f"{len(every_rank)} ranks, 64 samples each: all masks differ, the same again at the same count"


def check_gradient_mean(rank: int):
    """A distributed train step (SGD, lr 1) moves the weights by minus the mean of the ranks' own gradients; each
    rank computes its gradient on its own batch without communication."""
    rng = np.random.default_rng(100 + rank)
    images, labels = rng.standard_normal((4, 4)).astype(np.float32), rng.integers(0, 3, 4).astype(np.int32)
    layer = nn.Dense(4, 3)
    seeded_weights(layer)
    start = [p.asnumpy().astype(np.float64) for p in layer.trainable_params()]
    own = ms.grad(NetWithLoss(layer, create_loss("ce")), grad_position=None,
                  weights=layer.trainable_params())(Tensor(images), Tensor(labels))
    expected = [_gathered(g.asnumpy()).astype(np.float64).mean(axis=0) for g in own]
    train_step = create_train_step(layer, create_loss("ce"), create_optimizer(layer, "sgd", lr=1.0, momentum=0.0),
                                   distribute=True)
    train_step(Tensor(images), Tensor(labels))
    moved = [s - p.asnumpy() for s, p in zip(start, layer.trainable_params())]
    error = max(np.abs(m - e).max() for m, e in zip(moved, expected)) / max(np.abs(e).max() for e in expected)
    return error <= GRAD_MEAN_TOLERANCE, (f"max error {error:.1e} of the largest mean gradient "
                                          f"(tolerance {GRAD_MEAN_TOLERANCE:.0e})")


def run_checks(checks):
    """Run (name, function) pairs; a check that raises fails with its error's first line. Returns the rows
    (name, "PASS" / "FAIL" / "SKIP", detail)."""
    rows = []
    for name, check in checks:
        try:
            passed, detail = check()
        except Exception as error:  # pylint: disable=broad-except
            if os.environ.get("MINDCV_DEBUG"):
                traceback.print_exc()
            passed, detail = False, f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"
        rows.append((name, "SKIP" if passed is None else "PASS" if passed else "FAIL", detail))
    return rows


@exit_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device_target", default="auto", help="Ascend, GPU, CPU or auto (default)")
    parser.add_argument("--jit_level", default="O2", choices=("O0", "O1", "O2"),
                        help="compilation level (default O2, the Ascend recipes'; O2 runs as O0 off Ascend)")
    parser.add_argument("--amp_level", default="O2", choices=("O1", "O2", "O3"),
                        help="mixed precision of the second logits row (default O2, the Ascend recipes')")
    parser.add_argument("--sink_size", type=int, default=4, help="steps of each sink in the sink row (default 4)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the data-parallel rows (default 42)")
    args = parser.parse_args(argv)
    if args.sink_size < 1:
        parser.error(f"--sink_size must be at least 1, got {args.sink_size}")
    config = parse_config(["--device_target", args.device_target, "--jit_level", args.jit_level,
                           "--distribute", str(launched_for_distribution())])
    rank, group_size = setup_context(config)
    started = time.time()
    checks = [("ConvNeXt logits, float32", lambda: check_logits("O0", FLOAT32_TOLERANCE)),
              (f"ConvNeXt logits, amp_level {args.amp_level}", lambda: check_logits(args.amp_level, AMP_TOLERANCE)),
              ("AdamW, 3 steps vs PyTorch's rule", check_adamw),
              ("fp16 overflow: skipped, scale halves", lambda: check_fp16_overflow(1)),
              ("fp16 overflow in accumulation window", lambda: check_fp16_overflow(2)),
              (f"sink of {args.sink_size} steps runs {args.sink_size}", lambda: check_sink(config.jit_level,
                                                                                            args.sink_size))]
    if group_size > 1:
        checks += [("initial weights equal on all ranks", lambda: check_initial_weights(args.seed)),
                   ("drop-path masks differ across ranks", lambda: check_drop_path_masks(args.seed, rank)),
                   ("gradient mean over ranks", lambda: check_gradient_mean(rank))]
    rows = run_checks(checks)
    kernels = "mindcv CPU kernels" if fast_cpu_ops_enabled() else "stock operators"
    print(f"mindcv self-test: MindSpore {ms.__version__}, device {ms.get_context('device_target')}, "
          f"jit_level {config.jit_level}, {kernels}" + (f", rank {rank} of {group_size}" if group_size > 1 else ""))
    width = max(len(name) for name, _, _ in rows)
    for name, result, detail in rows:
        print(f"{name:<{width}}  {result}  {detail}")
    counts = {result: sum(r == result for _, r, _ in rows) for result in ("PASS", "FAIL", "SKIP")}
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped in "
          f"{time.time() - started:.1f} s")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
