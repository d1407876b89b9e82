"""Fan-out baseline: a bare `websockets` server relaying each message to its room with broadcast().

The Python limit for fan-out. It speaks just enough of the chat protocol for bench/loadgen.js:
any token is accepted; `subscribe` -> `subscribed`; `message.send` -> a seq assigned here, a
`message` frame of the same shape as the server's to every subscriber (sender included) via
`websockets.broadcast()`, encoded once, then `message.ack`. Compression is off.

usage: python bench/baselines/ws_relay.py --port P
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from datetime import datetime, timezone

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve

rooms: dict[int, set[ServerConnection]] = {}
last_seq: dict[int, int] = {}
ids = itertools.count(1)


def now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


async def handler(ws: ServerConnection) -> None:
    author = {"id": 1, "username": "bench", "display_name": "bench"}
    await ws.send(orjson.dumps({"type": "hello", "user": author, "server_time": now()}).decode())
    joined: list[int] = []
    try:
        async for raw in ws:
            frame = orjson.loads(raw)
            kind = frame.get("type")
            if kind == "subscribe":
                cid = frame["conversation_id"]
                rooms.setdefault(cid, set()).add(ws)
                joined.append(cid)
                await ws.send(orjson.dumps({"type": "subscribed", "conversation_id": cid, "ref": frame.get("ref"),
                                            "last_seq": last_seq.get(cid, 0), "recovered": False,
                                            "present": [], "streaming": []}).decode())
            elif kind == "message.send":
                cid = frame["conversation_id"]
                seq = last_seq[cid] = last_seq.get(cid, 0) + 1
                message = {"id": next(ids), "conversation_id": cid, "seq": seq, "role": "user", "author": author,
                           "content": frame["content"], "model_used": None, "status": "complete",
                           "client_id": frame.get("client_id"), "reply_to": None, "usage": None,
                           "created_at": now()}
                broadcast(rooms.get(cid, ()), orjson.dumps({"type": "message", "message": message}).decode())
                await ws.send(orjson.dumps({"type": "message.ack", "ref": frame.get("ref"),
                                            "client_id": message["client_id"], "message": message,
                                            "ai": None}).decode())
            elif kind == "ping":
                await ws.send(orjson.dumps({"type": "pong", "ref": frame.get("ref")}).decode())
    finally:
        for cid in joined:
            rooms.get(cid, set()).discard(ws)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None, backlog=4096,
                     ping_interval=20, ping_timeout=60) as server:
        print(f"ws_relay on {port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(main(args.port))
    else:
        asyncio.run(main(args.port))
