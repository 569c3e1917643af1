"""Everything the bot says, in English and Russian, chosen by the user's ``language_code``."""

from __future__ import annotations

from collections.abc import Iterable

from model.looks_like import LooksLike
from model.metadata import BreedClass
from model.predictor import BreedScore, Prediction
from service.breed_names import breed_name, name_in_sentence

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "help": (
            "Hi! Send me a photo of a dog and I will tell you its breed, with my top "
            "{top_k} guesses. I know these {count} breeds:\n{breeds}\n\n"
            "For another dog, a wild canid or a cat I tell you what it looks like.\n\n"
            "Photos sent as files work too; albums get one answer per photo."
        ),
        "help_feedback": (
            "Under each answer, tell me whether I was right. The photos you correct are kept "
            "to improve the model (without your name, chat or any other trace of you)."
        ),
        "known": "My best guess: {breed} 🐶\n\nTop guesses:\n{ranking}",
        "unsure": "I think it's a {breed}, but I'm not sure 🤔\n\nTop guesses:\n{ranking}",
        "unknown": (
            "Hmm, this does not look like one of the {count} breeds I know. "
            "The nearest ones would be:\n{ranking}\n\nSend /help to see the breeds I know."
        ),
        # Not one of the ten, but another breed, a wild canid or a cat (the answer's looks_like).
        "lead_unknown": "Not one of my {count} breeds",
        "lead_unsure": "Probably not one of my {count} breeds",
        "looks_dog": "{lead} — it looks like {article} {name} ({confidence}) 🐕",
        "looks_dog_maybe": (
            "{lead} — it may be {article} {name} ({confidence}), but I'm not sure 🤔"
        ),
        "looks_wild": "{lead}: it looks like a wild animal — {name} ({confidence}) 🐺",
        "looks_wild_maybe": (
            "{lead}: it may be a wild animal — {name} ({confidence}), but I'm not sure 🤔"
        ),
        "looks_cat": "It's a cat — I recognise dogs 🐱 ({name}, I'd say: {confidence})",
        "looks_cat_maybe": "It may be a cat — I recognise dogs 🐱",
        "nearest_mine": "Of my breeds, the nearest would be:\n{ranking}",
        "hint_text": "Send me a photo of a dog and I will tell you its breed. /help lists them.",
        "hint_sticker": "Nice sticker! I can only recognise dogs in photos, though: send me one.",
        "hint_document": ("This file is not an image ({mime}). Send me a photo of a dog instead."),
        "too_large": (
            "This file is too large for me ({size_mb:.0f} MB; the limit is {limit_mb:.0f} MB). "
            "Please send it as a photo, not as a file."
        ),
        "bad_image": (
            "Sorry, I could not read this image: {reason}. Please send a JPEG, PNG or HEIC photo."
        ),
        "download_failed": "Sorry, I could not download this photo from Telegram. Try again?",
        "failed": "Sorry, something went wrong on my side. Please try again in a minute.",
        "over_budget": (
            "You are sending photos faster than I can look at them: I answer up to {budget} "
            "a minute. Please send the rest again in a minute."
        ),
        # Feedback buttons under an answer, and what pressing them says.
        "button_right": "✅ Right",
        "button_wrong": "❌ Wrong",
        "button_none": "None of these",
        "which_breed": "Which breed is it?",
        "thanks": "Thanks! I will learn from it.",
        "thanks_line": "✅ Thanks for telling me: this photo will help me learn.",
        "feedback_stale": "This answer is too old to correct now. Send the photo again?",
        "feedback_bad": "Sorry, I could not read this button.",
        "feedback_unavailable": "Sorry, I cannot save this right now. Please try again later.",
        "feedback_off": "I am not taking corrections at the moment.",
    },
    "ru": {
        "help": (
            "Привет! Пришлите фото собаки, и я определю породу (покажу {top_k} самых "
            "вероятных варианта). Я знаю эти {count} пород:\n{breeds}\n\n"
            "Если на фото другая собака, дикий зверь из псовых или кошка, скажу, на кого это "
            "похоже.\n\n"
            "Можно присылать и фото файлом; в альбоме отвечу на каждое фото."
        ),
        "help_feedback": (
            "Под каждым ответом можно отметить, угадал ли я. Фото, которые вы поправите, "
            "сохраняются, чтобы улучшить модель (без вашего имени, чата и других данных о вас)."
        ),
        "known": "Похоже, это {breed} 🐶\n\nМои варианты:\n{ranking}",
        "unsure": "Думаю, это {breed}, но я не уверен 🤔\n\nМои варианты:\n{ranking}",
        "unknown": (
            "Хм, это не похоже ни на одну из {count} пород, которые я знаю. "
            "Ближе всего:\n{ranking}\n\nОтправьте /help, чтобы увидеть список пород."
        ),
        "lead_unknown": "Это не одна из моих {count} пород",
        "lead_unsure": "Скорее всего, это не одна из моих {count} пород",
        "looks_dog": "{lead} — похоже, это {name} ({confidence}) 🐕",
        "looks_dog_maybe": "{lead} — возможно, это {name} ({confidence}), но я не уверен 🤔",
        "looks_wild": "{lead}: похоже, это дикий зверь — {name} ({confidence}) 🐺",
        "looks_wild_maybe": (
            "{lead}: возможно, это дикий зверь — {name} ({confidence}), но я не уверен 🤔"
        ),
        "looks_cat": "Это кошка, а я узнаю собак 🐱 (похоже, {name}: {confidence})",
        "looks_cat_maybe": "Кажется, это кошка, а я узнаю собак 🐱",
        "nearest_mine": "Из моих пород ближе всего:\n{ranking}",
        "hint_text": "Пришлите фото собаки, и я определю её породу. /help покажет список пород.",
        "hint_sticker": "Отличный стикер! Но я узнаю собак только на фото: пришлите фотографию.",
        "hint_document": "Этот файл не изображение ({mime}). Пришлите, пожалуйста, фото собаки.",
        "too_large": (
            "Файл слишком большой ({size_mb:.0f} МБ; предел {limit_mb:.0f} МБ). "
            "Отправьте его как фото, а не как файл."
        ),
        "bad_image": (
            "Не удалось прочитать изображение: {reason}. Пришлите фото в JPEG, PNG или HEIC."
        ),
        "download_failed": "Не удалось скачать фото из Telegram. Попробуйте ещё раз.",
        "failed": "Что-то пошло не так на моей стороне. Попробуйте ещё раз через минуту.",
        "over_budget": (
            "Фото приходят быстрее, чем я успеваю их смотреть: я отвечаю не больше чем на "
            "{budget} в минуту. Пришлите остальные ещё раз через минуту."
        ),
        "button_right": "✅ Верно",
        "button_wrong": "❌ Неверно",
        "button_none": "Ни одна из этих",
        "which_breed": "Какая это порода?",
        "thanks": "Спасибо! Я на этом научусь.",
        "thanks_line": "✅ Спасибо за ответ: это фото поможет мне учиться.",
        "feedback_stale": "Этот ответ уже не поправить: он слишком старый. Пришлите фото ещё раз?",
        "feedback_bad": "Не удалось прочитать эту кнопку.",
        "feedback_unavailable": "Сейчас не получается сохранить ответ. Попробуйте позже.",
        "feedback_off": "Сейчас я не принимаю исправления.",
    },
}


