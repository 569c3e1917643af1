"""Augmentation that looks like the photos people send: thumbnails, re-compression, blur, colour.

Web photos are often ~275×183 thumbnails, JPEG-compressed more than once; the train copy is
224 px and clean. ``PhotoTransform`` makes train photos look like that before the usual
``RandomResizedCrop`` + flip: with probability ``p_downscale`` the shorter side goes down to a
random 100–250 px (never up) and back, then a JPEG re-encode at quality 30–95, a mild
Gaussian blur and colour jitter, each with its own probability.
"""

from __future__ import annotations

import io
import random

import torch
from PIL import Image, ImageFilter
from torchvision.transforms import v2

from model.metadata import Preprocessing
from model.preprocessing import decode_image
from training.lab.transforms import TrainTransform

DOWNSCALE_SIDE = (100, 250)
JPEG_QUALITY = (30, 95)
BLUR_RADIUS = (0.1, 1.2)


def degrade(
    img: Image.Image,
    rng: random.Random,
    p_downscale: float = 0.5,
    p_jpeg: float = 0.5,
    p_blur: float = 0.2,
) -> Image.Image:
    """A thumbnail-like, re-compressed, slightly blurred copy of ``img`` (same size)."""
    size = img.size
    side = rng.randint(*DOWNSCALE_SIDE)
    if rng.random() < p_downscale and side < min(size):
        scale = side / min(size)
        small = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        img = img.resize(small, Image.BILINEAR).resize(size, Image.BICUBIC)
    if rng.random() < p_jpeg:
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=rng.randint(*JPEG_QUALITY))
        img = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if rng.random() < p_blur:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(*BLUR_RADIUS)))
    return img


class PhotoTransform:
    """Decode (as the service does), degrade like a sent photo, then the lab's crop + flip."""

    def __init__(self, spec: Preprocessing, size: int | None = None) -> None:
        self.crop_flip = TrainTransform(spec, size)
        self.jitter = v2.RandomApply([v2.ColorJitter(0.3, 0.3, 0.3, 0.03)], p=0.8)
        self.rng = random.Random()

    def __call__(self, data: bytes) -> torch.Tensor:
        img = decode_image(data, min_side_hint=self.crop_flip.size)
        img = self.jitter(degrade(img, self.rng))
        return self.crop_flip.pipeline(img)
