"""BreedRecognizer's entry point: gunicorn and heroku.yml run ``app:create_app()``.

``app.app`` also works (built on first access only), for servers that want a module attribute.
"""

from __future__ import annotations

from flask import Flask

from service.factory import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Flask:
    if name == "app":
        globals()["app"] = application = create_app()
        return application
    raise AttributeError(name)
