"""Normalization constants, on the 0-255 pixel scale (as in MindCV).

`create_transforms` takes `mean`/`std` on this scale: a normalized pixel is
`(pixel_0_255 - mean) / std`.
"""

IMAGENET_DEFAULT_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_DEFAULT_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# MindCV's CIFAR-10/100 transforms (the widely used CIFAR-10 statistics)
CIFAR_DEFAULT_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR_DEFAULT_STD = (0.2023 * 255, 0.1994 * 255, 0.2010 * 255)
MNIST_DEFAULT_MEAN = (0.1307 * 255,)
MNIST_DEFAULT_STD = (0.3081 * 255,)
