"""Writing checkpoints so that a crash or Ctrl-C never leaves a half-written file behind."""
import os
from typing import Union

import mindspore as ms


def save_checkpoint_atomic(save_obj: Union[ms.nn.Cell, list, dict], path: str, append_dict: dict = None) -> str:
    """`mindspore.save_checkpoint` into a temporary file beside `path`, then rename it over `path`.

    The rename is atomic on POSIX file systems, so readers see either the old complete file or the
    new complete file. Returns `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # The temporary name keeps the .ckpt suffix: save_checkpoint appends one otherwise.
    temporary = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    if not temporary.endswith(".ckpt"):
        temporary += ".ckpt"
    try:
        ms.save_checkpoint(save_obj, temporary, append_dict=append_dict)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path
