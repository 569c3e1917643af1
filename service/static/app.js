// Upload page: take a photo (file, camera, drag-and-drop or paste), POST it to /predict, show
// the verdict (and what else the photo looks like: another breed, a wild canid, a cat) and the
// top-3 with bars, and, when the server takes them, the user's corrections.
"use strict";

// Every string the page shows, English and Russian ({name} is filled in). A key missing in
// Russian falls back to English; error_<code> keys name /predict errors (else the server's own
// English message is shown).
const STRINGS = {
  en: {
    intro: "Upload a dog photo: I recognise ten breeds ({breeds}); for another dog, a wild canid or a cat I say what it looks like.",
    photo_label: "Photo (JPEG, PNG, HEIC, WebP or GIF, up to {mb} MB)",
    drop_hint: "You can also drop a photo on this page or paste one.",
    submit: "Recognise breed",
    camera: "Take a photo",
    preview_alt: "Preview of the photo you chose",
    top_k_label: "Most likely breeds",
    model_word: "Model:",
    api_word: "API:",
    api_field: "with the field",
    choose_first: "Choose a photo first.",
    looking: "Looking at your photo…",
    sure: "{breed} ({confidence})",
    unsure: "I think it's {article} {breed}, but I'm not sure",
    unknown: "Not one of my breeds",
    lead_unknown: "Not one of my {count} breeds",
    lead_unsure: "Probably not one of my {count} breeds",
    looks_dog: "{lead} — it looks like {article} {name} ({confidence})",
    looks_dog_maybe: "{lead} — it may be {article} {name} ({confidence}), but I'm not sure",
    looks_wild: "{lead}: it looks like a wild animal — {name} ({confidence})",
    looks_wild_maybe: "{lead}: it may be a wild animal — {name} ({confidence}), but I'm not sure",
    looks_cat: "It's a cat — I recognise dogs ({name}, I'd say: {confidence})",
    looks_cat_maybe: "It may be a cat — I recognise dogs",
    bar: "{breed}: {confidence}",
    sorry: "Sorry: {message}",
    unreachable: "the server could not be reached ({detail}).",
    feedback_question: "Is this right?",
    feedback_kept: "Photos you correct are kept to improve the model, with nothing about you.",
    right: "Right",
    wrong: "Wrong",
    choose_breed: "Which breed is it?",
    none_of_these: "None of these",
    other_label: "Another breed or animal:",
    send: "Send",
    sending: "Sending…",
    thanks: "Thank you! Your answer is saved.",
    feedback_unknown_answer: "This answer is too old to correct: upload the photo again.",
    feedback_off: "This server no longer takes corrections.",
    feedback_failed: "Sorry, your answer could not be saved. Please try again in a minute.",
    feedback_unreachable: "Sorry, your answer could not be sent: the server could not be reached.",
  },
  ru: {
    intro: "Загрузите фото собаки: я узнаю десять пород ({breeds}); если на фото другая собака, дикий зверь из псовых или кошка, скажу, на кого это похоже.",
    photo_label: "Фото (JPEG, PNG, HEIC, WebP или GIF, до {mb} МБ)",
    drop_hint: "Фото можно и перетащить на страницу или вставить из буфера обмена.",
    submit: "Определить породу",
    camera: "Сфотографировать",
    preview_alt: "Выбранное фото",
    top_k_label: "Самые вероятные породы",
    model_word: "Модель:",
    api_word: "API:",
    api_field: "с полем",
    choose_first: "Сначала выберите фото.",
    looking: "Смотрю на фото…",
    unsure: "Думаю, это {breed}, но я не уверен",
    unknown: "Это не одна из моих пород",
    lead_unknown: "Это не одна из моих {count} пород",
    lead_unsure: "Скорее всего, это не одна из моих {count} пород",
    looks_dog: "{lead} — похоже, это {name} ({confidence})",
    looks_dog_maybe: "{lead} — возможно, это {name} ({confidence}), но я не уверен",
    looks_wild: "{lead}: похоже, это дикий зверь — {name} ({confidence})",
    looks_wild_maybe: "{lead}: возможно, это дикий зверь — {name} ({confidence}), но я не уверен",
    looks_cat: "Это кошка, а я узнаю собак (похоже, {name}: {confidence})",
    looks_cat_maybe: "Кажется, это кошка, а я узнаю собак",
    sorry: "Извините: {message}",
    unreachable: "сервер недоступен ({detail}).",
    feedback_question: "Я угадал?",
    feedback_kept: "Фото, которые вы исправили, сохраняются, чтобы модель училась; о вас — ничего.",
    right: "Верно",
    wrong: "Неверно",
    choose_breed: "Какая это порода?",
    none_of_these: "Ни одна из этих",
    other_label: "Другая порода или животное:",
    send: "Отправить",
    sending: "Отправляю…",
    thanks: "Спасибо! Ваш ответ сохранён.",
    feedback_unknown_answer: "Этот ответ уже слишком старый: загрузите фото ещё раз.",
    feedback_off: "Этот сервер больше не принимает исправления.",
    feedback_failed: "Извините, ответ не сохранился. Попробуйте через минуту.",
    feedback_unreachable: "Извините, ответ не отправлен: сервер недоступен.",
    error_not_an_image: "этот файл — не изображение в формате, который я умею читать",
    error_corrupt_image: "изображение повреждено, его не удаётся прочитать",
    error_image_too_small: "изображение слишком маленькое",
    error_image_too_large: "изображение слишком большое",
    error_payload_too_large: "файл слишком большой (не больше {mb} МБ)",
    error_empty_image: "файл пустой",
  },
};

