"""Flask hello: GET / -> 200 ``hello`` (served by pycluster, gunicorn gthread / sync, werkzeug app.run).

An ``X-Pid`` header names the worker (bench_sameapp.py counts it for balance and restarts).
"""

import os

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return "hello\n", 200, {"Content-Type": "text/plain", "X-Pid": str(os.getpid())}