# Why an image could not be used, by ImageDecodeError code.
IMAGE_PROBLEMS: dict[str, dict[str, str]] = {
    "en": {
        "empty_image": "the file is empty",
        "not_an_image": "it is not an image format I can read",
        "corrupt_image": "the file looks damaged",
        "image_too_large": "it has too many pixels",
        "too_many_pixels": "it is too big to open here: send it smaller (a phone photo fits)",
        "image_too_small": "it is too small",
    },
    "ru": {
        "empty_image": "файл пустой",
        "not_an_image": "это не знакомый мне формат изображения",
        "corrupt_image": "файл повреждён",
        "image_too_large": "в нём слишком много пикселей",
        "too_many_pixels": "оно слишком большое: пришлите поменьше (фото с телефона подойдёт)",
        "image_too_small": "оно слишком маленькое",
    },
}


def image_problem(code: str, lang: str) -> str:
    problems = IMAGE_PROBLEMS.get(lang, IMAGE_PROBLEMS["en"])
    return problems.get(code, problems["corrupt_image"])


def language_for(language_code: str | None) -> str:
    """``ru``, ``ru-RU``... → Russian; anything else (or unknown) → English."""
    return "ru" if language_code and language_code.lower().startswith("ru") else "en"


def text(key: str, lang: str, **values: object) -> str:
    return TEXTS.get(lang, TEXTS["en"])[key].format(**values)


