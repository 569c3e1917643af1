"""The ``page`` blueprint: the upload page at GET / (templates/ and static/)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from model.looks_like import PLAIN_CERTAINTY
from service.breed_names import OTHER_NAMES, breed_name
from service.http.context import service_context

page = Blueprint("page", __name__)


def page_data() -> dict[str, Any]:
    """What app.js needs beyond the answers: the breeds to offer as corrections (with the
    Russian names the bot uses too), every other breed, wild canid and cat an answer may say
    it looks like (to name them, and to offer them as corrections) and the certainty at which
    that is said plainly, the upload limit, and whether corrections are taken."""
    context = service_context()
    return {
        "breeds": [
            {"wnid": c.wnid, "name": c.name, "name_ru": breed_name(c.wnid, c.name, "ru")}
            for c in context.predictor.metadata.classes
        ],
        "others": [
            {"wnid": wnid, "name": names["en"], "name_ru": names["ru"]}
            for wnid, names in OTHER_NAMES.items()
        ],
        "looks_like_plain": PLAIN_CERTAINTY,
        "max_upload_mb": context.settings.api.max_upload_mb,
        "feedback_enabled": context.feedback is not None,
    }


@page.get("/")
def index():
    context = service_context()
    return render_template(
        "index.html",
        model=context.model,
        classes=context.predictor.metadata.classes,
        max_upload_mb=context.settings.api.max_upload_mb,
        feedback_enabled=context.feedback is not None,
        page_data=page_data(),
    )
