"""Batch-level mixup / cutmix with soft targets (timm's "batch" mode semantics)."""

import numpy as np

from . import kernels


def one_hot_smoothed(labels, num_classes, smoothing):
    """[B] int labels -> [B, num_classes] float32 with `smoothing` spread uniformly."""
    off = smoothing / num_classes
    targets = np.full((len(labels), num_classes), off, np.float32)
    targets[np.arange(len(labels)), labels] = 1.0 - smoothing + off
    return targets


def cutmix_box(height, width, lam, rng):
    """Box (top, bottom, left, right) covering about 1 - lam of the image, centre uniform, clipped."""
    cut_ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut_ratio), int(width * cut_ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
    left, right = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
    return int(top), int(bottom), int(left), int(right)


class MixupCutmix:
    """Mix every image i of a batch with image B-1-i (the batch reversed).

    With probability `prob` a batch is mixed: by cutmix (lam ~ Beta(cutmix, cutmix))
    when only cutmix is on, or with probability `switch_prob` when both are on;
    otherwise by mixup (lam ~ Beta(mixup, mixup)). Cutmix pastes a box of the
    partner image and sets lam to the exact uncovered fraction. Targets are
    `lam * onehot(y) + (1 - lam) * onehot(y_partner)`, with label smoothing folded
    into the one-hots; unmixed batches get the smoothed one-hots.
    """

    def __init__(self, mixup=0.0, cutmix=0.0, prob=1.0, switch_prob=0.5, label_smoothing=0.0, num_classes=1000):
        self.mixup, self.cutmix = mixup, cutmix
        self.prob, self.switch_prob = prob, switch_prob
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes

    def __call__(self, images, labels, rng):
        """images: float32 [B, C, H, W] (mixed in place), or a list of B [C, H, W] arrays; labels int [B].

        Returns (float32 [B, C, H, W], float32 [B, num_classes]).
        """
        lam = 1.0
        batch = np.ascontiguousarray(images, np.float32) if isinstance(images, np.ndarray) else np.stack(images)
        if rng.random() < self.prob:
            use_cutmix = self.cutmix > 0 and (self.mixup <= 0 or rng.random() < self.switch_prob)
            if use_cutmix:
                lam = rng.beta(self.cutmix, self.cutmix)
                height, width = batch.shape[2:]
                top, bottom, left, right = cutmix_box(height, width, lam, rng)
                batch[:, :, top:bottom, left:right] = batch[::-1, :, top:bottom, left:right].copy()
                lam = 1.0 - (bottom - top) * (right - left) / (height * width)
            else:
                lam = np.float32(rng.beta(self.mixup, self.mixup))
                if kernels.library() is not None:
                    kernels.mix_reversed(batch, lam)
                else:
                    partners = batch[::-1].copy()
                    batch *= lam
                    batch += (1.0 - lam) * partners
        targets = one_hot_smoothed(labels, self.num_classes, self.label_smoothing)
        targets = lam * targets + (1.0 - lam) * targets[::-1]
        return batch, targets.astype(np.float32)
