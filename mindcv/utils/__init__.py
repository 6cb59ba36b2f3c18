"""MindCV's `mindcv.utils` names for user scripts: a face over their homes (mindcv.engine, mindcv.io), defining
nothing. A MindCV name that mindcv does not offer raises a one-line error saying what to use instead."""
from mindcv.engine.checkpoint_manager import CheckpointManager
from mindcv.engine.mindspore_model import AllReduceSum, create_trainer, get_metrics
from mindcv.engine.seed import set_seed
from mindcv.io.download import DownLoad

__all__ = ["AllReduceSum", "CheckpointManager", "DownLoad", "create_trainer", "get_metrics", "set_seed"]

_INSTEAD = {
    "StateMonitor": "train.py (each epoch it evaluates, keeps checkpoints by ckpt_save_policy and logs), or under "
                    "mindspore.Model its LossMonitor, TimeMonitor and ModelCheckpoint callbacks with model.eval",
    "ValCallback": "model.eval(loader, dataset_sink_mode=False) between model.train calls, or train.py's "
                   "val_while_train",
    "TrainStep": "mindcv.engine.train_step.create_train_step",
    "require_customized_train_step": "create_trainer, which says when a setting needs train.py",
    "auto_mixed_precision": "mindcv.engine.train_step.apply_amp (it returns the network to use)",
    "set_logger": "Python's logging (train.py logs to the console and its run folder)",
}


def __getattr__(name: str):
    if name in _INSTEAD:
        raise NotImplementedError(f"mindcv.utils.{name} (MindCV's) is not offered here; use {_INSTEAD[name]}")
    raise AttributeError(f"module 'mindcv.utils' has no attribute '{name}'")
