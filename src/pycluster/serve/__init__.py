"""Serving applications in a worker (SPEC section 8).

``pycluster run module:attr`` looks at what ``attr`` is
(:mod:`~pycluster.serve.detect`): a callable with no required parameters is
called and runs its own server, as before; an ASGI 3 application is served
with uvicorn (:mod:`~pycluster.serve.asgi`, extra ``pycluster[asgi]``), a WSGI
application with cheroot's threaded server (:mod:`~pycluster.serve.wsgi`,
extra ``pycluster[wsgi]``), each on the master's listeners
(``pycluster.listeners()``: rr lanes or the shared sockets).

Both servers drain the same way when the worker leaves rotation (a SIGTERM,
which pycluster sends after a disconnect): stop accepting, answer every further
request on an open keep-alive connection with ``Connection: close``, let the
requests in flight finish, close a connection idle for ``keep_alive``, then
exit 0. The master's ``graceful_timeout`` bounds it.

The master passes the served-app settings in ``PYCLUSTER_SERVE``
(:mod:`~pycluster.serve.options`); the worker entry (and the ``--preload`` fork
server) calls :func:`~pycluster.serve.detect.prepare` once the target is imported.
"""
