"""The images, built from the Dockerfile with podman and run for real.

Two builds (module fixtures): the default, ONNX-only image and the TorchScript-capable one
(``--build-arg SERVING=torchscript``). The running default image is checked the way a platform
uses it: ``-e PORT=…``, the image's own HEALTHCHECK command until it succeeds, a prediction on
a generated JPEG, no torch or training package inside, the processes' user and the model's
readability, slow uploads (tests/support/slow_clients.py) not stopping the service, the
hostile uploads (tests/support/hostile_inputs.py) with the bot on inside ``--memory 512m`` (the
platform's limit for all processes: no OOM kill, no worker lost, JSON 4xx or answers), a
graceful stop, a TorchScript artifact refused with the one line that names what to install,
and a bad ``MODEL_SHA256`` (non-zero exit, one line naming the cause). The TorchScript image
serves the ``.pt`` on request (``MODEL_URI=…pt``). A fresh ``make run`` virtualenv
(requirements.txt only) is measured too. When no test failed, the ``served`` fixture's
teardown writes both builds' times and sizes, the default image's biggest parts, its cold
start, a prediction and the virtualenv's size to results/container.md (a report, not a test).
Containers and images are removed afterwards; the local base images stay cached
(container/base-image.sh).

How the build differs from a build elsewhere, and why:
- The bases are local Debian 12 + Python 3.11 images made by debootstrap (no image registry
  is reachable here), passed in as ``BASE_IMAGE`` (with venv and pip, for the build stage) and
  ``RUNTIME_IMAGE`` (Python only, for the served image); both default to
  ``python:3.11-slim``.
- The CPU-only torch index (download.pytorch.org/whl/cpu) is not reachable from this machine,
  so the TorchScript build's ``TORCH_INDEX_URL`` is the normal index: the same pinned torch
  version, but the CUDA build (it runs on CPU just the same; that image is several GB bigger,
  see results/container.md). The default image has no torch at all.
- TLS to the package registries passes through this machine's certificate bundle, and pip here
  has a local mirror (file:// indexes). Both reach the build as read-only ``podman build
  --volume`` mounts with a pip.conf that names them: build-time only, nothing of it is
  written into the image, and the Dockerfile needs no line for it.
- ``podman --runtime runc`` and ulimits no higher than the current ones (crun and raised
  rlimits fail on this kernel); ``--network host`` because only the host network reaches the
  registries.

Slow: the default build takes a minute or two, the TorchScript one several minutes (torch with
its CUDA wheels). `.ci/run` installs podman, runc and debootstrap; without them, or without a
working podman, the tests skip.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from model.defaults import FP32_MODEL, INT8_MODEL, SHIPPED_MODEL
from model.precision import cpu_model
from service.loading import choose_artifact
from service.settings import ModelSettings
from tests.support.artifacts import shipped_metadata
from tests.support.fake_telegram import FakeTelegram, bot_photo
from tests.support.gunicorn_server import REPO_ROOT, free_port
from tests.support.hostile_inputs import Upload, hostile_uploads, phone_uploads
from tests.support.photos import jpeg_bytes
from tests.support.slow_clients import check_slow_clients
from training.reports.markdown import table

BASE_IMAGE_SCRIPT = REPO_ROOT / "container" / "base-image.sh"
RESULTS = REPO_ROOT / "results" / "container.md"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
NORMAL_INDEX = "https://pypi.org/simple"
# Not above this machine's limits: runc may not raise rlimits beyond the current ones.
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
PODMAN = ["podman", "--runtime", "runc"]
BUILD_TIMEOUT_S = 1800
START_TIMEOUT_S = 120
BAD_SHA256 = "0" * 64
DEFAULT_IMAGE_MAX_BYTES = 400_000_000
# requirements.txt installed by `make run`: 299 MB before the client limits' flask-limiter
# and limits (+3 MB with what they pull in).
MAKE_RUN_VENV_MAX_MB = 310
# What Heroku's Basic/Standard-1X dyno and Cloud Run's default instance give all processes.
PLATFORM_MEMORY = "512m"
WEBHOOK_SECRET = "container-secret_0123456789"


def in_container(test: Callable) -> Callable:
    """Marks a test that needs the built image: slow, and it may pay for the whole build."""
    return pytest.mark.slow(pytest.mark.timeout(BUILD_TIMEOUT_S + 600)(test))


def test_heroku_runs_what_the_image_runs() -> None:
    """heroku.yml's ``run: web:`` repeats the CMD (Heroku does not use the image's CMD)."""
    cmd_line = next(
        line
        for line in (REPO_ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("CMD ")
    )
    heroku = (REPO_ROOT / "heroku.yml").read_text().splitlines()
    web = next(line for line in heroku if line.strip().startswith("web: gunicorn"))
    assert shlex.split(web.split("web:", 1)[1]) == json.loads(cmd_line.removeprefix("CMD "))


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} -> {result.returncode}\n{result.stderr}")
    return result


def podman_unusable() -> str | None:
    """Why podman cannot build and run images here, or None when it can."""
    if shutil.which("podman") is None or shutil.which("runc") is None:
        return "podman and runc are not installed (.ci/run installs them with apt)"
    info = subprocess.run([*PODMAN, "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return f"podman cannot run here: {info.stderr.strip()[-300:]}"
    return None


def local_pip_mirrors() -> list[Path]:
    """Folders of this machine's file:// pip indexes (each holds ``simple/`` and the files)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.extra-index-url"],
        capture_output=True,
        text=True,
        check=False,
    )
    urls = result.stdout.split() if result.returncode == 0 else []
    paths = [Path(urlparse(url).path) for url in urls if url.startswith("file://")]
    return [path.parent for path in paths if path.is_dir()]


