"""Flask hello: GET / -> 200 ``hello`` (served by pycluster, gunicorn gthread / sync, werkzeug app.run)."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return "hello\n", 200, {"Content-Type": "text/plain"}
