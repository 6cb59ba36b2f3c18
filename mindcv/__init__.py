"""mindcv: config-driven image classification on MindSpore, built around ConvNeXt."""
__version__ = "0.1.0"
