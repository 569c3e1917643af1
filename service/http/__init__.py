"""The HTTP side of the service: the JSON API, the page, errors, uploads, metrics and the
OpenAPI contract (``openapi.yaml``), as Flask blueprints and hooks that ``create_app`` wires."""
