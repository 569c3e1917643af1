"""gunicorn settings for BreedRecognizer (read by ``gunicorn -c gunicorn.conf.py``).

Every value comes from ``service.settings`` (the one place the environment is read; reference
in docs/settings.md), with defaults that suit one small container (a Heroku dyno). Start it
with the app factory: ``gunicorn -c gunicorn.conf.py 'app:create_app()'``. What the workers
must share (threads per worker, the metrics folder, the Telegram update ids already taken,
the photos kept for feedback) is passed to them through the environment.
"""

import os
import shutil
import tempfile

from service.front.balance import ConnectionBoard
from service.settings import settings_or_exit

settings = settings_or_exit()
server = settings.server


def _cpu_count() -> int:
    """CPUs this process may use (the affinity mask respects container CPU limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# Listen on $PORT on every interface (Heroku and Docker set PORT; HOST narrows it locally).
bind = f"{server.host}:{server.port}"

# Each worker holds its own copy of the model and runs it in one app thread; its connections
# are greenlets that read request bodies under deadlines first, so slow clients never hold the
# model (service/front/, docs/front.md). Nothing is monkey-patched.
workers = server.web_concurrency
worker_class = "service.front.worker.FrontWorker"
worker_connections = settings.front.worker_connections

# Split the cores between workers so they don't oversubscribe them: one model thread per core
# in all (docs/benchmark.md has the measurements). An explicit MODEL_THREADS wins.
model_threads = settings.model.threads or max(1, _cpu_count() // workers)
os.environ["MODEL_THREADS"] = str(model_threads)
os.environ["OMP_NUM_THREADS"] = server.omp_num_threads or str(model_threads)

# No preload: the model is loaded in each worker after the fork (create_app runs there),
# because forking a process that has already started torch's thread pools is unsafe.
preload_app = False

# Heroku's router gives up after 30 s; a stuck worker is killed and replaced before that.
timeout = server.gunicorn_timeout
# SIGTERM: workers drain (503 to new requests, finish the app's and the bot's work) for up to
# this long; Heroku sends SIGKILL 30 s after SIGTERM.
graceful_timeout = int(settings.front.graceful_timeout)
# Also the deadline for the next request's headers on a connection (the gevent worker's).
keepalive = 5

# No gunicornc control socket: its default path is shared by every gunicorn of the user
# (tests run several at once) and a container has nobody to use it.
control_socket_disable = True

# Logs go to stdout/stderr, where Heroku and Docker collect them.
accesslog = server.access_log or None
errorlog = "-"
loglevel = settings.api.log_level.lower()

# Prometheus multiprocess mode: every worker writes its metrics to files in this folder and
# /metrics adds them up. It has to be set before the workers import prometheus_client, and
# start empty.
_own_metrics_dir = server.prometheus_multiproc_dir is None
metrics_dir = str(server.prometheus_multiproc_dir or "") or tempfile.mkdtemp(
    prefix="breedrecognizer-metrics-"
)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

# The bot's ledger of answered updates, shared by the workers of this server when no
# REDIS_URL is set (service/telegram_bot/ledger.py).
_own_seen_db = settings.telegram.seen_db is None and not settings.state.redis_url
_seen_dir = tempfile.mkdtemp(prefix="breedrecognizer-telegram-") if _own_seen_db else ""
if _own_seen_db:
    os.environ["TELEGRAM_SEEN_DB"] = os.path.join(_seen_dir, "seen.sqlite")

# The photos kept for feedback, shared by the workers of this server when no REDIS_URL is set
# (service/feedback/recent.py).
_own_recent_dir = (
    settings.feedback.uri is not None
    and settings.feedback.recent_dir is None
    and not settings.state.redis_url
)
_recent_dir = tempfile.mkdtemp(prefix="breedrecognizer-recent-") if _own_recent_dir else ""
if _own_recent_dir:
    os.environ["FEEDBACK_RECENT_DIR"] = _recent_dir

# Connections each worker holds, shared so that a new one goes to the least busy worker
# (service/front/balance.py). Twice the workers: a reload starts new ones before the old end.
connection_board = ConnectionBoard(2 * workers + 1) if workers > 1 else None


def on_starting(server):
    os.makedirs(metrics_dir, exist_ok=True)
    for name in os.listdir(metrics_dir):
        if name.endswith(".db"):
            os.unlink(os.path.join(metrics_dir, name))
    server.log.info(
        "workers=%s, MODEL_THREADS=%s per worker, metrics in %s",
        workers,
        model_threads,
        metrics_dir,
    )


def post_fork(server, worker):
    """In the new worker, before it loads anything: freed photo memory goes back at once."""
    from model.memory import return_freed_memory

    return_freed_memory()


def pre_fork(server, worker):
    """Give the worker about to start a slot of the connection board (in the master)."""
    if connection_board is not None:
        taken = {getattr(w, "board_slot", None) for w in server.WORKERS.values()}
        worker.board_slot = connection_board.claim(taken)
        worker.connection_board = connection_board


def child_exit(server, worker):
    """A dead worker's live gauges and held connections must not count any more."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
    slot = getattr(worker, "board_slot", None)
    if connection_board is not None and slot is not None:
        connection_board.release(slot)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if _own_seen_db:
        shutil.rmtree(_seen_dir, ignore_errors=True)
    if _own_recent_dir:
        shutil.rmtree(_recent_dir, ignore_errors=True)
