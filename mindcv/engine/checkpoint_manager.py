"""MindCV's `CheckpointManager` for user scripts, kept by the run folder's rules (`RunFolder`)."""
import os
import re
from typing import List, Optional, Tuple, Union

from mindspore import Tensor, nn

from .run_folder import RunFolder

POLICIES = (None, "top_k", "latest_k")
_NAME = re.compile(r"(.+)-(\d+)_(\d+)\.ckpt")


class CheckpointManager:
    """Saves checkpoints and deletes those a policy no longer keeps: MindCV's class, names and arguments, over
    `RunFolder`'s rules.

    The checkpoints are named as MindCV's training names them, `<folder>/<prefix>-<epoch>_<step>.ckpt` (any other
    `save_path` is a ValueError); each is written atomically, and only the checkpoints this toolkit wrote into the
    folder (recorded in its written_files.json) are ever deleted: a folder already holding files of these names
    from elsewhere is refused (a ConfigError naming them). Policies:
      None: every checkpoint is kept;
      "latest_k": the newest `num_ckpt`;
      "top_k": the `num_ckpt` with the best `metric` (higher is better; of equal ones the older stays, as in
        MindCV) and, unlike MindCV, also the newest one, whatever its metric (a resume needs it). The metrics are
        kept in the folder's checkpoint_scores.json.

    Args:
        ckpt_save_policy: None, "top_k" or "latest_k". Default None.
    """

    def __init__(self, ckpt_save_policy: Optional[str] = None):
        if ckpt_save_policy not in POLICIES:
            raise ValueError(f"ckpt_save_policy must be None, 'top_k' or 'latest_k', got {ckpt_save_policy!r}")
        self.ckpt_save_policy = ckpt_save_policy
        self.folder: Optional[RunFolder] = None

    @property
    def ckpoint_filelist(self) -> List[Union[str, Tuple[str, float]]]:
        """The checkpoints kept: with top_k, (path, metric) pairs, best first (those without a metric last);
        otherwise the paths, oldest first."""
        if self.folder is None:
            return []
        paths = self.folder.checkpoints()
        if self.ckpt_save_policy != "top_k":
            return paths
        scores = self.folder.scores
        pairs = [(path, scores.get(os.path.basename(path), float("-inf"))) for path in paths]
        return sorted(pairs, key=lambda pair: -pair[1])

    @property
    def ckpoint_num(self) -> int:
        """How many checkpoints are kept."""
        return len(self.ckpoint_filelist)

    def _folder_for(self, save_path: str, num_ckpt: int) -> Tuple[RunFolder, int, int]:
        match = _NAME.fullmatch(os.path.basename(save_path))
        if not match:
            raise ValueError(f"CheckpointManager saves checkpoints named <prefix>-<epoch>_<step>.ckpt (as MindCV's "
                             f"training names them), got {save_path!r}")
        directory, prefix = os.path.dirname(os.path.abspath(save_path)), match[1]
        if self.folder is None:
            keep = 0 if self.ckpt_save_policy is None else int(num_ckpt)
            if keep < 1 and self.ckpt_save_policy is not None:
                raise ValueError(f"num_ckpt must be >= 1 with ckpt_save_policy {self.ckpt_save_policy!r}, got "
                                 f"{num_ckpt}")
            self.folder = RunFolder(directory, prefix, keep, writes_records=False, keeps_state=True,
                                    policy=self.ckpt_save_policy or "latest_k")
        elif (self.folder.directory, self.folder.model_name) != (directory, prefix):
            raise ValueError(f"this CheckpointManager keeps {self.folder.model_name}-*.ckpt in "
                             f"{self.folder.directory}; use another CheckpointManager for {save_path!r}")
        return self.folder, int(match[2]), int(match[3])

    def save_ckpoint(self, network: nn.Cell, num_ckpt: int = 10, metric=None, save_path: str = ""):
        """Save `network`'s parameters to `save_path`, then delete the checkpoints the policy no longer keeps.

        Args:
            network: the cell to save (a network, or a train step with its optimizer).
            num_ckpt: checkpoints kept by top_k / latest_k. Default 10.
            metric: the checkpoint's score for top_k (a number or a one-element Tensor); required there.
            save_path: `<folder>/<prefix>-<epoch>_<step>.ckpt`; `num_ckpt` and the folder are fixed by the first
                save.

        Returns the kept checkpoints (see `ckpoint_filelist`), or None with the policy None (as MindCV).
        """
        if self.ckpt_save_policy == "top_k" and metric is None:
            raise ValueError("ckpt_save_policy 'top_k' ranks checkpoints by their metric: pass metric=")
        folder, epoch, step = self._folder_for(save_path, num_ckpt)
        score = None
        if metric is not None:
            score = float(metric.asnumpy().reshape(-1)[0]) if isinstance(metric, Tensor) else float(metric)
        # the run folder names an epoch's end <prefix>-<epochs done>_<steps in the epoch>.ckpt
        folder.save_state(network, epoch, 0, step, score=score)
        return None if self.ckpt_save_policy is None else self.ckpoint_filelist
