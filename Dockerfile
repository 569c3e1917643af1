# BreedRecognizer web service: one CPU-only container (Heroku container stack or plain Docker).
# Two stages: `build` installs the serving requirements into a virtualenv; the served image gets
# only that virtualenv (no pip, no pip cache, no build-only packages) and the app.
# docs/deploy.md has the build and run commands.

# Any Debian-based image with Python 3.11 works (`podman build --build-arg BASE_IMAGE=...`).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# The CPU-only torch wheels: no CUDA libraries, a far smaller image.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# A virtualenv: Debian's own python3 refuses system-wide pip installs (PEP 668), and the
# served image copies this one folder.
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/
RUN pip install --index-url "$TORCH_INDEX_URL" "$(grep '^torch==' /tmp/requirements.txt)" \
    && pip install -r /tmp/requirements.txt \
    && pip uninstall --yes pip setuptools

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PORT=8000
RUN useradd --create-home --uid 10001 app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY app.py gunicorn.conf.py ./
COPY model/ model/
COPY service/ service/
# Workers serve the shipped static-int8 ONNX artifact (torch is never imported; figures in
# docs/benchmark.md). MODEL_URI=... overrides it, e.g.
# MODEL_URI=/app/model/efficientnet_lite0_imagewoof.pt serves the TorchScript artifact.
ENV MODEL_URI=/app/model/efficientnet_lite0_imagewoof.int8.onnx

USER app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/readyz', timeout=4)"
# gunicorn.conf.py binds 0.0.0.0:$PORT and sizes workers/threads from the environment.
CMD ["gunicorn", "--config", "gunicorn.conf.py", "app:create_app()"]
