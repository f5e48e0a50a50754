"""FastAPI hello: GET / -> 200 ``hello`` (served by pycluster, uvicorn --workers, gunicorn UvicornWorker)."""

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()


@app.get("/", response_class=PlainTextResponse)
async def index() -> str:
    return "hello\n"
