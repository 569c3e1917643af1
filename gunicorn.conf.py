"""gunicorn settings for BreedRecognizer (read by ``gunicorn -c gunicorn.conf.py``).

Every value comes from an environment variable with a default that suits one small
container (Heroku dyno). Start it with the app factory: ``gunicorn -c gunicorn.conf.py
'app:create_app()'``.
"""

import os
import shutil
import tempfile

from service.front.config import FrontConfig


def _cpu_count() -> int:
    """CPUs this process may use (the affinity mask respects container CPU limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# Listen on $PORT on every interface (Heroku and Docker set PORT; HOST narrows it locally).
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"

# Each worker holds its own copy of the model and runs it in one app thread; its connections
# are greenlets that read request bodies under deadlines first, so slow clients never hold the
# model (service/front/, docs/front.md). Nothing is monkey-patched.
front = FrontConfig.from_env()
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "service.front.worker.FrontWorker"
worker_connections = front.worker_connections

# Split the cores between workers so they don't oversubscribe them: each worker's
# torch/onnxruntime intra-op pool gets cores // workers threads (the model reads
# MODEL_THREADS). An explicit MODEL_THREADS wins.
# Measured on the 2-core dev machine with ONNX Runtime: one worker with 2 threads runs the
# model in ~8.3 ms (~120 photos/s), two workers with 1 thread each in ~10-11 ms each (~180-200
# photos/s together), so workers × threads = cores with one thread per worker gives the most
# throughput; more threads than cores (e.g. torch's default of all cores in every worker)
# makes it several times slower (the naive baseline: ~9 rps). Micro-batching concurrent
# requests does not pay here (batch 4 ≈ batch 1 photos/s); see results/bench/SUMMARY.md.
if not os.environ.get("MODEL_THREADS", "").strip():
    os.environ["MODEL_THREADS"] = str(max(1, _cpu_count() // workers))
if not os.environ.get("OMP_NUM_THREADS", "").strip():
    os.environ["OMP_NUM_THREADS"] = os.environ["MODEL_THREADS"]

# No preload: the model is loaded in each worker after the fork (create_app runs there),
# because forking a process that has already started torch's thread pools is unsafe.
preload_app = False

# Heroku's router gives up after 30 s; a stuck worker is killed and replaced before that.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "25"))
# SIGTERM: workers drain (503 to new requests, finish the app's and the bot's work) for up to
# this long; Heroku sends SIGKILL 30 s after SIGTERM.
graceful_timeout = int(front.graceful_timeout_s)
# Also the deadline for the next request's headers on a connection (the gevent worker's).
keepalive = 5

# No gunicornc control socket: its default path is shared by every gunicorn of the user
# (tests run several at once) and a container has nobody to use it.
control_socket_disable = True

# Logs go to stdout/stderr, where Heroku and Docker collect them.
accesslog = os.environ.get("ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# Prometheus multiprocess mode: every worker writes its metrics to files in this folder and
# /metrics adds them up. It has to be set before the workers import prometheus_client, and
# start empty.
_own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="breedrecognizer-metrics-")

# Telegram update ids already taken, shared by the workers so a redelivered update is answered
# once (service/telegram_bot/seen.py).
_own_seen_db = "TELEGRAM_SEEN_DB" not in os.environ
if _own_seen_db:
    _seen_dir = tempfile.mkdtemp(prefix="breedrecognizer-telegram-")
    os.environ["TELEGRAM_SEEN_DB"] = os.path.join(_seen_dir, "seen.sqlite")


def on_starting(server):
    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(metrics_dir, exist_ok=True)
    for name in os.listdir(metrics_dir):
        if name.endswith(".db"):
            os.unlink(os.path.join(metrics_dir, name))
    server.log.info(
        "workers=%s, MODEL_THREADS=%s per worker, metrics in %s",
        workers,
        os.environ["MODEL_THREADS"],
        metrics_dir,
    )


def child_exit(server, worker):
    """A dead worker's live gauges must not count any more."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    if _own_seen_db:
        shutil.rmtree(_seen_dir, ignore_errors=True)
