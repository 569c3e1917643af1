"""Shared test helpers: real gunicorn servers, generated images, data-set lookup."""
