"""The names of the breeds in every language the service speaks, in one table for the page and
the bot (it is meant to grow to every ImageNet class the service can name).

English names come from the model's metadata (``BreedClass.name``): the table holds the other
languages, wnid -> {language: name}, and a name it lacks falls back to the English one.
"""

from __future__ import annotations

BREED_NAMES: dict[str, dict[str, str]] = {
    "n02086240": {"ru": "Ши-тцу"},
    "n02087394": {"ru": "Родезийский риджбек"},
    "n02088364": {"ru": "Бигль"},
    "n02089973": {"ru": "Английский фоксхаунд"},
    "n02093754": {"ru": "Бордер-терьер"},
    "n02096294": {"ru": "Австралийский терьер"},
    "n02099601": {"ru": "Золотистый ретривер"},
    "n02105641": {"ru": "Староанглийская овчарка"},
    "n02111889": {"ru": "Самоед"},
    "n02115641": {"ru": "Динго"},
}


def breed_name(wnid: str, english: str, lang: str) -> str:
    """The class ``wnid`` named in ``lang``; ``english`` (the model's name) where the table
    has no name in that language."""
    return BREED_NAMES.get(wnid, {}).get(lang, english)
