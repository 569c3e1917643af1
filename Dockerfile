# BreedRecognizer web service: one CPU-only container (Heroku container stack or plain Docker).
# tests/test_docker_install.py replays the "# install:" RUN lines, the COPY lines and the CMD
# in a fresh virtualenv, so keep those lines self-contained.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

RUN useradd --create-home --uid 10001 app
WORKDIR /app

COPY requirements.txt ./
# install: the CPU-only torch wheel of the pinned version (no CUDA libraries: a far smaller image)
RUN pip install --index-url https://download.pytorch.org/whl/cpu "$(grep '^torch==' requirements.txt)"
# install: the rest of the serving requirements (the torch pin is already satisfied)
RUN pip install -r requirements.txt

COPY app.py gunicorn.conf.py ./
COPY model/ model/
COPY service/ service/

# build: derive the served ONNX artifact from the shipped TorchScript one (verified equal)
RUN python -m model.convert_onnx model/efficientnet_lite0_imagewoof.pt model/efficientnet_lite0_imagewoof.onnx
# Workers serve the ONNX artifact: ~165 MB RSS per worker and ~1 s cold start, against
# ~600 MB and ~3.5 s for TorchScript (torch is never imported). MODEL_URI=... overrides it.
ENV MODEL_URI=/app/model/efficientnet_lite0_imagewoof.onnx

USER app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/readyz', timeout=4)"
# gunicorn.conf.py binds 0.0.0.0:$PORT and sizes workers/threads from the environment.
CMD ["gunicorn", "--config", "gunicorn.conf.py", "app:create_app()"]
