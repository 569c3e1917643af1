"""The artifact's self-description: everything the service needs to use a model.

It travels inside the artifact (TorchScript ``_extra_files`` / ONNX ``metadata_props``)
as one JSON document, so the server never needs a side file and the training lab's
evaluation reads exactly what the service reads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1
METADATA_KEY = "breedrecognizer.json"


@dataclass(frozen=True)
class BreedClass:
    """One output class: ImageNet WordNet id, human name and (if any) its ImageNet-1k index."""

    wnid: str
    name: str
    imagenet_index: int | None = None


@dataclass(frozen=True)
class InputQuantization:
    """The model takes its input already quantized: uint8 ``round(x / scale) + zero_point``
    (half to even, saturated), exactly what the ONNX ``QuantizeLinear`` it replaces computes.

    An int8 copy's first node quantizes the normalised float photo. Done by the
    preprocessing's lookup table instead, it costs nothing and the model reads a quarter of
    the bytes (model/preprocessing.py).
    """

    scale: float
    zero_point: int

    def __post_init__(self) -> None:
        if not self.scale > 0 or not 0 <= self.zero_point <= 255:
            raise ValueError(f"bad input quantization {self.scale}, {self.zero_point}")


@dataclass(frozen=True)
class Preprocessing:
    """Eval-time preprocessing: resize shorter side, centre crop, scale to [0,1], normalise,
    and quantize when the model takes uint8 input (``input_quantization``)."""

    input_size: int = 224
    resize_size: int = 256
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    input_quantization: InputQuantization | None = None

    def __post_init__(self) -> None:
        if self.resize_size < self.input_size:
            raise ValueError("resize_size must be >= input_size")
        if self.interpolation not in ("bilinear", "bicubic", "lanczos"):
            raise ValueError(f"unsupported interpolation {self.interpolation!r}")


@dataclass(frozen=True)
class OutputLayout:
    """Where the breed logits (and optional ImageNet-1k logits) sit in the model's output row."""

    breed: tuple[int, int] = (0, 10)
    imagenet: tuple[int, int] | None = None


@dataclass(frozen=True)
class OpenSetRule:
    """How sure an answer is (model/open_set.py): below ``threshold`` of the ``method`` score
    the photo is not one of my breeds; a known photo is sure at or above ``sure_threshold`` of
    the ``sure_method`` score (empty: ``method`` with ``params``), unsure below it. No sure
    threshold: every known answer is sure."""

    method: str = "none"
    threshold: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    sure_method: str = ""
    sure_threshold: float | None = None
    sure_params: dict[str, Any] = field(default_factory=dict)

    @property
    def sure_scorer(self) -> str:
        return self.sure_method or self.method

    @property
    def sure_scorer_params(self) -> dict[str, Any]:
        return self.sure_params if self.sure_method else self.params


@dataclass(frozen=True)
class LooksLikeRule:
    """When an answer also says what the photo looks like (model/looks_like.py): ``method``
    ``other_class`` names the ImageNet head's best class outside the ten breeds when it is
    another dog breed, a wild canid or a cat, and it outweighs the ten breeds together by the
    log-odds margin ``unknown_margin`` (``unknown`` answers) or ``unsure_margin`` (``unsure``
    answers; None: never). ``none``: never."""

    method: str = "none"
    unknown_margin: float = 0.0
    unsure_margin: float | None = None


@dataclass(frozen=True)
class ClassPrior:
    """Deployment prior as logit adjustment: added to the breed logits before the answer.

    Training photos are balanced per breed but the photos people send are not (beagles are
    far more common than English foxhounds), so the Bayes answer under the deployment prior
    adds ``log p_deploy(breed) - log p_train(breed)`` to each breed logit (Menon et al.,
    2021). Empty = balanced, no adjustment. ``source`` says where the numbers come from.
    It changes which breed is named and its confidence, never the open-set verdict.
    """

    log_adjustment: tuple[float, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class ModelMetadata:
    """What a served model is, how to feed it and how to read its output."""

    name: str
    architecture: str
    version: str
    classes: tuple[BreedClass, ...]
    preprocessing: Preprocessing = Preprocessing()
    outputs: OutputLayout = OutputLayout()
    open_set: OpenSetRule = OpenSetRule()
    prior: ClassPrior = ClassPrior()
    looks_like: LooksLikeRule = LooksLikeRule()
    trained_on: str = ""
    weights_origin: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        start, end = self.outputs.breed
        if end - start != len(self.classes):
            raise ValueError(
                f"output layout has {end - start} breed logits but {len(self.classes)} classes"
            )
        if self.prior.log_adjustment and len(self.prior.log_adjustment) != len(self.classes):
            raise ValueError(
                f"prior has {len(self.prior.log_adjustment)} adjustments for "
                f"{len(self.classes)} classes"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelMetadata:
        raw = json.loads(text)
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported metadata schema_version {raw.get('schema_version')!r}")
        outputs = raw.get("outputs", {})
        imagenet = outputs.get("imagenet")
        prep = raw.get("preprocessing", {})
        for key in ("mean", "std"):
            if key in prep:
                prep[key] = tuple(prep[key])
        if prep.get("input_quantization") is not None:
            prep["input_quantization"] = InputQuantization(**prep["input_quantization"])
        return cls(
            name=raw["name"],
            architecture=raw["architecture"],
            version=raw["version"],
            classes=tuple(BreedClass(**c) for c in raw["classes"]),
            preprocessing=Preprocessing(**prep),
            outputs=OutputLayout(
                breed=tuple(outputs.get("breed", (0, len(raw["classes"])))),
                imagenet=tuple(imagenet) if imagenet else None,
            ),
            open_set=OpenSetRule(**raw.get("open_set", {})),
            prior=_class_prior(raw.get("prior", {})),
            looks_like=LooksLikeRule(**raw.get("looks_like", {})),
            trained_on=raw.get("trained_on", ""),
            weights_origin=raw.get("weights_origin", ""),
            metrics=raw.get("metrics", {}),
            extra=raw.get("extra", {}),
        )


def _class_prior(raw: dict[str, Any]) -> ClassPrior:
    return ClassPrior(
        log_adjustment=tuple(float(x) for x in raw.get("log_adjustment", ())),
        source=raw.get("source", ""),
    )


# The ten Imagewoof breeds in the order of the official wnid sort, with ImageNet-1k indices.
IMAGEWOOF_CLASSES: tuple[BreedClass, ...] = (
    BreedClass("n02086240", "Shih-Tzu", 155),
    BreedClass("n02087394", "Rhodesian ridgeback", 159),
    BreedClass("n02088364", "Beagle", 162),
    BreedClass("n02089973", "English foxhound", 167),
    BreedClass("n02093754", "Border terrier", 182),
    BreedClass("n02096294", "Australian terrier", 193),
    BreedClass("n02099601", "Golden retriever", 207),
    BreedClass("n02105641", "Old English sheepdog", 229),
    BreedClass("n02111889", "Samoyed", 258),
    BreedClass("n02115641", "Dingo", 273),
)
