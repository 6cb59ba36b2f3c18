"""The PyTorch side of the CPU speed comparison: ConvNeXt training and inference throughput in PyTorch, measured as
`benchmarks/train_step.py` measures mindcv (median of `--steps` steps after a warm-up step; a training step is
forward, cross-entropy, backward and AdamW update). Needs PyTorch (not a mindcv dependency):

    pip install torch   # in a separate environment
    python benchmarks/torch_convnext.py --batch_size 16 --image_size 224 --threads 2

The network is ConvNeXt written out here in PyTorch (the architecture of the paper and of timm's
`convnext_tiny`: 4x4 patchify stem, blocks of depthwise 7x7 conv, LayerNorm, Linear 4C, GELU, Linear C and layer
scale, 2x2 downsampling), so that no model download or timm install is needed. Run it alternately with
train_step.py: this machine's speed drifts between runs.
"""
import argparse
import resource
import statistics
import sys
import time

try:
    import torch
    from torch import nn
except ImportError:
    sys.exit("benchmarks/torch_convnext.py needs PyTorch: pip install torch (in a separate environment)")

DEPTHS, DIMS = (3, 3, 9, 3), (96, 192, 384, 768)


class ChannelsFirstNorm(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.act = nn.GELU()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x):
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


def convnext(num_classes):
    layers = [nn.Conv2d(3, DIMS[0], 4, stride=4), ChannelsFirstNorm(DIMS[0], eps=1e-6)]
    for i, (depth, dim) in enumerate(zip(DEPTHS, DIMS)):
        if i > 0:
            layers += [ChannelsFirstNorm(DIMS[i - 1], eps=1e-6), nn.Conv2d(DIMS[i - 1], dim, 2, stride=2)]
        layers += [Block(dim) for _ in range(depth)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(DIMS[-1], eps=1e-6),
                         nn.Linear(DIMS[-1], num_classes))


def median_seconds(step, steps):
    step()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per phase. Default 5.")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads. Default 2.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = convnext(args.num_classes)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    labels = torch.randint(0, args.num_classes, (args.batch_size,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    loss_fn = nn.CrossEntropyLoss()

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()

    def infer_step():
        with torch.no_grad():
            model(images)

    print(f"PyTorch {torch.__version__} ConvNeXt-T: batch {args.batch_size}, {args.image_size}x{args.image_size}, "
          f"{args.threads} threads, {args.steps} timed steps")
    model.train()
    median, fastest = median_seconds(train_step, args.steps)
    print(f"training: {args.batch_size / median:.2f} images/s (median step {median:.3f} s, min {fastest:.3f} s)")
    model.eval()
    median, fastest = median_seconds(infer_step, args.steps)
    print(f"inference: {args.batch_size / median:.2f} images/s (median pass {median:.3f} s, min {fastest:.3f} s)")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")


if __name__ == "__main__":
    main()
