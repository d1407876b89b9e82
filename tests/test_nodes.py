"""AI nodes and the model list: admin-only registration, health and latency, dead nodes."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Client, fresh_database, running_server
from tests.fakes import FakeOllama, closed_port


async def test_nodes_are_admin_only_and_listed_with_health(postgres_url: str, http: Any) -> None:
    url = await fresh_database(postgres_url)
    async with FakeOllama(models=["llama3.1:8b", "qwen2.5"], tokens=["Hi", " there"]) as ollama, \
            running_server(url) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        admin, user = await c.user("admin"), await c.user("plain")
        assert admin.info["is_admin"] and not user.info["is_admin"]
        body = {"name": "Mac Studio", "kind": "ollama", "base_url": ollama.url}
        r = await user.call("POST", "/ai/nodes", body)
        assert r.status == 403 and r.body["error"]["code"] == "forbidden"
        for bad in [{**body, "kind": "gopher"}, {**body, "base_url": "file:///etc/passwd"},
                    {**body, "name": ""}, {"kind": "ollama", "base_url": ollama.url},
                    {**body, "base_url": "http://[::1"}]:
            assert (await admin.call("POST", "/ai/nodes", bad)).status == 422, bad
        r = await admin.call("POST", "/ai/nodes", body)
        assert r.status == 201, r.body
        node = r.body
        assert node["name"] == "Mac Studio" and node["healthy"] is True and node["latency_ms"] >= 0
        nid = node["id"]
        assert node["models"] == [f"client:{nid}:llama3.1:8b", f"client:{nid}:qwen2.5"]

        models = (await user.call("GET", "/ai/models")).body
        assert models["default_model_id"] == "echo:echo"
        entry = next(p for p in models["providers"] if p["id"] == f"client:{nid}")
        assert entry["kind"] == "ollama" and entry["label"] == "Mac Studio"
        assert entry["node"]["id"] == nid and entry["node"]["name"] == "Mac Studio"
        assert entry["node"]["healthy"] is True and entry["node"]["checked_at"].endswith("Z")
        assert entry["models"][0] == {"id": f"client:{nid}:llama3.1:8b", "name": "llama3.1:8b", "available": True,
                                      "stats": None}
        echo = next(p for p in models["providers"] if p["id"] == "echo")
        assert echo["node"] is None and echo["models"][0]["id"] == "echo:echo"

        # A node's model with a colon in its name routes to that node.
        conv = await user.conversation(default_model_id=f"client:{nid}:llama3.1:8b")
        r = await user.call("POST", f"/conversations/{conv['id']}/messages?wait=true", {"content": "hey"})
        assert r.body["reply"]["content"] == "Hi there"
        assert r.body["reply"]["model_used"] == f"client:{nid}:llama3.1:8b"
        assert ollama.requests[-1].json["model"] == "llama3.1:8b"

        dead = await admin.call("POST", "/ai/nodes", {"name": "Unplugged", "kind": "ollama",
                                                      "base_url": f"http://127.0.0.1:{closed_port()}"})
        assert dead.status == 201 and dead.body["healthy"] is False and dead.body["latency_ms"] is None
        models = (await user.call("GET", "/ai/models")).body
        entry = next(p for p in models["providers"] if p["id"] == f"client:{dead.body['id']}")
        assert entry["node"]["healthy"] is False and entry["models"] == []

        nodes = (await user.call("GET", "/ai/nodes")).body["nodes"]
        assert [n["name"] for n in nodes] == ["Mac Studio", "Unplugged"]
        assert all("api_key" not in n for n in nodes)

        assert (await user.call("DELETE", f"/ai/nodes/{nid}")).status == 403
        assert (await admin.call("DELETE", f"/ai/nodes/{nid}")).status == 204
        assert (await admin.call("DELETE", f"/ai/nodes/{nid}")).status == 404
        r = await user.send(conv["id"], "again", model=f"client:{nid}:llama3.1:8b")
        assert r.status == 422 and r.body["error"]["code"] == "unknown_model"


async def test_model_list_never_waits_on_a_slow_node(postgres_url: str, http: Any) -> None:
    url = await fresh_database(postgres_url)
    async with FakeOllama(models=["m"]) as ollama, running_server(url) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        admin = await c.user("admin")
        r = await admin.call("POST", "/ai/nodes", {"name": "Slowpoke", "kind": "ollama", "base_url": ollama.url})
        assert r.status == 201 and r.body["healthy"] is True
        ollama.model_delay = 30  # the next health check hangs
        registry = srv.node.registry
        check = asyncio.ensure_future(registry.check_all())
        await asyncio.sleep(0.1)
        models = await asyncio.wait_for(admin.call("GET", "/ai/models"), 1.0)
        assert models.status == 200
        entry = next(p for p in models.body["providers"] if p["node"] and p["node"]["name"] == "Slowpoke")
        assert entry["node"]["healthy"] is True  # the last finished check
        check.cancel()


async def test_node_health_changes_on_the_next_check(postgres_url: str, http: Any) -> None:
    url = await fresh_database(postgres_url)
    async with FakeOllama(models=["m"]) as ollama, running_server(url) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        admin = await c.user("admin")
        r = await admin.call("POST", "/ai/nodes", {"name": "Flaky", "kind": "ollama", "base_url": ollama.url})
        nid = r.body["id"]
        ollama.fail_status = 500
        await srv.node.registry.check_all()
        node = next(n for n in (await admin.call("GET", "/ai/nodes")).body["nodes"] if n["id"] == nid)
        assert node["healthy"] is False
        ollama.fail_status = None
        ollama.models = ["m", "new-model"]
        await srv.node.registry.check_all()
        node = next(n for n in (await admin.call("GET", "/ai/nodes")).body["nodes"] if n["id"] == nid)
        assert node["healthy"] is True and f"client:{nid}:new-model" in node["models"]