def build_mounts(tmp: Path) -> list[str]:
    """``--volume`` options: the CA bundle, the local mirrors and a pip.conf that uses them."""
    mirrors = local_pip_mirrors()
    lines = ["[global]"]
    volumes: list[str] = []
    if HOST_CA_BUNDLE.is_file():
        lines.append(f"cert = {HOST_CA_BUNDLE}")
        volumes.append(f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro")
    if mirrors:
        lines.append("extra-index-url = " + " ".join(f"file://{m}/simple" for m in mirrors))
        volumes += [f"{m}:{m}:ro" for m in mirrors]
    pip_conf = tmp / "pip.conf"
    pip_conf.write_text("\n".join(lines) + "\n")
    volumes.append(f"{pip_conf}:/etc/pip.conf:ro")
    return [option for volume in volumes for option in ("--volume", volume)]


@dataclass
class BuiltImage:
    name: str
    bases: tuple[str, str]  # (build stage, served image)
    build_seconds: float
    size_bytes: int
    parts_mb: dict[str, int]


@dataclass
class Report:
    """Figures the fixtures and tests gather for results/container.md."""

    default: BuiltImage | None = None
    torchscript: BuiltImage | None = None
    make_run_venv_mb: int | None = None
    hostile_peak_mb: float | None = None  # the container's cgroup peak, hostile uploads


@pytest.fixture(scope="module")
def report() -> Report:
    return Report()


@pytest.fixture(scope="module")
def base_images() -> tuple[str, str]:
    """(build stage base, served image base), made once by container/base-image.sh."""
    reason = podman_unusable()
    if reason:
        pytest.skip(reason)
    names = []
    for kind in ("build", "runtime"):
        base = subprocess.run(
            [str(BASE_IMAGE_SCRIPT), kind], capture_output=True, text=True, timeout=900, check=False
        )
        assert base.returncode == 0, f"{kind} base image: {base.stderr[-3000:]}"
        names.append(base.stdout.strip().splitlines()[-1])
    return names[0], names[1]


def size_breakdown(name: str, packages: dict[str, str]) -> dict[str, int]:
    """MB of the image's venv and of each named group of site-packages folders (globs)."""
    site = "/opt/venv/lib/python3.11/site-packages"
    # Separate du runs: one du counts a folder inside an already counted one as nothing.
    script = f"cd {site} && du -sm /opt/venv" + "".join(
        f" && du -smc {globs} | tail -1" for globs in packages.values()
    )
    out = podman("run", "--rm", *ULIMITS, "--entrypoint", "sh", name, "-c", script)
    sizes = [int(line.split()[0]) for line in out.stdout.splitlines()]
    return dict(zip(["venv", *packages], sizes, strict=True))


@contextmanager
def built(
    tmp: Path, bases: tuple[str, str], build_args: dict[str, str], parts: dict[str, str]
) -> Iterator[BuiltImage]:
    """The Dockerfile built with ``build_args`` (then removed); its size and biggest parts."""
    name = f"localhost/breedrecognizer-test:{uuid.uuid4().hex[:12]}"
    args = {"BASE_IMAGE": bases[0], "RUNTIME_IMAGE": bases[1], **build_args}
    started = time.monotonic()
    build = podman(
        "build",
        "--format=docker",  # the OCI format has no HEALTHCHECK
        "--layers=false",  # no intermediate images left behind
        "--network=host",
        *ULIMITS,
        *build_mounts(tmp),
        *[option for key, value in args.items() for option in ("--build-arg", f"{key}={value}")],
        "--tag",
        name,
        str(REPO_ROOT),
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    build_seconds = time.monotonic() - started
    try:
        assert build.returncode == 0, f"build failed:\n{build.stdout[-4000:]}\n{build.stderr}"
        size = int(podman("image", "inspect", "--format", "{{.Size}}", name).stdout)
        yield BuiltImage(name, bases, build_seconds, size, size_breakdown(name, parts))
    finally:
        podman("rmi", "--force", name, check=False)


@pytest.fixture(scope="module")
def image(
    base_images: tuple[str, str], report: Report, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BuiltImage]:
    """The default image: ONNX artifacts only."""
    tmp = tmp_path_factory.mktemp("container-build")
    with built(tmp, base_images, {}, {"onnxruntime": "onnxruntime", "numpy": "numpy*"}) as it:
        report.default = it
        yield it


@pytest.fixture(scope="module")
def torchscript_image(
    base_images: tuple[str, str], report: Report, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BuiltImage]:
    """``--build-arg SERVING=torchscript``, torch from the normal index (see above)."""
    tmp = tmp_path_factory.mktemp("container-build-torchscript")
    args = {"SERVING": "torchscript", "TORCH_INDEX_URL": NORMAL_INDEX}
    parts = {"torch": "torch", "cuda_only": "nvidia* triton cuda*"}
    with built(tmp, base_images, args, parts) as it:
        report.torchscript = it
        yield it


def run_detached(
    image: BuiltImage,
    *env: str,
    volumes: tuple[str, ...] = (),
    options: tuple[str, ...] = (),
) -> tuple[str, int]:
    """Start the image with ``-e PORT=<free port>`` (and ``env``, and podman ``options``);
    (container id, port)."""
    port = free_port()
    env_options = [option for item in env for option in ("--env", item)]
    cid = podman(
        "run",
        "--detach",
        "--network=host",  # the service's own bind on $PORT is what the host reaches
        *ULIMITS,
        "--env",
        f"PORT={port}",
        *env_options,
        *[option for volume in volumes for option in ("--volume", volume)],
        *options,
        image.name,
    ).stdout.strip()
    return cid, port


def run_until_exit(image: BuiltImage, *env: str, volumes: tuple[str, ...] = ()):
    """Run the image in the foreground, for starts that must fail; the finished process.

    One worker: when a second worker also fails to boot while the master is halting, gunicorn
    27 raises its HaltServer again from the halt and prints that traceback (its own, not the
    service's), which would hide whether the service's refusal is the one clean line.
    """
    return podman(
        "run",
        "--env",
        "WEB_CONCURRENCY=1",
        "--rm",
        "--network=host",
        *ULIMITS,
        "--env",
        f"PORT={free_port()}",
        *[option for item in env for option in ("--env", item)],
        *[option for volume in volumes for option in ("--volume", volume)],
        image.name,
        timeout=START_TIMEOUT_S,
        check=False,
    )


def wait_healthy(cid: str, timeout: float = START_TIMEOUT_S) -> float:
    """Run the image's HEALTHCHECK command until it succeeds; seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        state = podman("inspect", "--format", "{{.State.Status}}", cid).stdout.strip()
        if state != "running":
            logs = podman("logs", cid, check=False)
            raise AssertionError(f"container {state} before healthy:\n{logs.stdout}{logs.stderr}")
        if podman("healthcheck", "run", cid, check=False).returncode == 0:
            return time.monotonic() - started
    raise AssertionError(f"not healthy after {timeout:.0f}s:\n{podman('logs', cid).stderr}")


@dataclass
class Served:
    cid: str
    base_url: str
    cold_start_seconds: float


@pytest.fixture(scope="module")
def served(image: BuiltImage, report: Report, request: pytest.FixtureRequest) -> Iterator[Served]:
    """The default image running with its defaults; the figures go to results/container.md
    afterwards, unless a test failed meanwhile (then they may describe a broken image) or
    some were not measured (a selection of the tests ran)."""
    failed_before = request.session.testsfailed
    started = time.monotonic()
    cid, port = run_detached(image)
    try:
        wait_healthy(cid)
        running = Served(cid, f"http://127.0.0.1:{port}", time.monotonic() - started)
        yield running
        if request.session.testsfailed == failed_before:
            write_report(report, running)
    finally:
        podman("rm", "--force", "--time=0", cid, check=False)


def predict(base_url: str) -> dict:
    response = requests.post(
        f"{base_url}/predict", files={"image": ("dog.jpg", jpeg_bytes())}, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json()


@in_container
def test_predicts_a_breed_on_port_from_env(served: Served) -> None:
    body = predict(served.base_url)
    assert body["model"]["name"] == shipped_metadata().name
    assert body["model"]["backend"] == "onnxruntime"
    logs = podman("logs", served.cid)
    chosen = Path(choose_artifact(ModelSettings(uri=None, precision="auto"))[0]).name
    assert f"from /app/model/{chosen}" in logs.stdout + logs.stderr  # as chosen on this CPU
    assert body["model"]["chosen_because"].startswith("auto: ")
    breeds = {breed.name for breed in shipped_metadata().classes}
    assert len(body["top_k"]) == 3 and all(item["name"] in breeds for item in body["top_k"])


@in_container
def test_holds_no_torch_and_no_training_dependencies(served: Served) -> None:
    for package in ("torch", "timm", "torchvision", "onnx", "pip"):
        probe = podman("exec", served.cid, "python", "-c", f"import {package}", check=False)
        assert probe.returncode != 0, f"{package} must not be in the served image"
    models = podman("exec", served.cid, "ls", "/app/model").stdout.split()
    assert {FP32_MODEL.name, INT8_MODEL.name} <= set(models), models
    assert SHIPPED_MODEL.name not in models, models


@in_container
def test_default_image_is_at_most_400_mb(image: BuiltImage) -> None:
    assert image.size_bytes <= DEFAULT_IMAGE_MAX_BYTES, f"{image.size_bytes / 1e6:,.0f} MB"


@in_container
def test_runs_as_non_root_and_reads_the_model(served: Served) -> None:
    users = podman("top", served.cid, "user", "args").stdout.splitlines()[1:]
    assert users and all(line.split()[0] == "app" for line in users), users
    probe = podman(
        "exec",
        served.cid,
        "python",
        "-c",
        "import os, pathlib; print(os.getuid()); "
        "[p.read_bytes() for p in pathlib.Path('/app/model').iterdir() if p.is_file()]",
    )
    assert int(probe.stdout) != 0


@in_container
def test_slow_uploads_do_not_stop_the_service(served: Served) -> None:
    """Through the image's own gunicorn config and worker, as a platform runs it."""
    print(check_slow_clients(served.base_url).summary())


def cgroup_memory_peak(cid: str) -> int:
    """Bytes: the container's memory cgroup peak (cgroup v2 ``memory.peak``, else v1's)."""
    script = (
        "cat /sys/fs/cgroup/memory.peak 2>/dev/null"
        " || cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes"
    )
    return int(podman("exec", cid, "sh", "-c", script).stdout.split()[0])


def post_upload(base_url: str, upload: Upload) -> tuple[str, int, dict]:
    response = requests.post(f"{base_url}/predict", files=upload.files(), timeout=120)
    return upload.name, response.status_code, response.json()


@in_container
def test_holds_in_512_mb_under_hostile_uploads(image: BuiltImage, report: Report) -> None:
    """Both workers busy with the worst uploads at once and the bot answering 12 MP HEICs,
    inside the platform's 512 MB for all processes: no OOM kill, no worker replaced, every
    answer JSON (an answer or a 4xx)."""
    uploads = [*hostile_uploads(), *phone_uploads()]
    heic = next(u for u in phone_uploads() if u.name.endswith(".heic"))
    with FakeTelegram() as fake:
        env = {**fake.env(), "TELEGRAM_SECRET_TOKEN": WEBHOOK_SECRET}
        limit = ("--memory", PLATFORM_MEMORY, "--memory-swap", PLATFORM_MEMORY)
        cid, port = run_detached(image, *(f"{k}={v}" for k, v in env.items()), options=limit)
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(cid)
            with ThreadPoolExecutor(4) as pool:
                bot = [
                    pool.submit(bot_photo, base_url, fake, heic.data, n, WEBHOOK_SECRET)
                    for n in (1, 2)
                ]
                answers = list(pool.map(partial(post_upload, base_url), uploads * 2))
                bot_statuses = [future.result() for future in bot]
            state = podman("inspect", "--format", "{{.State.Status}} {{.State.OOMKilled}}", cid)
            logs = podman("logs", cid)
            report.hostile_peak_mb = cgroup_memory_peak(cid) / 2**20
        finally:
            podman("rm", "--force", "--time=0", cid, check=False)
    assert state.stdout.split() == ["running", "false"]
    log_text = logs.stdout + logs.stderr
    assert log_text.count("Booting worker") == 2, log_text[-3000:]  # none replaced
    for name, status, body in answers:
        assert status in (200, 413, 422), (name, status, body)
        assert ("verdict" in body) if status == 200 else body["error"]["code"], (name, body)
    assert bot_statuses == [200, 200]
    assert len(fake.calls("sendMessage")) >= 2  # the bot answered both photos
    print(f"cgroup peak under hostile uploads: {report.hostile_peak_mb:.0f} MB")


@in_container
def test_stops_gracefully(image: BuiltImage) -> None:
    cid, _ = run_detached(image)
    try:
        wait_healthy(cid)
        podman("stop", "--time=30", cid, timeout=60)
        exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", cid).stdout.strip()
        assert exit_code == "0", podman("logs", cid).stderr
    finally:
        podman("rm", "--force", "--time=0", cid, check=False)


@in_container
def test_refuses_a_torchscript_artifact_naming_what_to_install(image: BuiltImage) -> None:
    """A .pt of one's own (mounted here) cannot be served without torch: one line says so."""
    mounted = f"/models/{SHIPPED_MODEL.name}"
    run = run_until_exit(image, f"MODEL_URI={mounted}", volumes=(f"{SHIPPED_MODEL}:{mounted}:ro",))
    assert run.returncode != 0
    logs = run.stdout + run.stderr
    causes = [line for line in logs.splitlines() if "refusing to start" in line]
    hint = "TorchScript artifacts need torch: pip install -r requirements-torchscript.txt"
    assert causes and all(line.endswith(f"{mounted}: {hint}") for line in causes), logs
    assert "Traceback" not in logs


@in_container
def test_bad_model_sha256_exits_non_zero_with_the_cause(image: BuiltImage) -> None:
    run = run_until_exit(image, f"MODEL_SHA256={BAD_SHA256}")
    assert run.returncode != 0
    causes = [line for line in (run.stdout + run.stderr).splitlines() if "MODEL_SHA256" in line]
    assert any("refusing to start" in line and BAD_SHA256 in line for line in causes), causes


@in_container
def test_torchscript_image_serves_the_pt_on_request(torchscript_image: BuiltImage) -> None:
    cid, port = run_detached(torchscript_image, f"MODEL_URI=/app/model/{SHIPPED_MODEL.name}")
    try:
        wait_healthy(cid)
        assert predict(f"http://127.0.0.1:{port}")["model"]["backend"] == "torchscript"
    finally:
        podman("rm", "--force", "--time=0", cid, check=False)


@in_container
def test_torchscript_image_serves_an_onnx_copy_by_default(
    torchscript_image: BuiltImage,
) -> None:
    cid, port = run_detached(torchscript_image)
    try:
        wait_healthy(cid)
        assert predict(f"http://127.0.0.1:{port}")["model"]["backend"] == "onnxruntime"
    finally:
        podman("rm", "--force", "--time=0", cid, check=False)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_make_run_virtualenv_stays_small(report: Report, tmp_path: Path) -> None:
    """What `make run` installs: a fresh virtualenv with requirements.txt only."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", "requirements.txt"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    probe = [str(venv / "bin" / "python"), "-c", "import torch"]
    assert subprocess.run(probe, capture_output=True, check=False).returncode != 0
    du = subprocess.run(["du", "-sm", str(venv)], capture_output=True, text=True, check=True)
    report.make_run_venv_mb = int(du.stdout.split()[0])
    assert report.make_run_venv_mb <= MAKE_RUN_VENV_MAX_MB


def write_report(report: Report, served: Served) -> None:
    """results/container.md: how both images were built, their sizes, the default image's
    cold start and an answer, and the size of the `make run` virtualenv."""
    default, torchscript, venv_mb = report.default, report.torchscript, report.make_run_venv_mb
    if default is None or torchscript is None or venv_mb is None:
        return
    body = predict(served.base_url)
    top = body["top_k"][0]
    podman_version = podman("version", "--format", "{{.Client.Version}}").stdout.strip()
    parts, torch_parts = default.parts_mb, torchscript.parts_mb
    rows = [
        ("Build time (no layer cache, base images cached)", f"{default.build_seconds:.0f} s"),
        ("Image size", f"{default.size_bytes / 1e6:,.0f} MB"),
        ("of which the virtualenv", f"{parts['venv']:,} MB"),
        ("of which onnxruntime", f"{parts['onnxruntime']:,} MB"),
        ("of which numpy (with its OpenBLAS)", f"{parts['numpy']:,} MB"),
        (
            "Cold start (`podman run` to first passing HEALTHCHECK)",
            f"{served.cold_start_seconds:.1f} s",
        ),
        (
            "`/predict` on a generated 320x240 JPEG (random texture, not a dog)",
            f"top-1 {top['name']} ({top['confidence']:.3f}), known: {body['known']}",
        ),
        ("TorchScript image: build time", f"{torchscript.build_seconds:.0f} s"),
        ("TorchScript image: size", f"{torchscript.size_bytes / 1e6:,.0f} MB"),
        ("of which the virtualenv", f"{torch_parts['venv']:,} MB"),
        ("of which torch", f"{torch_parts['torch']:,} MB"),
        (
            "of which CUDA-only packages (nvidia-*, triton, cuda-*)",
            f"{torch_parts['cuda_only']:,} MB",
        ),
        ("`make run` virtualenv (fresh, requirements.txt only)", f"{venv_mb:,} MB"),
    ]
    if report.hostile_peak_mb is not None:
        rows.insert(
            6,
            (
                f"Memory peak (cgroup, `--memory {PLATFORM_MEMORY}`, bot on) under the hostile "
                "and phone uploads, 4 at once",
                f"{report.hostile_peak_mb:,.0f} MB",
            ),
        )
    RESULTS.write_text(
        "# Container images (generated by `make container-test`; do not edit)\n\n"
        f"Built with podman {podman_version} (runc) from the Dockerfile on {cpu_model()}, "
        f"{os.cpu_count()} cores; build stage on `{default.bases[0]}`, served image on "
        f"`{default.bases[1]}` (Debian 12, Python 3.11, debootstrap). The default image "
        "serves ONNX artifacts only (no torch); the TorchScript image "
        "(`--build-arg SERVING=torchscript`) takes torch from the normal index here (the CUDA "
        "build: the CPU index is not reachable).\n\n" + table(["Figure", "Value"], rows) + "\n"
    )
    print(RESULTS.read_text())
