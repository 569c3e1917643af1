"""The ``page`` blueprint: the upload page at GET / (templates/ and static/)."""

from __future__ import annotations

from flask import Blueprint, render_template

from service.http.context import service_context

page = Blueprint("page", __name__)


@page.get("/")
def index():
    context = service_context()
    return render_template(
        "index.html",
        model=context.model,
        classes=context.predictor.metadata.classes,
        max_upload_mb=context.settings.api.max_upload_mb,
    )
