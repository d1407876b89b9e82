"""GET /metrics: scraped and parsed with prometheus-client's own parser; who may read it."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Client, running_server


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def scrape(c: Client, **headers: str) -> tuple[int, Any]:
    """(status, the text body, or the decoded JSON error body)."""
    r = await c.call("GET", "/metrics", headers=headers)
    return r.status, r.body.decode() if isinstance(r.body, bytes) else r.body


async def test_metrics_count_connections_messages_turns_errors_and_deliveries(database_url: str, http: Any) -> None:
    async with running_server(database_url) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        u = await c.user()
        conv = await u.conversation()
        sock = await u.ws()
        await sock.subscribe(conv["id"])
        r = await u.call("POST", f"/conversations/{conv['id']}/messages?wait=true", {"content": "count me"})
        assert r.status == 201
        await sock.send({"type": "subscribe", "conversation_id": "nope", "ref": "bad"})
        await sock.until("error")
        assert (await u.call("GET", "/conversations/999999")).status == 404
        status, text = await scrape(c)
        assert status == 200
        m = samples(text)
        assert m[("chat_server_num_clients", ())] == 1
        assert m[("chat_server_num_subscriptions", ())] == 1
        assert m[("chat_server_messages_stored_total", ())] >= 1
        assert m[("chat_ai_turns_total", (("model", "echo:echo"), ("status", "complete")))] >= 1
        assert m[("chat_ai_tokens_total", (("direction", "completion"), ("model", "echo:echo")))] >= 1
        assert m[("chat_ai_time_to_first_token_seconds_count", (("model", "echo:echo"),))] >= 1
        assert m[("chat_server_errors_total", (("code", "invalid"), ("transport", "ws")))] >= 1
        assert m[("chat_server_errors_total", (("code", "not_found"), ("transport", "http")))] >= 1
        assert m[("chat_server_frames_delivered_total", ())] >= 4  # message, reply row, ai.start, ai.done...
        assert m[("chat_server_message_store_seconds_count", ())] >= 1
        assert ("chat_db_pool_connections_in_use", ()) in m
        await sock.close()


async def test_metrics_are_for_this_machine_unless_a_token_is_set(database_url: str, http: Any) -> None:
    async with running_server(database_url) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        assert (await scrape(c))[0] == 200
        # Behind a proxy on this machine, a remote caller is named by X-Forwarded-For.
        status, body = await scrape(c, **{"X-Forwarded-For": "203.0.113.9"})
        assert status == 403 and body["error"]["code"] == "forbidden"
    async with running_server(database_url, metrics_token="s3cret") as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        assert (await scrape(c))[0] == 401
        assert (await scrape(c, Authorization="Bearer wrong"))[0] == 401
        status, text = await scrape(c, Authorization="Bearer s3cret", **{"X-Forwarded-For": "203.0.113.9"})
        assert status == 200 and "chat_server_num_clients" in text