def percent(confidence: float) -> str:
    value = confidence * 100
    return "<1%" if value < 1 else f"{value:.0f}%"


def _ranking(scores: Iterable[BreedScore], lang: str) -> str:
    return "\n".join(
        f"{i}. {breed_name(s.wnid, s.name, lang)} — {percent(s.confidence)}"
        for i, s in enumerate(scores, start=1)
    )


def article(name: str) -> str:
    """ "a" or "an" before an English name."""
    return "an" if name[:1].lower() in "aeiou" else "a"


def looks_like_text(other: LooksLike, verdict: str, lang: str, breed_count: int) -> str:
    """What the photo looks like, said as surely as its certainty allows (``LooksLike.plain``;
    a cat's is its kind's share); an ``unsure`` answer leads with "probably not one of my
    breeds"."""
    name = name_in_sentence(other.wnid, other.name, lang)
    key = f"looks_{other.kind}" + ("" if other.plain else "_maybe")
    lead = text("lead_unsure" if verdict == "unsure" else "lead_unknown", lang, count=breed_count)
    values = {"name": name, "article": article(name), "confidence": percent(other.confidence)}
    return text(key, lang, lead=lead, **values)


def prediction_text(prediction: Prediction, lang: str, breed_count: int) -> str:
    """The answer in words: sure names the breed, unsure names it with a doubt, unknown not;
    what else it looks like (another breed, a wild canid, a cat) comes first when the answer
    says so, and then the nearest of the ten (for a cat, nothing more)."""
    ranking = _ranking(prediction.top_k, lang)
    other = prediction.looks_like
    if other is not None:
        said = looks_like_text(other, prediction.verdict, lang, breed_count)
        if other.kind == "cat":
            return said
        return f"{said}\n\n{text('nearest_mine', lang, ranking=ranking)}"
    if prediction.breed is not None and prediction.verdict in ("sure", "unsure"):
        name = breed_name(prediction.breed.wnid, prediction.breed.name, lang)
        key = "known" if prediction.verdict == "sure" else "unsure"
        return text(key, lang, breed=name, ranking=ranking)
    return text("unknown", lang, count=breed_count, ranking=ranking)


def help_text(classes: Iterable[BreedClass], lang: str, top_k: int, feedback: bool = False) -> str:
    """What the bot does; with ``feedback`` also that corrected photos are kept, and how."""
    names = [breed_name(c.wnid, c.name, lang) for c in classes]
    breeds = "\n".join(f"• {name}" for name in names)
    about = text("help", lang, top_k=top_k, count=len(names), breeds=breeds)
    return f"{about}\n\n{text('help_feedback', lang)}" if feedback else about


def thanked(message_text: str) -> bool:
    """Whether an answer was already edited to thank for feedback (in any language)."""
    return any(message_text.endswith(texts["thanks_line"]) for texts in TEXTS.values())
