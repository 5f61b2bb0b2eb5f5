from __future__ import annotations

import pytest

from runtime.settings import SettingsError, load_settings


def test_defaults_load(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()

    assert settings.access_token_ttl == 900 and settings.ingest_mode == "replay"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PUMPPARTY_CHAIN_ID", "mainnet", "invalid setting PUMPPARTY_CHAIN_ID"),
        ("PUMPPARTY_INGEST_MODE", "sometimes", "invalid setting PUMPPARTY_INGEST_MODE"),
        ("PUMPPARTY_SERVICE_TOKENS", "not json", "invalid setting PUMPPARTY_SERVICE_TOKENS"),
        ("PUMPPARTY_AUDITION_FEE", "-1", "invalid setting PUMPPARTY_AUDITION_FEE"),
        ("PUMPPARTY_NO_SUCH_THING", "1", "unknown setting PUMPPARTY_NO_SUCH_THING"),
    ],
)
def test_bad_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_service_tokens_and_admins_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PUMPPARTY_SERVICE_TOKENS",
        '[{"name": "engine", "scopes": ["prop:write"], "secrets": ["a", "b"]}]',
    )
    monkeypatch.setenv("PUMPPARTY_ADMIN_ADDRESSES", "0xAbc, 0xDef")

    settings = load_settings()

    assert [(t.name, len(t.secrets)) for t in settings.service_tokens] == [("engine", 2)]
    assert settings.admin_addresses == ["0xAbc", "0xDef"]
