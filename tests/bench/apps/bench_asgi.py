"""ASGI hello for bench_all.py (``uvicorn --workers N``).

Every response: 200, body ``hello\\n``, ``X-Pid`` naming the worker process.
The lifespan protocol is answered so uvicorn logs no lifespan warning.
"""

import os

BODY = b"hello\n"


async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY)),
                                (b"x-pid", str(os.getpid()).encode())]})
        await send({"type": "http.response.body", "body": BODY})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
