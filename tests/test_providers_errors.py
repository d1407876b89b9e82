"""How upstream error bodies become short, clear messages (pure)."""

from __future__ import annotations

from pathlib import Path

from providers.base import ProviderError
from providers.transport import error_detail

RECORDINGS = Path(__file__).parent / "recordings"


def test_openai_json_error_uses_message_and_type() -> None:
    raw = (RECORDINGS / "openai_error.json").read_bytes()
    detail = error_detail(raw, "application/json")
    assert detail.startswith("Incorrect API key provided: [redacted].")  # redacted before it is cut
    assert detail.endswith("(invalid_request_error)")


def test_ollama_string_error() -> None:
    assert error_detail(b'{"error":"model not found"}', "application/json") == "model not found"


def test_nginx_html_page_becomes_its_title() -> None:
    raw = (RECORDINGS / "nginx_502.html").read_bytes()
    assert error_detail(raw, "text/html") == "502 Bad Gateway"


def test_html_without_title_is_stripped_and_trimmed() -> None:
    raw = b"<html><script>var x = 1;</script><body><p>" + b"word " * 200 + b"</p></body></html>"
    detail = error_detail(raw, "text/html; charset=utf-8")
    assert "<" not in detail and "var x" not in detail
    assert detail.startswith("word word") and len(detail) <= 200 and detail.endswith("…")


def test_plain_text_and_empty_bodies() -> None:
    assert error_detail(b"  upstream\n  timed out \n", "text/plain") == "upstream timed out"
    assert error_detail(b"", "text/plain") == ""


def test_json_without_known_fields_falls_back_to_the_text() -> None:
    assert error_detail(b'{"status": "bad"}', "application/json") == '{"status": "bad"}'


def test_provider_error_messages_name_no_key_or_address_and_the_log_detail_keeps_them() -> None:
    said = ("openai returned HTTP 401: Incorrect API key provided: sk-proj-********abcd. You can find your "
            "API key at https://platform.openai.com/account/api-keys. (via 10.0.3.7:8080, bearer abcdefgh.ij)")
    err = ProviderError(said)
    assert err.message == ("openai returned HTTP 401: Incorrect API key provided: [redacted]. You can find your "
                           "API key at [address]. (via [address], [redacted])")
    assert str(err).startswith(err.message) and err.detail == said
    for secret, shown in [("GET /v1?key=hunter2secret failed", "GET /v1?[redacted] failed"),
                          ("ollama at localhost:11434 refused", "ollama at [address] refused"),
                          ("token abcdef0123456789abcdef0123456789ab expired", "token [redacted] expired"),
                          ("groq said gsk_****wxyz is invalid", "groq said [redacted] is invalid")]:
        assert ProviderError(secret).message == shown


def test_provider_error_messages_keep_model_names_ids_and_words() -> None:
    for plain in ["ollama stream error: model 'llama3.1' not found, try pulling it first",
                  "model gpt-4o-mini-realtime-preview-2024-12-17 does not exist",
                  "request 5f0c6a9e-1b2c-4d3e-9f00-123456789abc failed: this endpoint requires a Bearer token",
                  "rate limited: retry in 20s (limit 10000 tokens per minute)"]:
        err = ProviderError(plain)
        assert err.message == plain and err.detail is None
