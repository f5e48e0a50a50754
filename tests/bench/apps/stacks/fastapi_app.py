"""FastAPI hello: GET / -> 200 ``hello`` (served by pycluster, uvicorn --workers, gunicorn UvicornWorker).

An ``X-Pid`` header names the worker (bench_sameapp.py counts it for balance and restarts).
"""

import os

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()


@app.get("/", response_class=PlainTextResponse)
async def index() -> PlainTextResponse:
    return PlainTextResponse("hello\n", headers={"X-Pid": str(os.getpid())})
