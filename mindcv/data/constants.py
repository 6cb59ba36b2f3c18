"""Normalization constants, on the 0-255 pixel scale (as in MindCV).

`create_transforms` takes `mean`/`std` on this scale: a normalized pixel is
`(pixel_0_255 - mean) / std`.
"""

IMAGENET_DEFAULT_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_DEFAULT_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
