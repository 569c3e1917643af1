# BreedRecognizer web service: one CPU-only container (Heroku container stack or plain Docker).
# Two stages: `build` installs the serving requirements into a virtualenv; the served image gets
# only that virtualenv (no pip, no pip cache, no build-only packages) and the app.
# docs/deploy.md has the build and run commands.
#
# SERVING picks what the image can serve:
#   onnx (default)  ONNX artifacts only (the shipped fp32 and int8 copies), no torch
#   torchscript     ONNX and TorchScript (MODEL_URI=...pt): adds torch from TORCH_INDEX_URL
#                   and the shipped .pt artifact

# Any Debian-based image with Python 3.11 works (`podman build --build-arg BASE_IMAGE=...`);
# RUNTIME_IMAGE must have the same Python at the same path (the virtualenv links to it), and
# needs no pip or build tools.
ARG BASE_IMAGE=python:3.11-slim
ARG RUNTIME_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG SERVING=onnx
# The CPU-only torch wheels: no CUDA libraries, a far smaller image.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# A virtualenv: Debian's own python3 refuses system-wide pip installs (PEP 668), and the
# served image copies this one folder.
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt requirements-torchscript.txt /tmp/
# Nothing imports the test suite numpy ships inside its package.
RUN case "$SERVING" in \
        onnx) ;; \
        torchscript) pip install --no-compile --index-url "$TORCH_INDEX_URL" \
            "$(grep '^torch==' /tmp/requirements-torchscript.txt)" ;; \
        *) echo "SERVING must be onnx or torchscript, not '$SERVING'" >&2; exit 1 ;; \
    esac \
    && if [ "$SERVING" = onnx ]; then requirements=requirements.txt; \
       else requirements=requirements-$SERVING.txt; fi \
    && pip install --no-compile -r "/tmp/$requirements" \
    && pip uninstall --yes pip setuptools \
    && site=$(echo /opt/venv/lib/python3*/site-packages) \
    && rm -rf "$site"/numpy/*/tests "$site"/numpy/tests

WORKDIR /app
COPY app.py gunicorn.conf.py ./
COPY model/ model/
COPY service/ service/
# The ONNX-only image cannot serve the TorchScript artifact, so it does not carry it.
RUN if [ "$SERVING" = onnx ]; then rm model/*.pt; fi
# Bytecode made here, checked against the source's hash rather than its timestamp: copying to
# the served image changes timestamps, and there (non-root, PYTHONDONTWRITEBYTECODE) every
# worker would otherwise compile every module again at each start. torch's own test helpers
# are skipped: one holds Python 3.12 syntax, and serving never imports them.
RUN python -m compileall -q -j 0 --invalidation-mode checked-hash \
        -x '/torch/testing/_internal/' /opt/venv /app

FROM ${RUNTIME_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PORT=8000
RUN useradd --create-home --uid 10001 app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
# Workers serve the shipped ONNX copy that MODEL_PRECISION picks for the CPU (torch is never
# imported; docs/benchmark.md). MODEL_URI=... overrides it; in the torchscript image,
# MODEL_URI=/app/model/efficientnet_lite0_imagewoof.pt serves the TorchScript artifact.

USER app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/readyz', timeout=4)"
# gunicorn.conf.py binds 0.0.0.0:$PORT and sizes workers/threads from the environment.
CMD ["gunicorn", "--config", "gunicorn.conf.py", "app:create_app()"]
