"""The feedback buttons under an answer: their callback data and their keyboards.

A button's ``callback_data`` (at most 64 bytes, Telegram's limit) carries all a press needs,
so whichever worker or replica receives the press can handle it:

    fb:<answer id>:ok:<label>   "right": the label the answer named (a wnid, or "none")
    fb:<answer id>:wrong        "wrong": show the breeds to choose from
    fb:<answer id>:<label>      a breed's wnid, or "none", chosen from that list

The list holds the ten breeds and "none of these": an answer that names another breed, wild
canid or cat (its ``looks_like``) offers it under "right", and the page and the API take any
class the service can name.

Any client can send any callback data, so a press is parsed strictly here and its label is
checked again by ``Feedback.submit``; the answer id is unguessable and expires.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from model.metadata import BreedClass
from model.predictor import Prediction
from service.breed_names import breed_name
from service.feedback.store import NONE_LABEL
from service.telegram_bot.texts import text

PREFIX = "fb"
MAX_CALLBACK_BYTES = 64  # Telegram refuses longer callback_data
BREEDS_PER_ROW = 2
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,32}")  # answer ids and labels: URL-safe, short
_ACTIONS = ("ok", "wrong")


@dataclass(frozen=True)
class Press:
    """One press of a feedback button: store ``label``, or (label None) show the breeds."""

    answer_id: str
    label: str | None


def is_feedback(data: str | None) -> bool:
    """Whether a callback's data belongs to the feedback buttons (well formed or not)."""
    return data is not None and data.split(":", 1)[0] == PREFIX


def parse_press(data: str) -> Press | None:
    """The press this callback data encodes, or None when it is garbled or forged."""
    parts = data.split(":")
    if len(parts) < 3 or parts[0] != PREFIX or not all(_TOKEN.fullmatch(p) for p in parts[1:]):
        return None
    answer_id, action, rest = parts[1], parts[2], parts[3:]
    if action == "ok" and len(rest) == 1 and rest[0] not in _ACTIONS:
        return Press(answer_id, rest[0])
    if action == "wrong" and not rest:
        return Press(answer_id, None)
    if action not in _ACTIONS and not rest:
        return Press(answer_id, action)
    return None


def named_label(prediction: Prediction) -> str:
    """The label the answer named first: what it looks like (another breed, a wild canid, a
    cat), else its breed's wnid, or "none" for "not one of my breeds"."""
    if prediction.looks_like is not None:
        return prediction.looks_like.wnid
    return prediction.breed.wnid if prediction.breed is not None else NONE_LABEL


def _data(*parts: str) -> str:
    data = ":".join((PREFIX, *parts))
    if len(data.encode()) > MAX_CALLBACK_BYTES:
        raise ValueError(f"callback data over {MAX_CALLBACK_BYTES} bytes: {data!r}")
    return data


def answer_keyboard(answer_id: str, label: str, lang: str) -> InlineKeyboardMarkup:
    """Right / wrong under an answer that named ``label``."""
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    text("button_right", lang), callback_data=_data(answer_id, "ok", label)
                ),
                InlineKeyboardButton(
                    text("button_wrong", lang), callback_data=_data(answer_id, "wrong")
                ),
            ]
        ]
    )


def breeds_keyboard(
    answer_id: str, classes: Sequence[BreedClass], lang: str
) -> InlineKeyboardMarkup:
    """Every breed the model knows, then "none of these", to say what the photo shows."""
    buttons = [
        InlineKeyboardButton(
            breed_name(c.wnid, c.name, lang), callback_data=_data(answer_id, c.wnid)
        )
        for c in classes
    ]
    rows = [buttons[i : i + BREEDS_PER_ROW] for i in range(0, len(buttons), BREEDS_PER_ROW)]
    none = InlineKeyboardButton(
        text("button_none", lang), callback_data=_data(answer_id, NONE_LABEL)
    )
    return InlineKeyboardMarkup([*rows, [none]])
