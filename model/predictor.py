"""From upload bytes to a breed answer: preprocessing, backend, softmax, top-k, verdict."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from model.backends import Backend, load_backend
from model.decode_budget import DEFAULT_LIMITS, DecodeLimits
from model.defaults import DEFAULT_TOP_K
from model.looks_like import LooksLike, looks_like_of
from model.metadata import ModelMetadata
from model.open_set import softmax, verdicts
from model.preprocessing import decode_image, preprocess_image
from model.prior import answer_logits
from model.source import resolve_model_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BreedScore:
    wnid: str
    name: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {"wnid": self.wnid, "name": self.name, "confidence": self.confidence}


@dataclass(frozen=True)
class Prediction:
    """The answer for one photo: ``verdict`` sure, unsure or unknown (model/open_set.py).

    ``breed`` is None when the photo is not one of our breeds (``unknown``); ``looks_like``
    names the other breed, wild canid or cat it looks like, when the artifact's rule says so
    (model/looks_like.py: never on a ``sure`` answer).
    """

    verdict: str
    breed: BreedScore | None
    top_k: tuple[BreedScore, ...]
    known_score: float
    looks_like: LooksLike | None = None

    @property
    def known(self) -> bool:
        return self.verdict != "unknown"

    def to_dict(self) -> dict[str, Any]:
        """The JSON answer's fields, in the order the API documents them."""
        return {
            "breed": self.breed.to_dict() if self.breed else None,
            "verdict": self.verdict,
            "known": self.known,
            "known_score": self.known_score,
            "looks_like": self.looks_like.to_dict() if self.looks_like else None,
            "top_k": [b.to_dict() for b in self.top_k],
        }


class Predictor:
    """A loaded model, the metadata that says how to feed and read it, and the answer settings.

    ``top_k`` (breeds listed per answer) and ``limits`` (what one photo's decoding may cost)
    are set once here, so callers pass only the photo.
    """

    def __init__(
        self, backend: Backend, top_k: int = DEFAULT_TOP_K, limits: DecodeLimits = DEFAULT_LIMITS
    ) -> None:
        self.backend = backend
        self.metadata: ModelMetadata = backend.metadata
        self.top_k = top_k
        self.limits = limits

    @classmethod
    def from_uri(
        cls,
        uri: str | None = None,
        sha256: str | None = None,
        threads: int | None = None,
        top_k: int = DEFAULT_TOP_K,
        limits: DecodeLimits = DEFAULT_LIMITS,
        cache_dir: Path | None = None,
    ) -> Predictor:
        """Fetch (``cache_dir`` keeps S3 downloads), verify and load the artifact at ``uri``."""
        started = time.perf_counter()
        path = resolve_model_uri(uri, expected_sha256=sha256, cache_dir=cache_dir)
        predictor = cls(load_backend(path, threads), top_k=top_k, limits=limits)
        meta = predictor.metadata
        log.info(
            "model loaded: %s version %s (%s, backend %s) from %s in %.2fs",
            meta.name,
            meta.version,
            meta.architecture,
            predictor.backend.name,
            path,
            time.perf_counter() - started,
        )
        return predictor

    def warmup(self, runs: int = 2) -> None:
        """Run a blank photo through the model, so the first request finds it ready."""
        spec = self.metadata.preprocessing
        blank = preprocess_image(Image.new("RGB", (spec.input_size, spec.input_size)), spec)
        for _ in range(runs):
            self.backend.run(blank[None])

    def decode(self, data: bytes) -> Image.Image:
        """The photo as the model reads it: upright RGB, decoded at the scale its resize needs,
        within ``limits``; raises ImageDecodeError on bad input."""
        spec = self.metadata.preprocessing
        return decode_image(data, min_side_hint=spec.resize_size, limits=self.limits)

    def preprocess(self, data: bytes) -> np.ndarray:
        return preprocess_image(self.decode(data), self.metadata.preprocessing)

    def predict_batch(self, batch: np.ndarray, top_k: int | None = None) -> list[Prediction]:
        """Predict for preprocessed rows (N×3×S×S, as ``preprocess_image`` gives them)."""
        return self.interpret(self.backend.run(batch), top_k)

    def interpret(self, outputs: np.ndarray, top_k: int | None = None) -> list[Prediction]:
        """Raw model outputs → predictions; also used by the lab's evaluation.

        The open-set verdict reads the model's own breed probabilities; the named breed and
        the confidences read them after the artifact's prior (if any); ``looks_like`` reads
        the ImageNet logits.
        """
        meta = self.metadata
        classes = meta.classes
        outputs = outputs.astype(np.float32, copy=False)
        probs = softmax(answer_logits(outputs, meta))
        scores, row_verdicts = verdicts(
            outputs, meta, breed_probs=None if meta.prior.log_adjustment else probs
        )
        others = looks_like_of(outputs, meta, row_verdicts)
        k = max(1, min(top_k or self.top_k, len(classes)))
        results = []
        for row, verdict, score, other in zip(probs, row_verdicts, scores, others, strict=True):
            ranked = tuple(
                BreedScore(classes[i].wnid, classes[i].name, round(float(row[i]), 6))
                for i in np.argsort(-row)[:k]
            )
            results.append(
                Prediction(
                    verdict=str(verdict),
                    breed=None if verdict == "unknown" else ranked[0],
                    top_k=ranked,
                    known_score=round(float(score), 6),
                    looks_like=other,
                )
            )
        return results

    def predict_image(self, image: Image.Image, top_k: int | None = None) -> Prediction:
        """The answer for a photo ``decode`` gave; ``top_k`` overrides the predictor's."""
        row = preprocess_image(image, self.metadata.preprocessing)
        return self.predict_batch(row[None], top_k)[0]

    def predict_bytes(self, data: bytes, top_k: int | None = None) -> Prediction:
        """One photo's answer; ``top_k`` overrides the predictor's."""
        return self.predict_image(self.decode(data), top_k)
