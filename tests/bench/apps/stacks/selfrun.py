"""Apps that run their own server, as each framework's docs show, for ``pycluster run selfrun:<stack>``.

Each binds 127.0.0.1:$PORT itself (pycluster shares the master's listener with
it) and keeps the framework's defaults: no SIGTERM handler is added.
"""

import asyncio
import os

HOST = "127.0.0.1"


def _port() -> int:
    return int(os.environ["PORT"])


def uvicorn() -> None:
    import uvicorn as uv
    from asgi_app import app
    uv.run(app, host=HOST, port=_port(), log_level="warning")  # loop="auto": uvloop when installed


def aiohttp() -> None:
    from aiohttp import web
    from aiohttp_app import app
    web.run_app(app, host=HOST, port=_port(), print=None)


def tornado() -> None:
    import tornado.web

    class Index(tornado.web.RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "text/plain")
            self.write("hello\n")

    async def serve() -> None:
        tornado.web.Application([(r"/", Index)]).listen(_port(), address=HOST)
        await asyncio.Event().wait()

    asyncio.run(serve())


def waitress() -> None:
    import waitress as w
    from flask_app import app
    w.serve(app, host=HOST, port=_port(), threads=4, _quiet=True)


def hypercorn() -> None:
    from asgi_app import app
    from hypercorn.asyncio import serve
    from hypercorn.config import Config
    config = Config()
    config.bind = [f"{HOST}:{_port()}"]
    config.loglevel = "WARNING"
    asyncio.run(serve(app, config))


def werkzeug() -> None:
    from flask_app import app
    app.run(host=HOST, port=_port(), threaded=True)


def uvicorn_fastapi() -> None:
    """uvicorn.run of the FastAPI app (bench_sameapp.py: the same app as ``pycluster run fastapi_app:app``)."""
    import uvicorn as uv
    from fastapi_app import app
    uv.run(app, host=HOST, port=_port(), log_level="warning")


def streams() -> None:
    """A minimal HTTP/1.1 hello on ``asyncio.start_server`` (keep-alive and Connection: close, ``X-Pid``)."""
    body = b"hello\n"
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nX-Pid: %d\r\n"
            % (len(body), os.getpid()))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                close = b"connection: close" in request.lower()
                writer.write(head + (b"Connection: close\r\n\r\n" if close else b"\r\n") + body)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, HOST, _port())
        async with server:
            await server.serve_forever()

    asyncio.run(serve())
