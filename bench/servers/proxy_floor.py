"""The transformer floor: the least work a Python pass-through transformer can do.

A raw ASGI app (no framework) on uvicorn + uvloop + httptools that reads the request
body and forwards it, bytes unchanged, to the same path on PREDICTOR_HOST with one
keep-alive aiohttp session (the client modelport's transformer uses), then writes the
predictor's status and body back. No parsing, no metrics, no logs, no header forwarding:
its latency is the predictor's plus one more HTTP server hop plus one client round trip,
a bound for any transformer written in Python on the same CPU.
Env: PREDICTOR_HOST (host:port). Any GET answers 200 (readiness).
"""

import os

import aiohttp

PREDICTOR = f"http://{os.environ['PREDICTOR_HOST']}"
READY = b'{"ready": true}'
_session: aiohttp.ClientSession | None = None


def session() -> aiohttp.ClientSession:
    global _session
    if _session is None:
        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None),
            timeout=aiohttp.ClientTimeout(total=600),
        )
    return _session


async def reply(send, status, body, content_type=b"application/json"):
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if _session is not None:
                    await _session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["method"] != "POST":
        return await reply(send, 200, READY)
    chunks, more = [], True
    while more:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        more = msg.get("more_body", False)
    content_type = "application/json"
    for key, value in scope["headers"]:
        if key == b"content-type":
            content_type = value.decode("latin-1")
    async with session().post(
        PREDICTOR + scope["path"], data=b"".join(chunks), headers={"content-type": content_type}
    ) as response:
        body = await response.read()
        answer_type = response.headers.get("content-type", "application/json").encode()
        await reply(send, response.status, body, answer_type)