const PAGE = JSON.parse(document.getElementById("page-data").textContent);
const LANG = (navigator.language || "en").toLowerCase().startsWith("ru") ? "ru" : "en";
const NONE_LABEL = "none";

const form = document.getElementById("upload-form");
const input = document.getElementById("image-input");
const button = document.getElementById("submit-button");
const cameraButton = document.getElementById("camera-button");
const cameraInput = document.getElementById("camera-input");
const preview = document.getElementById("preview");
const previewFigure = document.getElementById("preview-figure");
const result = document.getElementById("result");
const statusLine = document.getElementById("status");
const verdict = document.getElementById("verdict");
const topK = document.getElementById("top-k");
// Present only when the server takes corrections (FEEDBACK_URI).
const feedbackBox = document.getElementById("feedback");

let previewUrl = null;
let chosenFile = null;

function t(key, values = {}) {
  const text = STRINGS[LANG][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

function breedName(wnid, fallback) {
  const breed = PAGE.breeds.find((b) => b.wnid === wnid) || PAGE.others.find((b) => b.wnid === wnid);
  if (!breed) return fallback;
  return LANG === "ru" ? breed.name_ru : breed.name;
}

// Inside a Russian sentence a breed or species name is a common noun: lower case.
function nameInSentence(wnid, fallback) {
  const name = breedName(wnid, fallback);
  return LANG === "ru" ? name.charAt(0).toLowerCase() + name.slice(1) : name;
}

function article(name) {
  return /^[aeiou]/i.test(name) ? "an" : "a";
}

function percent(confidence) {
  const format = { style: "percent", minimumFractionDigits: 1, maximumFractionDigits: 1 };
  return new Intl.NumberFormat(LANG, format).format(confidence);
}

function localisePage() {
  document.documentElement.lang = LANG;
  const values = {
    breeds: PAGE.breeds.map((b) => breedName(b.wnid, b.name)).join(", "),
    mb: new Intl.NumberFormat(LANG).format(PAGE.max_upload_mb),
  };
  for (const el of document.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n, values);
  }
  for (const el of document.querySelectorAll("[data-i18n-alt]")) el.alt = t(el.dataset.i18nAlt);
  for (const el of document.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  }
}

// ---- the answer -------------------------------------------------------------------------

function clearResult() {
  statusLine.textContent = "";
  statusLine.className = "";
  verdict.hidden = true;
  verdict.textContent = "";
  topK.replaceChildren();
  if (feedbackBox) feedbackBox.hidden = true;
}

// What else the photo looks like, as surely as its certainty allows: a cat's is its kind's share
// ("it's a cat" is about the kind), another breed's or canid's the class's; an unsure answer
// leads with "probably not one of my breeds".
function looksLikeText(other, kind) {
  const name = nameInSentence(other.wnid, other.name);
  const certainty = other.kind === "cat" ? other.kind_confidence : other.confidence;
  const plain = certainty >= PAGE.looks_like_plain;
  const lead = t(kind === "unsure" ? "lead_unsure" : "lead_unknown", { count: PAGE.breeds.length });
  const key = `looks_${other.kind}${plain ? "" : "_maybe"}`;
  return t(key, { lead, name, article: article(name), confidence: percent(other.confidence) });
}

function verdictText(body, kind) {
  if (body.looks_like) return looksLikeText(body.looks_like, kind);
  if (kind === "unknown" || !body.breed) return t("unknown");
  const breed = breedName(body.breed.wnid, body.breed.name);
  if (kind === "unsure") return t("unsure", { breed, article: article(breed) });
  return t("sure", { breed, confidence: percent(body.breed.confidence) });
}

// The label the answer named first: what it looks like, else its breed, else "none".
function namedLabel(body, kind) {
  if (body.looks_like) return body.looks_like.wnid;
  return kind === "unknown" || !body.breed ? NONE_LABEL : body.breed.wnid;
}

function topKItem(item) {
  const name = breedName(item.wnid, item.name);
  const li = document.createElement("li");
  li.className = "breed";
  const label = document.createElement("span");
  label.className = "breed-name";
  label.textContent = `${name} — ${percent(item.confidence)}`;
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.setAttribute("role", "img");
  bar.setAttribute("aria-label", t("bar", { breed: name, confidence: percent(item.confidence) }));
  const fill = document.createElement("span");
  fill.style.width = `${item.confidence * 100}%`;
  bar.appendChild(fill);
  li.append(label, bar);
  return li;
}

function showPrediction(body) {
  clearResult();
  const kind = body.verdict || (body.known ? "sure" : "unknown");
  verdict.hidden = false;
  verdict.className = kind;
  verdict.textContent = verdictText(body, kind);
  topK.replaceChildren(...body.top_k.map(topKItem));
  if (body.looks_like) verdict.classList.add("looks-like", body.looks_like.kind);
  if (feedbackBox && body.id) feedback.show(body.id, namedLabel(body, kind));
}

function showError(message) {
  clearResult();
  statusLine.className = "error";
  statusLine.textContent = message;
}

function predictError(response, body) {
  const error = body && body.error;
  if (!error) return t("sorry", { message: `HTTP ${response.status}` });
  const key = `error_${error.code}`;
  const mb = new Intl.NumberFormat(LANG).format(PAGE.max_upload_mb);
  return t("sorry", { message: key in STRINGS[LANG] ? t(key, { mb }) : error.message });
}

// ---- corrections ------------------------------------------------------------------------

// Right sends the label the answer named; Wrong opens the ten breeds, "None of these" and a
// list of every other breed, wild canid and cat the service names.
const feedback = {
  answerId: null,
  named: null,

  init() {
    this.question = document.getElementById("feedback-question");
    this.buttons = document.getElementById("feedback-buttons");
    this.choices = document.getElementById("feedback-choices");
    this.wrong = document.getElementById("feedback-wrong");
    this.status = document.getElementById("feedback-status");
    const list = document.getElementById("feedback-choice-list");
    const labels = PAGE.breeds.map((b) => [b.wnid, breedName(b.wnid, b.name)]);
    labels.push([NONE_LABEL, t("none_of_these")]);
    for (const [label, text] of labels) {
      const choice = document.createElement("button");
      choice.type = "button";
      choice.className = "choice";
      choice.dataset.label = label;
      choice.textContent = text;
      choice.addEventListener("click", () => this.send(label));
      list.appendChild(choice);
    }
    this.other = document.getElementById("feedback-other-select");
    const others = PAGE.others.map((b) => [b.wnid, breedName(b.wnid, b.name)]);
    others.sort((a, b) => a[1].localeCompare(b[1], LANG));
    for (const [label, text] of others) this.other.add(new Option(text, label));
    document.getElementById("feedback-other-send").addEventListener("click", () => {
      if (this.other.value) this.send(this.other.value);
    });
    document.getElementById("feedback-right").addEventListener("click", () => this.send(this.named));
    this.wrong.setAttribute("aria-expanded", "false");
    this.wrong.addEventListener("click", () => {
      this.choices.hidden = false;
      this.wrong.setAttribute("aria-expanded", "true");
      this.choices.querySelector("button").focus();
    });
  },

  show(answerId, named) {
    this.answerId = answerId;
    this.named = named;
    this.question.hidden = false;
    this.buttons.hidden = false;
    this.choices.hidden = true;
    this.wrong.setAttribute("aria-expanded", "false");
    this.setBusy(false);
    this.say("", "");
    feedbackBox.hidden = false;
  },

  setBusy(busy) {
    for (const el of feedbackBox.querySelectorAll("button")) el.disabled = busy;
  },

  say(text, kind) {
    this.status.textContent = text;
    this.status.className = kind;
  },

  async send(label) {
    const answerId = this.answerId;
    this.setBusy(true);
    this.say(t("sending"), "");
    let outcome;
    try {
      const response = await fetch("/feedback", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ id: answerId, label }),
      });
      const body = await response.json().catch(() => null);
      outcome = response.ok ? "thanks" : feedbackErrorKey(body);
    } catch (err) {
      outcome = "feedback_unreachable";
    }
    if (answerId !== this.answerId) return; // a newer answer is shown now
    const done = outcome !== "feedback_failed" && outcome !== "feedback_unreachable";
    if (done) {
      this.question.hidden = true;
      this.buttons.hidden = true;
      this.choices.hidden = true;
    } else {
      this.setBusy(false); // worth another try
    }
    this.say(t(outcome), outcome === "thanks" ? "thanks" : "error");
  },
};

