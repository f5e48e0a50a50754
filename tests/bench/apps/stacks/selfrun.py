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
