"""Writing checkpoints so that a crash or Ctrl-C never leaves a half-written file behind, and reading them
only after checking that MindSpore will read them faithfully."""
import contextlib
import os
from typing import Dict, Union

import mindspore as ms

from mindcv.io.ckpt_check import validate_checkpoint_file
from mindcv.io.files import temporary_path


def user_file_mode() -> int:
    """The mode `open()` gives a new file: 0666 less the process's umask. MindSpore writes checkpoints and MindIR
    files 0400, which another account on a shared server (or a serving account) cannot read."""
    mask = os.umask(0o077)  # read by setting it: meanwhile the strict mask, so no file made then opens wider
    os.umask(mask)
    return 0o666 & ~mask


def save_checkpoint_atomic(save_obj: Union[ms.nn.Cell, list, dict], path: str, append_dict: dict = None) -> str:
    """`mindspore.save_checkpoint` into a temporary file beside `path`, then rename it over `path`.

    The rename is atomic on POSIX file systems, so readers see either the old complete file or the
    new complete file. Whatever stops the save (an error, Ctrl-C), no temporary file is left behind.
    Returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # It keeps the .ckpt suffix: save_checkpoint appends one otherwise.
    temporary = temporary_path(path)
    if not temporary.endswith(".ckpt"):
        temporary += ".ckpt"
    # save_checkpoint itself writes <name>.tmp first, then renames it to <name>.ckpt
    leftovers = (temporary, os.path.splitext(temporary)[0] + ".tmp")
    try:
        ms.save_checkpoint(save_obj, temporary, append_dict=append_dict)
        os.chmod(temporary, user_file_mode())
        os.replace(temporary, path)
    finally:
        for leftover in leftovers:
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)
    return path


def load_checkpoint_checked(path: str) -> Dict[str, Union[ms.Parameter, str]]:
    """`mindspore.load_checkpoint(path)` of a file that `validate_checkpoint_file` accepts.

    A damaged or crafted file (negative dims, data shorter or longer than its dims, a repeated name, not a
    checkpoint at all) is a ValueError naming the file and the tensor, where MindSpore would crash the
    process or load zero-padded weights; a missing file is a FileNotFoundError. Errors MindSpore still
    raises become a one-line ValueError naming the file."""
    validate_checkpoint_file(path)
    try:
        return ms.load_checkpoint(path)
    except (ValueError, RuntimeError, TypeError) as error:
        raise ValueError(f"cannot read {path} as a MindSpore checkpoint: {str(error).splitlines()[0]}") from None