function feedbackErrorKey(body) {
  const code = body && body.error ? body.error.code : "";
  if (code === "unknown_answer") return "feedback_unknown_answer";
  if (code === "feedback_off") return "feedback_off";
  return "feedback_failed";
}

// ---- choosing a photo ---------------------------------------------------------------------

function showPreview(file) {
  clearResult();
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
  previewFigure.hidden = true;
  if (!file) return;
  previewUrl = URL.createObjectURL(file);
  preview.src = previewUrl; // shown once it loads: some browsers cannot show HEIC
}

// A photo from the camera, a drop or a paste goes into the form's own input too, so the form
// (and its "required" check) sees the same file as a chosen one.
function chooseFile(file) {
  chosenFile = file;
  try {
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
  } catch (err) {
    input.required = false; // a browser that cannot set it: chosenFile is sent
  }
  showPreview(file);
}

function firstFile(transfer) {
  if (!transfer) return null;
  if (transfer.files && transfer.files.length) return transfer.files[0];
  for (const item of transfer.items || []) {
    if (item.kind === "file") return item.getAsFile();
  }
  return null;
}

function carriesFiles(event) {
  return Boolean(event.dataTransfer) && Array.from(event.dataTransfer.types).includes("Files");
}

function listenForDrops() {
  let depth = 0; // dragenter/dragleave fire for every child element crossed
  const settle = () => form.classList.toggle("dragging", depth > 0);
  document.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    depth += 1;
    settle();
  });
  document.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault(); // allows the drop
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", (event) => {
    if (!carriesFiles(event)) return;
    depth = Math.max(0, depth - 1);
    settle();
  });
  document.addEventListener("drop", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault(); // not opened by the browser in place of the page
    depth = 0;
    settle();
    const file = firstFile(event.dataTransfer);
    if (file) chooseFile(file);
  });
}

