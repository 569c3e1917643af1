// Upload page: preview the chosen photo, POST it to /predict, show the top-3 with bars.
"use strict";

const form = document.getElementById("upload-form");
const input = document.getElementById("image-input");
const button = document.getElementById("submit-button");
const preview = document.getElementById("preview");
const previewFigure = document.getElementById("preview-figure");
const result = document.getElementById("result");
const statusLine = document.getElementById("status");
const verdict = document.getElementById("verdict");
const topK = document.getElementById("top-k");

let previewUrl = null;

function clearResult() {
  statusLine.textContent = "";
  statusLine.className = "";
  verdict.hidden = true;
  verdict.textContent = "";
  topK.replaceChildren();
}

function percent(confidence) {
  return `${(confidence * 100).toFixed(1)}%`;
}

function showPrediction(body) {
  clearResult();
  verdict.hidden = false;
  if (body.known) {
    verdict.className = "known";
    verdict.textContent = `${body.breed.name} (${percent(body.breed.confidence)})`;
  } else {
    verdict.className = "unknown";
    verdict.textContent = "Not one of my breeds";
  }
  for (const item of body.top_k) {
    const li = document.createElement("li");
    li.className = "breed";
    const label = document.createElement("span");
    label.className = "breed-name";
    label.textContent = `${item.name} — ${percent(item.confidence)}`;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("role", "img");
    bar.setAttribute("aria-label", `${item.name}: ${percent(item.confidence)}`);
    const fill = document.createElement("span");
    fill.style.width = percent(item.confidence);
    bar.appendChild(fill);
    li.append(label, bar);
    topK.appendChild(li);
  }
}

function showError(message) {
  clearResult();
  statusLine.className = "error";
  statusLine.textContent = message;
}

input.addEventListener("change", () => {
  clearResult();
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  const file = input.files[0];
  if (!file) {
    previewFigure.hidden = true;
    return;
  }
  previewUrl = URL.createObjectURL(file);
  preview.src = previewUrl;
  previewFigure.hidden = false;
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = input.files[0];
  if (!file) {
    showError("Choose a photo first.");
    return;
  }
  const data = new FormData();
  data.append("image", file);
  button.disabled = true;
  result.setAttribute("aria-busy", "true");
  clearResult();
  statusLine.textContent = "Looking at your photo…";
  try {
    const response = await fetch("/predict?top_k=3", { method: "POST", body: data });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
      showError(`Sorry: ${message}`);
    } else {
      showPrediction(body);
    }
  } catch (err) {
    showError(`Sorry: the server could not be reached (${err.message}).`);
  } finally {
    button.disabled = false;
    result.setAttribute("aria-busy", "false");
  }
});
