"""MindCV's `set_seed`: one seed for Python's, NumPy's and MindSpore's random generators."""
import random

import mindspore as ms
import numpy as np


def set_seed(seed: int = 42, rank: int = 0) -> None:
    """Seed Python's `random`, NumPy's global generator and MindSpore's (`mindspore.set_seed`) with
    `seed + rank`, as MindCV's `set_seed` (each data-parallel rank draws differently).

    mindcv's own data pipeline does not read these: its draws come from `create_loader(seed=...)` and the epoch
    and sample (see `mindcv.data.loader`), so they are the same whatever was seeded here.

    Args:
        seed: the seed. Default 42.
        rank: this process's rank, added to the seed; None counts as 0. Default 0.
    """
    seed = int(seed) + int(rank or 0)
    random.seed(seed)
    np.random.seed(seed)
    ms.set_seed(seed)
