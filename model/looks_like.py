"""What a photo looks like when it is not one of the ten: another dog breed, a wild canid or a
cat, read from the ImageNet-1k logits the artifact keeps beside its breed logits.

Most dogs people photograph are none of the ten breeds. The ImageNet head has 118 dog breeds,
wild canids and the cat family, so an answer can say "not one of my ten breeds — it looks like a
Labrador retriever" instead of a dead end. ``OTHER_CLASSES`` is the one table of the classes an
answer may name (``kind`` dog, wild or cat); the rule that decides when (``looks_like_of``)
takes its parameters from the artifact's ``LooksLikeRule``, calibrated by the lab
(``python -m training.release.looks_like``), so the service applies what was measured.

The rule, per photo (p = softmax over the 1000 ImageNet logits, T = 1):

- the candidate is the most probable class of ``OTHER_CLASSES`` (the artifact's own breeds
  never count, even if a table lists them); its ``confidence`` is its p, its
  ``kind_confidence`` the p of every class of the table of its kind together;
- it must be the ImageNet head's best class outside the ten breeds: a car or a drawing has a
  better class that is no dog, wild canid or cat, and gets none;
- the margin ln p(candidate) − ln Σ p(the ten) says how far the candidate outweighs the ten
  breeds together; ``unknown`` answers need ``unknown_margin``, ``unsure`` answers the larger,
  calibrated ``unsure_margin`` (None: never); ``sure`` answers never carry it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.metadata import ModelMetadata
from model.open_set import softmax

KINDS = ("dog", "wild", "cat")
# At or above this certainty a ``looks_like`` is said plainly ("it looks like"), below it with
# a doubt ("it may be ..., but I'm not sure"): the bot and the page (which gets it) alike.
PLAIN_CERTAINTY = 0.5


@dataclass(frozen=True)
class OtherClass:
    """One ImageNet-1k class an answer may name: its index in the 1000-way head, WordNet id,
    English name (one of ImageNet's own names for it) and kind (dog, wild or cat)."""

    imagenet_index: int
    wnid: str
    name: str
    kind: str


def _rows(kind: str, rows: str) -> tuple[OtherClass, ...]:
    """``index wnid name`` lines of one kind (a table that reads like one)."""
    parsed = []
    for line in rows.strip().splitlines():
        index, wnid, name = line.split(maxsplit=2)
        parsed.append(OtherClass(int(index), wnid, name, kind))
    return tuple(parsed)


# ImageNet's dog breeds are the block 151..268 of the standard 1k order, less the Imagewoof ten
# (dingo, 273, is one of the ten). Wild: the canids of 269..280 that are no domestic breed
# (hyena, 276, is no canid). Cats: the cat family, 281..293: the five domestic cat classes and
# the wild cats, because a house cat the network sees as a lynx or a cougar is still a cat to
# the people asking (a lion is, too). Names and wnids are checked against ImageNet's class list
# by tests/test_looks_like.py.
OTHER_CLASSES: tuple[OtherClass, ...] = (
    *_rows(
        "dog",
        """
        151 n02085620 Chihuahua
        152 n02085782 Japanese spaniel
        153 n02085936 Maltese dog
        154 n02086079 Pekinese
        156 n02086646 Blenheim spaniel
        157 n02086910 Papillon
        158 n02087046 Toy terrier
        160 n02088094 Afghan hound
        161 n02088238 Basset hound
        163 n02088466 Bloodhound
        164 n02088632 Bluetick
        165 n02089078 Black-and-tan coonhound
        166 n02089867 Walker hound
        168 n02090379 Redbone
        169 n02090622 Borzoi
        170 n02090721 Irish wolfhound
        171 n02091032 Italian greyhound
        172 n02091134 Whippet
        173 n02091244 Ibizan hound
        174 n02091467 Norwegian elkhound
        175 n02091635 Otterhound
        176 n02091831 Saluki
        177 n02092002 Scottish deerhound
        178 n02092339 Weimaraner
        179 n02093256 Staffordshire bull terrier
        180 n02093428 American Staffordshire terrier
        181 n02093647 Bedlington terrier
        183 n02093859 Kerry blue terrier
        184 n02093991 Irish terrier
        185 n02094114 Norfolk terrier
        186 n02094258 Norwich terrier
        187 n02094433 Yorkshire terrier
        188 n02095314 Wire-haired fox terrier
        189 n02095570 Lakeland terrier
        190 n02095889 Sealyham terrier
        191 n02096051 Airedale terrier
        192 n02096177 Cairn terrier
        194 n02096437 Dandie Dinmont terrier
        195 n02096585 Boston terrier
        196 n02097047 Miniature schnauzer
        197 n02097130 Giant schnauzer
        198 n02097209 Standard schnauzer
        199 n02097298 Scottish terrier
        200 n02097474 Tibetan terrier
        201 n02097658 Silky terrier
        202 n02098105 Soft-coated wheaten terrier
        203 n02098286 West Highland white terrier
        204 n02098413 Lhasa apso
        205 n02099267 Flat-coated retriever
        206 n02099429 Curly-coated retriever
        208 n02099712 Labrador retriever
        209 n02099849 Chesapeake Bay retriever
        210 n02100236 German short-haired pointer
        211 n02100583 Vizsla
        212 n02100735 English setter
        213 n02100877 Irish setter
        214 n02101006 Gordon setter
        215 n02101388 Brittany spaniel
        216 n02101556 Clumber spaniel
        217 n02102040 English springer spaniel
        218 n02102177 Welsh springer spaniel
        219 n02102318 Cocker spaniel
        220 n02102480 Sussex spaniel
        221 n02102973 Irish water spaniel
        222 n02104029 Kuvasz
        223 n02104365 Schipperke
        224 n02105056 Groenendael
        225 n02105162 Malinois
        226 n02105251 Briard
        227 n02105412 Kelpie
        228 n02105505 Komondor
        230 n02105855 Shetland sheepdog
        231 n02106030 Collie
        232 n02106166 Border collie
        233 n02106382 Bouvier des Flandres
        234 n02106550 Rottweiler
        235 n02106662 German shepherd
        236 n02107142 Doberman pinscher
        237 n02107312 Miniature pinscher
        238 n02107574 Greater Swiss Mountain dog
        239 n02107683 Bernese mountain dog
        240 n02107908 Appenzeller
        241 n02108000 EntleBucher
        242 n02108089 Boxer
        243 n02108422 Bull mastiff
        244 n02108551 Tibetan mastiff
        245 n02108915 French bulldog
        246 n02109047 Great Dane
        247 n02109525 Saint Bernard
        248 n02109961 Eskimo dog
        249 n02110063 Alaskan malamute
        250 n02110185 Siberian husky
        251 n02110341 Dalmatian
        252 n02110627 Affenpinscher
        253 n02110806 Basenji
        254 n02110958 Pug
        255 n02111129 Leonberg
        256 n02111277 Newfoundland
        257 n02111500 Great Pyrenees
        259 n02112018 Pomeranian
        260 n02112137 Chow chow
        261 n02112350 Keeshond
        262 n02112706 Brabancon griffon
        263 n02113023 Pembroke Welsh corgi
        264 n02113186 Cardigan Welsh corgi
        265 n02113624 Toy poodle
        266 n02113712 Miniature poodle
        267 n02113799 Standard poodle
        268 n02113978 Mexican hairless
        """,
    ),
    *_rows(
        "wild",
        """
        269 n02114367 Grey wolf
        270 n02114548 Arctic wolf
        271 n02114712 Red wolf
        272 n02114855 Coyote
        274 n02115913 Dhole
        275 n02116738 African hunting dog
        277 n02119022 Red fox
        278 n02119789 Kit fox
        279 n02120079 Arctic fox
        280 n02120505 Grey fox
        """,
    ),
    *_rows(
        "cat",
        """
        281 n02123045 Tabby cat
        282 n02123159 Tiger cat
        283 n02123394 Persian cat
        284 n02123597 Siamese cat
        285 n02124075 Egyptian cat
        286 n02125311 Cougar
        287 n02127052 Lynx
        288 n02128385 Leopard
        289 n02128757 Snow leopard
        290 n02128925 Jaguar
        291 n02129165 Lion
        292 n02129604 Tiger
        293 n02130308 Cheetah
        """,
    ),
)
OTHER_BY_WNID: dict[str, OtherClass] = {c.wnid: c for c in OTHER_CLASSES}


@dataclass(frozen=True)
class LooksLike:
    """The answer's ``looks_like``: the class it names, its share of the 1000-way softmax, and
    the share of its whole kind (every class of the table of that kind, the ten excluded)."""

    wnid: str
    name: str
    kind: str
    confidence: float
    kind_confidence: float

    @property
    def certainty(self) -> float:
        """How sure the sentence people read is: a cat answer says "it's a cat", so its kind's
        share (a house cat's probability is split among look-alike cat classes);
        another breed or a wild canid is named, so the class's share."""
        return self.kind_confidence if self.kind == "cat" else self.confidence

    @property
    def plain(self) -> bool:
        """Said plainly, not with a doubt."""
        return self.certainty >= PLAIN_CERTAINTY

    def to_dict(self) -> dict[str, Any]:
        return {
            "wnid": self.wnid,
            "name": self.name,
            "kind": self.kind,
            "confidence": self.confidence,
            "kind_confidence": self.kind_confidence,
        }


@dataclass(frozen=True)
class LooksLikeScores:
    """Per row: the candidate (index into ``OTHER_CLASSES``), its p, its kind's p, whether it
    is the best class outside the ten, and its margin over the ten; what the rule compares
    with its thresholds, and what the lab calibrates on."""

    candidate: np.ndarray
    confidence: np.ndarray
    kind_confidence: np.ndarray
    best_outside: np.ndarray
    margin: np.ndarray


def scores_of(outputs: np.ndarray, meta: ModelMetadata) -> LooksLikeScores:
    """The rule's quantities for a batch of raw output rows (needs the ImageNet logits)."""
    if meta.outputs.imagenet is None:
        raise ValueError("looks_like needs ImageNet logits in the model output")
    own = tuple(c.imagenet_index for c in meta.classes)
    if any(i is None for i in own):
        raise ValueError("looks_like needs an ImageNet index for every class")
    start, end = meta.outputs.imagenet
    allowed, columns, rest_columns = _columns(own, end - start)  # type: ignore[arg-type]
    probs = softmax(outputs[:, start:end].astype(np.float64))
    other = probs[:, columns]
    best = other.argmax(axis=1)
    rows = np.arange(len(other))
    confidence = other[rows, best]
    kind_of = _kind_of(own, end - start)  # type: ignore[arg-type]
    per_kind = np.stack([other[:, kind_of == k].sum(axis=1) for k in range(len(KINDS))], axis=1)
    rest = probs[:, rest_columns]  # neither the ten nor the table's
    ten = probs[:, list(own)].sum(axis=1)
    tiny = np.finfo(np.float64).tiny  # a zero share reads as -inf, not nan
    return LooksLikeScores(
        candidate=allowed[best],
        confidence=confidence,
        kind_confidence=per_kind[rows, kind_of[best]],
        best_outside=confidence >= rest.max(axis=1),
        margin=np.log(np.maximum(confidence, tiny)) - np.log(np.maximum(ten, tiny)),
    )


@functools.cache
def _columns(own: tuple[int, ...], width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the ten's ImageNet indices: the table rows that may be named, their ImageNet
    columns, and the columns of every other class (worked out once, not per photo)."""
    allowed = np.array([i for i, c in enumerate(OTHER_CLASSES) if c.imagenet_index not in own])
    columns = np.array([OTHER_CLASSES[i].imagenet_index for i in allowed])
    rest = np.setdiff1d(np.arange(width), np.concatenate([own, columns]))
    return allowed, columns, rest


@functools.cache
def _kind_of(own: tuple[int, ...], width: int) -> np.ndarray:
    """Per column of ``_columns``: the index of its class's kind in ``KINDS``."""
    allowed, _, _ = _columns(own, width)
    return np.array([KINDS.index(OTHER_CLASSES[i].kind) for i in allowed])


def carries(scores: LooksLikeScores, verdicts: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """Where the artifact's rule names the candidate: per row, True or False."""
    rule = meta.looks_like
    shown = np.zeros(len(verdicts), dtype=bool)
    if rule.method == "none":
        return shown
    if rule.method != "other_class":
        raise ValueError(f"unknown looks_like method {rule.method!r}; known: none, other_class")
    best = scores.best_outside
    shown |= (verdicts == "unknown") & best & (scores.margin >= rule.unknown_margin)
    if rule.unsure_margin is not None:
        shown |= (verdicts == "unsure") & best & (scores.margin >= rule.unsure_margin)
    return shown


def looks_like_of(
    outputs: np.ndarray, meta: ModelMetadata, verdicts: np.ndarray
) -> list[LooksLike | None]:
    """Per row, what the photo looks like under the artifact's rule, or None."""
    if meta.looks_like.method == "none":
        return [None] * len(verdicts)
    scores = scores_of(outputs, meta)
    shown = carries(scores, np.asarray(verdicts, dtype=object), meta)
    named: list[LooksLike | None] = []
    for row, show in enumerate(shown):
        if not show:
            named.append(None)
            continue
        other = OTHER_CLASSES[int(scores.candidate[row])]
        confidence = round(float(scores.confidence[row]), 6)
        kind_confidence = round(float(scores.kind_confidence[row]), 6)
        named.append(LooksLike(other.wnid, other.name, other.kind, confidence, kind_confidence))
    return named
