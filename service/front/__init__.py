"""The production front: how requests reach the Flask app inside each gunicorn worker.

gunicorn runs ``service.front.worker.FrontWorker`` (a gevent worker without monkey-patching):
every connection is a cheap greenlet that reads the request body with deadlines and a size
limit (``service.front.body``), and only complete requests are handed to the one real thread
that runs the Flask app and the model (``service.front.wsgi``). Slow clients therefore cost a
greenlet each, never a model thread. On SIGTERM the worker drains (``service.front.worker``).
See docs/front.md.
"""
