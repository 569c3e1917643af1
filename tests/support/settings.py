"""Settings built from an exact environment: every service variable cleared, then ``env`` set.

Tests must not depend on what the developer's shell exports (``TOP_K``, ``MODEL_URI``…).
"""

from __future__ import annotations

import pytest

from service.settings import GROUPS, Settings, env_name, load_settings


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for group in GROUPS.values():
        for field in group.model_fields:
            monkeypatch.delenv(env_name(group, field), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def settings_from(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    use_env(monkeypatch, env)
    return load_settings()
