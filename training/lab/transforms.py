"""Image transforms: random augmentation for training, the service's own code for evaluation.

All take the raw file bytes (what ``ImageDataset`` reads). Evaluation goes through
``model.preprocessing.preprocess_bytes`` with the artifact's ``Preprocessing``, so what the lab
measures is what the service computes; there is no second resize implementation.
"""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch
from torchvision.transforms import InterpolationMode, v2

from model.metadata import Preprocessing
from model.preprocessing import decode_image, preprocess_bytes

_INTERPOLATION = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "lanczos": InterpolationMode.LANCZOS,
}


class TrainTransform:
    """Decode (as the service does), RandomResizedCrop + horizontal flip, normalise."""

    def __init__(
        self,
        spec: Preprocessing,
        size: int | None = None,
        scale: tuple[float, float] = (0.35, 1.0),
    ) -> None:
        self.size = size or spec.input_size
        interpolation = _INTERPOLATION.get(spec.interpolation, InterpolationMode.BICUBIC)
        if interpolation is InterpolationMode.LANCZOS:  # not supported on tensors
            interpolation = InterpolationMode.BICUBIC
        self.pipeline = v2.Compose(
            [
                v2.ToImage(),
                v2.RandomResizedCrop(self.size, scale=scale, interpolation=interpolation),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(spec.mean), list(spec.std)),
            ]
        )

    def __call__(self, data: bytes) -> torch.Tensor:
        return self.pipeline(decode_image(data, min_side_hint=self.size))


class EvalTransform:
    """The service preprocessing (decode, resize, centre crop, normalise); optional h-flip."""

    def __init__(self, spec: Preprocessing, flip: bool = False) -> None:
        self.spec = spec
        self.flip = flip

    def __call__(self, data: bytes) -> torch.Tensor:
        array = preprocess_bytes(data, self.spec)
        if self.flip:
            array = np.ascontiguousarray(array[:, :, ::-1])
        return torch.from_numpy(array)


class EvalViews:
    """Several deterministic views of one image stacked (V×3×S×S): plain and flipped."""

    def __init__(self, spec: Preprocessing, flips: tuple[bool, ...] = (False, True)) -> None:
        self.spec = spec
        self.flips = flips

    def __call__(self, data: bytes) -> torch.Tensor:
        array = preprocess_bytes(data, self.spec)
        views = [np.ascontiguousarray(array[:, :, ::-1]) if f else array for f in self.flips]
        return torch.from_numpy(np.stack(views))


class PairViews:
    """Two lightly BYOL views (Barlow Twins' augmentations), reproducible per photo.

    The random state is seeded from ``seed`` and the photo's bytes, so a cache of these views
    can be resumed and rebuilt identically.
    """

    def __init__(self, spec: Preprocessing, size: int, seed: int = 0) -> None:
        from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform

        norm = {"mean": list(spec.mean), "std": list(spec.std)}
        self.size, self.seed = size, seed
        self.transform = BYOLTransform(
            BYOLView1Transform(input_size=size, min_scale=0.2, normalize=norm),
            BYOLView2Transform(input_size=size, min_scale=0.2, normalize=norm),
        )

    def __call__(self, data: bytes) -> torch.Tensor:
        seed = (self.seed * 1_000_003 + zlib.crc32(data)) % 2**32
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        return torch.stack(self.transform(decode_image(data, min_side_hint=self.size)))
