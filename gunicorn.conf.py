"""gunicorn settings for BreedRecognizer (read by ``gunicorn -c gunicorn.conf.py``).

Every value comes from ``service.settings`` (the one place the environment is read; reference
in docs/settings.md), with defaults that suit one small container (a Heroku dyno). Start it
with ``gunicorn -c gunicorn.conf.py 'app:create_app()'``. The settings are read here, once, in
the master; the workers inherit them through the fork (``publish_server_settings``).
"""

import logging
import shutil
import tempfile
from pathlib import Path

from service.settings import publish_server_settings, settings_or_exit

# What the workers of this server share (metrics files; without Redis the bot's answered
# updates and the photos kept for feedback) lives here unless a setting names its own place.
shared_folder = Path(tempfile.mkdtemp(prefix="breedrecognizer-"))
settings = publish_server_settings(settings_or_exit().shared_by_workers(shared_folder))
server = settings.server

# Listen on $PORT on every interface (Heroku and Docker set PORT; HOST narrows it locally).
bind = f"{server.host}:{server.port}"

# Each worker runs uvicorn (service/front/, docs/front.md): bodies are read on its event
# loop, the bot answers on it, and the model runs in its one app thread with
# settings.model_threads() threads, so that the workers together use each core once.
workers = server.web_concurrency
worker_class = "service.front.worker.FrontWorker"
worker_connections = settings.front.worker_connections

# No preload: the model is loaded in each worker after the fork (create_app runs there),
# because forking a process that has already started the model's thread pools is unsafe.
preload_app = False

# Heroku's router gives up after 30 s; a stuck worker is killed and replaced before that.
timeout = server.gunicorn_timeout
# SIGTERM: workers drain (finish the requests and the bot's answers in flight) for up to this
# long; Heroku sends SIGKILL 30 s after SIGTERM.
graceful_timeout = int(settings.front.graceful_timeout)
# How long an idle keep-alive connection stays open.
keepalive = 5

# No gunicornc control socket: its default path is shared by every gunicorn of the user
# (tests run several at once) and a container has nobody to use it.
control_socket_disable = True

# Logs go to stdout/stderr, where Heroku and Docker collect them (the service's own loggers
# are set up in on_starting, before the fork).
accesslog = server.access_log or None
errorlog = "-"
loglevel = settings.api.log_level.lower()

# prometheus_client's multiprocess mode is configured by this variable only, read when the
# workers first import it: every worker writes its metrics to files there and /metrics adds
# them up. gunicorn sets it for the workers (raw_env).
metrics_dir = server.prometheus_multiproc_dir
raw_env = [f"PROMETHEUS_MULTIPROC_DIR={metrics_dir}"]


def on_starting(server):
    """The service's log lines, then an empty metrics folder (a folder named by the setting
    may hold old files)."""
    logging.basicConfig(
        level=settings.api.log_level,
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    server.log.info(
        "workers=%s, MODEL_THREADS=%s per worker, metrics in %s",
        workers,
        settings.model_threads(),
        metrics_dir,
    )


def post_fork(server, worker):
    """In the new worker, before it loads anything: freed photo memory goes back at once."""
    from model.memory import return_freed_memory

    return_freed_memory()


def child_exit(server, worker):
    """A dead worker's live gauges must not count any more."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    shutil.rmtree(shared_folder, ignore_errors=True)
