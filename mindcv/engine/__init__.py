"""Running a training: the loop (`Trainer`), the run folder and its checkpoints (`RunFolder`), resuming."""
from .run_folder import RunFolder, restore
from .trainer import NonFiniteLossError, StepTotals, StopRequest, Trainer

__all__ = ["NonFiniteLossError", "RunFolder", "StepTotals", "StopRequest", "Trainer", "restore"]
