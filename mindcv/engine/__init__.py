"""Running a training: the loop (`Trainer`), the run folder and its checkpoints (`RunFolder`), resuming."""
from .run_folder import RunFolder, restore
from .trainer import NonFiniteLossError, StepTotals, StopRequest, Trainer, seed_graph_randomness

__all__ = ["NonFiniteLossError", "RunFolder", "StepTotals", "StopRequest", "Trainer", "restore", "seed_graph_randomness"]
