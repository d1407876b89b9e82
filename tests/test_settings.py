"""Settings precedence: defaults < chat.toml < environment < flags; providers from both."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import load_settings


def test_flags_beat_environment_beat_toml(tmp_path: Path) -> None:
    toml = tmp_path / "chat.toml"
    toml.write_text('[server]\nport = 7000\nmax_content_chars = 100\nws_allowed_origins = ["https://a"]\n'
                    '[providers.local]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\nmodels = ["m1"]\n'
                    'concurrency = 2\n')
    s = load_settings({"config_path": str(toml)}, env={"CHAT_PORT": "7001"})
    assert s.port == 7001 and s.max_content_chars == 100 and s.ws_allowed_origins == ("https://a",)
    assert [(p.id, p.kind, p.models, p.concurrency) for p in s.providers] == [("local", "openai", ("m1",), 2)]
    s = load_settings({"config_path": str(toml), "port": 7002}, env={"CHAT_PORT": "7001"})
    assert s.port == 7002


def test_well_known_provider_environment_variables(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"  # never the chat.toml an operator keeps in the checkout
    empty.write_text("")
    s = load_settings({"config_path": str(empty)}, env={"OPENAI_API_KEY": "sk", "OPENAI_MODELS": "a, b", "ANTHROPIC_API_KEY": "ak",
                               "OLLAMA_URL": "http://box:11434", "DEFAULT_MODEL": "openai:a",
                               "CHAT_WS_ALLOWED_ORIGINS": "https://x, https://y"})
    by_id = {p.id: p for p in s.providers}
    assert by_id["openai"].api_key == "sk" and by_id["openai"].models == ("a", "b")
    assert by_id["openai"].base_url == "https://api.openai.com/v1"
    assert by_id["anthropic"].base_url == "https://api.anthropic.com"
    assert by_id["ollama"].base_url == "http://box:11434" and by_id["ollama"].concurrency == 0
    assert s.default_model == "openai:a" and s.ws_allowed_origins == ("https://x", "https://y")


def test_unknown_toml_setting_is_an_error(tmp_path: Path) -> None:
    toml = tmp_path / "chat.toml"
    toml.write_text("[server]\nprot = 1\n")
    with pytest.raises(ValueError, match="prot"):
        load_settings({"config_path": str(toml)}, env={})


@pytest.mark.parametrize("var", ["CHAT_SEND_RATE_PER_SECOND", "CHAT_AUTH_RATE_BURST", "CHAT_API_STALL_TIMEOUT"])
def test_a_rate_or_period_of_zero_is_refused_with_its_name(var: str) -> None:
    with pytest.raises(ValueError, match="must be greater than 0"):
        load_settings(env={var: "0"})