function listenForPastes() {
  document.addEventListener("paste", (event) => {
    const file = firstFile(event.clipboardData);
    if (!file) return; // pasting text stays ordinary
    event.preventDefault();
    chooseFile(file);
  });
}

async function submitPhoto(event) {
  event.preventDefault();
  const file = chosenFile || input.files[0];
  if (!file) {
    showError(t("choose_first"));
    return;
  }
  const data = new FormData();
  data.append("image", file);
  button.disabled = true;
  result.setAttribute("aria-busy", "true");
  clearResult();
  statusLine.textContent = t("looking");
  try {
    const response = await fetch("/predict?top_k=3", { method: "POST", body: data });
    const body = await response.json().catch(() => null);
    if (!response.ok || !body) {
      showError(predictError(response, body));
    } else {
      showPrediction(body);
    }
  } catch (err) {
    showError(t("sorry", { message: t("unreachable", { detail: err.message }) }));
  } finally {
    button.disabled = false;
    result.setAttribute("aria-busy", "false");
  }
}

function start() {
  localisePage();
  document.getElementById("drop-hint").hidden = false;
  // Phones offer the camera in the ordinary picker too; this button goes straight to it.
  if (window.matchMedia && window.matchMedia("(pointer: coarse)").matches) {
    cameraButton.hidden = false;
  }
  cameraButton.addEventListener("click", () => cameraInput.click());
  cameraInput.addEventListener("change", () => {
    if (cameraInput.files[0]) chooseFile(cameraInput.files[0]);
  });
  input.addEventListener("change", () => {
    chosenFile = input.files[0] || null;
    showPreview(chosenFile);
  });
  preview.addEventListener("load", () => {
    previewFigure.hidden = false;
  });
  preview.addEventListener("error", () => {
    previewFigure.hidden = true;
  });
  form.addEventListener("submit", submitPhoto);
  listenForDrops();
  listenForPastes();
  if (feedbackBox) feedback.init();
}

start();
