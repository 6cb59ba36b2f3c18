"""MindCV's `mindcv.utils.download` (its tutorials import `DownLoad` from here): a face over mindcv.io.download."""
from mindcv.io.download import DownLoad

__all__ = ["DownLoad"]
