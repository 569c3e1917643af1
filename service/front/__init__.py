"""The production front: how requests reach the Flask app and the bot inside each worker.

gunicorn runs ``service.front.worker.FrontWorker`` (uvicorn-worker's ``UvicornWorker``) and
the ASGI app ``service.front.asgi.Front``: bodies are read on the event loop under deadlines
(``service.front.body``), the bot answers on that loop, and the Flask app runs in the
worker's one app thread (``service.front.lane``). See docs/front.md.
"""
