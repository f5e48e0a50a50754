"""aiohttp hello: GET / -> 200 ``hello`` (``app`` for gunicorn's aiohttp.GunicornWebWorker)."""

from aiohttp import web


async def index(request: web.Request) -> web.Response:
    return web.Response(text="hello\n")


app = web.Application()
app.router.add_get("/", index)
