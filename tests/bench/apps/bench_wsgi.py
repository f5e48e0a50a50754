"""WSGI hello for bench_all.py (gunicorn sync / gthread workers).

Every response: 200, body ``hello\\n``, ``X-Pid`` naming the worker process
(the balance row counts responses per X-Pid).
"""

import os

BODY = b"hello\n"
_cache = {}  # pid -> headers: a forked worker builds its own once


def app(environ, start_response):
    pid = os.getpid()
    headers = _cache.get(pid)
    if headers is None:
        headers = _cache[pid] = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY))),
                                 ("X-Pid", str(pid))]
    start_response("200 OK", headers)
    return [BODY]
