"""What people read and may answer when a photo looks like another breed, a wild canid or a
cat: the names in both languages, the bot's words, the label "right" stores, the labels a
correction may carry and the HTTP contract's list of them."""

from __future__ import annotations

import re

import pytest

from model.looks_like import OTHER_BY_WNID, OTHER_CLASSES, LooksLike
from model.metadata import IMAGEWOOF_CLASSES
from model.predictor import BreedScore, Prediction
from service.breed_names import BREED_NAMES, OTHER_NAMES, breed_name, name_in_sentence
from service.feedback.service import feedback_labels
from service.http.openapi import load_openapi
from service.telegram_bot.buttons import named_label
from service.telegram_bot.texts import prediction_text

CYRILLIC = re.compile(r"^[А-ЯЁ][а-яё -]+$")
LABRADOR = LooksLike("n02099712", "Labrador retriever", "dog", 0.62, 0.97)
TOP = tuple(
    BreedScore(c.wnid, c.name, p) for c, p in zip(IMAGEWOOF_CLASSES[2:4], (0.6, 0.3), strict=True)
)


def _prediction(verdict: str, looks_like: LooksLike | None) -> Prediction:
    breed = None if verdict == "unknown" else TOP[0]
    return Prediction(verdict, breed, TOP, 1.0, looks_like)


def test_every_class_looks_like_may_name_has_an_english_and_a_russian_name() -> None:
    assert set(OTHER_NAMES) == set(OTHER_BY_WNID)
    assert not set(OTHER_NAMES) & set(BREED_NAMES)
    for c in OTHER_CLASSES:
        names = OTHER_NAMES[c.wnid]
        assert set(names) == {"en", "ru"}
        assert names["en"] == c.name  # what the API says, and what people read in English
        assert CYRILLIC.match(names["ru"]), names["ru"]
        assert breed_name(c.wnid, "?", "ru") == names["ru"]
    assert len({n["ru"] for n in OTHER_NAMES.values()}) == len(OTHER_NAMES)  # no two alike
    # Standard Russian names, lower case inside a sentence.
    assert name_in_sentence("n02099712", "Labrador retriever", "ru") == "лабрадор-ретривер"
    assert name_in_sentence("n02106662", "German shepherd", "ru") == "немецкая овчарка"
    assert name_in_sentence("n02110185", "Siberian husky", "ru") == "сибирский хаски"
    assert name_in_sentence("n02114367", "Grey wolf", "ru") == "серый волк"
    assert name_in_sentence("n02119022", "Red fox", "ru") == "рыжая лиса"
    assert name_in_sentence("n02123597", "Siamese cat", "ru") == "сиамская кошка"
    assert name_in_sentence("n02099712", "Labrador retriever", "en") == "Labrador retriever"


@pytest.mark.parametrize(
    ("verdict", "looks_like", "lang", "first_line"),
    [
        (
            "unknown",
            LABRADOR,
            "en",
            "Not one of my 10 breeds — it looks like a Labrador retriever (62%) 🐕",
        ),
        (
            "unknown",
            LABRADOR,
            "ru",
            "Это не одна из моих 10 пород — похоже, это лабрадор-ретривер (62%) 🐕",
        ),
        (
            "unsure",
            LooksLike("n02088094", "Afghan hound", "dog", 0.31, 0.9),
            "en",
            "Probably not one of my 10 breeds — it may be an Afghan hound (31%), but I'm not "
            "sure 🤔",
        ),
        (
            "unsure",
            LooksLike("n02088094", "Afghan hound", "dog", 0.31, 0.9),
            "ru",
            "Скорее всего, это не одна из моих 10 пород — возможно, это афганская борзая (31%), "
            "но я не уверен 🤔",
        ),
        (
            "unknown",
            LooksLike("n02114367", "Grey wolf", "wild", 0.8, 0.95),
            "en",
            "Not one of my 10 breeds: it looks like a wild animal — Grey wolf (80%) 🐺",
        ),
        (
            "unknown",
            LooksLike("n02114367", "Grey wolf", "wild", 0.8, 0.95),
            "ru",
            "Это не одна из моих 10 пород: похоже, это дикий зверь — серый волк (80%) 🐺",
        ),
    ],
)
def test_the_bot_says_what_else_a_dog_looks_like(
    verdict: str, looks_like: LooksLike, lang: str, first_line: str
) -> None:
    said = prediction_text(_prediction(verdict, looks_like), lang, 10)
    lines = said.splitlines()
    assert lines[0] == first_line
    # Then the nearest of the ten, as before.
    assert lines[2] in ("Of my breeds, the nearest would be:", "Из моих пород ближе всего:")
    assert lines[3].startswith("1. ") and lines[3].endswith(" — 60%")


