"""The naive baseline: how a typical first version serves the same model.

Flask, the eager timm network (the same zero-shot EfficientNet-Lite0 as the shipped
artifact), torchvision transforms per request, default torch threads, gunicorn defaults:

    WEB_CONCURRENCY=2 gunicorn benchmarks.naive_app:app

It exists only so ``benchmarks/bench.py`` can measure our service against it in the same
run; it is not part of the product and has none of its checks.
"""

from __future__ import annotations

import torch
from flask import Flask, jsonify, request
from PIL import Image
from torchvision import transforms

from model.metadata import IMAGEWOOF_CLASSES
from training.lab.network import build_breed_model
from training.lab.weights import pretrained_mean_std

ARCH = "tf_efficientnet_lite0"

app = Flask(__name__)
model = build_breed_model(ARCH).eval()  # untrained breed head = the zero-shot model
mean, std = pretrained_mean_std(ARCH)
transform = transforms.Compose(
    [
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ]
)
print("naive app ready", flush=True)  # the benchmark counts these lines to see all workers up


@app.post("/predict")
def predict():
    image = Image.open(request.files["image"].stream).convert("RGB")
    batch = transform(image).unsqueeze(0)
    with torch.no_grad():
        logits = model(batch)[0, : len(IMAGEWOOF_CLASSES)]
    probs = torch.softmax(logits, dim=0)
    values, indices = probs.topk(3)
    top_k = [
        {"wnid": IMAGEWOOF_CLASSES[i].wnid, "name": IMAGEWOOF_CLASSES[i].name, "confidence": v}
        for v, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]
    return jsonify({"breed": top_k[0], "top_k": top_k})


@app.get("/healthz")
@app.get("/readyz")
def healthz():
    return jsonify({"status": "ok"})
