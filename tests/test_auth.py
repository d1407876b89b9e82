"""Auth per the contract: register, token, logout (revocation), me; the first user is admin."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Client, fresh_database, running_server


async def test_register_returns_token_and_user(client: Client) -> None:
    r = await client.call("POST", "/auth/register", json={"username": "Reg_1.a-b", "password": "longenough",
                                                          "display_name": "Régine 🎉"})
    assert r.status == 201
    assert set(r.body) == {"token", "user"}
    assert r.body["user"]["username"] == "Reg_1.a-b"
    assert r.body["user"]["display_name"] == "Régine 🎉"
    me = await client.call("GET", "/me", r.body["token"])
    assert me.status == 200 and me.body["user"] == r.body["user"]


async def test_usernames_are_unique_case_insensitively(client: Client) -> None:
    u = await client.user("Case")
    r = await client.call("POST", "/auth/register", json={"username": u.username.upper(), "password": "longenough"})
    assert r.status == 409 and r.body["error"]["code"] == "conflict"


async def test_bad_usernames_and_passwords_are_invalid(client: Client) -> None:
    for body, field in [
        ({"username": "", "password": "longenough"}, "username"),
        ({"username": "a" * 33, "password": "longenough"}, "username"),
        ({"username": "spa ce", "password": "longenough"}, "username"),
        ({"username": "émile", "password": "longenough"}, "username"),
        ({"username": 5, "password": "longenough"}, "username"),
        ({"username": "okname", "password": "short"}, "password"),
        ({"username": "okname", "password": 12345678}, "password"),
        ({"username": "okname", "password": "longenough", "display_name": "x" * 65}, "display_name"),
        ({"username": "okname", "password": "longenough", "display_name": "nul\x00"}, "display_name"),
    ]:
        r = await client.call("POST", "/auth/register", json=body)
        assert r.status == 422, (body, r.body)
        assert r.body["error"]["code"] == "invalid"
        assert r.body["error"]["details"]["field"] == field
    r = await client.call("POST", "/auth/token", json={"username": "okname", "password": "longenough"})
    assert r.status == 401  # none of them was stored


async def test_login_and_logout_revokes_only_that_token(client: Client) -> None:
    u = await client.user("login")
    r = await client.call("POST", "/auth/token", json={"username": u.username, "password": "correct horse"})
    assert r.status == 200 and r.body["user"]["id"] == u.id
    second = r.body["token"]
    assert second != u.token
    assert (await client.call("POST", "/auth/logout", second)).status == 204
    assert (await client.call("GET", "/me", second)).status == 401
    assert (await client.call("GET", "/me", u.token)).status == 200


async def test_wrong_password_and_unknown_user_look_the_same(client: Client) -> None:
    u = await client.user("pw")
    a = await client.call("POST", "/auth/token", json={"username": u.username, "password": "wrong password"})
    b = await client.call("POST", "/auth/token", json={"username": "nobody_here", "password": "wrong password"})
    assert a.status == b.status == 401
    assert a.body == b.body
    assert a.body["error"]["code"] == "unauthorized"


async def test_protected_routes_need_a_valid_bearer_token(client: Client) -> None:
    for headers in [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer " + "x" * 5000}]:
        r = await client.call("GET", "/me", headers=headers)
        assert r.status == 401, headers
        assert r.body["error"]["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"] == "Bearer"


async def test_first_user_on_an_empty_database_is_the_only_admin(postgres_url: str, http) -> None:
    url = await fresh_database(postgres_url)
    async with running_server(url) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        # Racing registrations on an empty database: exactly one admin.
        users = await asyncio.gather(*(c.user("first") for _ in range(6)))
        admins = [u for u in users if u.info["is_admin"]]
        assert len(admins) == 1


async def test_registration_and_login_are_rate_limited_per_address(database_url: str, http) -> None:
    async with running_server(database_url, auth_rate_per_second=0.5, auth_rate_burst=3) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        statuses = []
        for i in range(5):
            r = await c.call("POST", "/auth/token", json={"username": f"nobody{i}", "password": "whatever1"})
            statuses.append(r.status)
        assert statuses == [401, 401, 401, 429, 429]
        assert r.body["error"]["code"] == "rate_limited" and r.body["error"]["retry_after"] > 0
        assert int(r.headers["Retry-After"]) >= 1


async def test_a_token_revoked_elsewhere_stops_working_here_within_the_auth_cache_time(
        postgres_url: str, http: Any) -> None:
    async with running_server(await fresh_database(postgres_url), auth_cache_seconds=0.5) as srv:
        client = Client(http, srv.base_url, srv.ws_url)
        u = await client.user("cached")
        assert (await client.call("GET", "/me", u.token)).status == 200
        # as another server's logout would: straight in the database
        await srv.node.store.db.execute("UPDATE auth_tokens SET revoked_at = now() WHERE user_id = $1", u.id)
        deadline = asyncio.get_running_loop().time() + 0.5 + 2.0  # the cache time, and slow round trips
        while (await client.call("GET", "/me", u.token)).status == 200:
            assert asyncio.get_running_loop().time() < deadline, "still accepted after auth_cache_seconds"
            await asyncio.sleep(0.05)
        assert (await client.call("GET", "/me", u.token)).status == 401