@pytest.mark.parametrize(
    ("confidence", "kind_confidence", "lang", "said"),
    [
        (0.81, 0.9, "en", "It's a cat — I recognise dogs 🐱 (Siamese cat, I'd say: 81%)"),
        (0.81, 0.9, "ru", "Это кошка, а я узнаю собак 🐱 (похоже, сиамская кошка: 81%)"),
        # Its class is a third, but the cats together outweigh everything: plainly a cat.
        (0.33, 0.7, "en", "It's a cat — I recognise dogs 🐱 (Lynx, I'd say: 33%)"),
        (0.33, 0.7, "ru", "Это кошка, а я узнаю собак 🐱 (похоже, рысь: 33%)"),
        (0.3, 0.4, "en", "It may be a cat — I recognise dogs 🐱"),
        (0.3, 0.4, "ru", "Кажется, это кошка, а я узнаю собак 🐱"),
    ],
)
def test_the_bot_says_a_cat_is_a_cat_as_surely_as_all_cats_together(
    confidence: float, kind_confidence: float, lang: str, said: str
) -> None:
    named = ("n02123597", "Siamese cat") if confidence > 0.5 else ("n02127052", "Lynx")
    cat = LooksLike(*named, "cat", confidence, kind_confidence)
    assert prediction_text(_prediction("unknown", cat), lang, 10) == said


def test_a_breed_is_named_as_surely_as_its_own_share() -> None:
    """Many dog breeds together say little about which one: a breed needs its own share."""
    afghan = LooksLike("n02088094", "Afghan hound", "dog", 0.31, 0.9)
    said = prediction_text(_prediction("unknown", afghan), "en", 10)
    assert said.startswith("Not one of my 10 breeds — it may be an Afghan hound (31%)")


def test_without_looks_like_the_words_are_as_before() -> None:
    assert prediction_text(_prediction("unsure", None), "en", 10).startswith("I think it's a")
    unknown = prediction_text(_prediction("unknown", None), "en", 10)
    assert "does not look like one of the 10 breeds I know" in unknown


def test_right_stores_what_the_answer_named_first() -> None:
    assert named_label(_prediction("unknown", LABRADOR)) == LABRADOR.wnid
    assert named_label(_prediction("unsure", LABRADOR)) == LABRADOR.wnid
    assert named_label(_prediction("unsure", None)) == TOP[0].wnid
    assert named_label(_prediction("unknown", None)) == "none"


def test_a_correction_may_name_any_class_the_service_names_and_the_contract_lists_them() -> None:
    ten = [c.wnid for c in IMAGEWOOF_CLASSES]
    labels = feedback_labels(ten)
    assert labels == {*ten, *OTHER_BY_WNID, "none"}
    schemas = load_openapi()["components"]["schemas"]
    assert schemas["Feedback"]["properties"]["label"]["enum"] == [
        *ten,
        *(c.wnid for c in OTHER_CLASSES),
        "none",
    ]
    looks_like = schemas["LooksLike"]
    assert looks_like["properties"]["kind"]["enum"] == ["dog", "wild", "cat"]
    assert "looks_like" in schemas["Prediction"]["required"]
