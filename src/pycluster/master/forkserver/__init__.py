"""``--preload``: a fork server that imports the app once and forks workers.

The fork server is a fresh interpreter started by the master
(``python -m pycluster.master.forkserver TARGET``), single-threaded, that imports
the app's module, runs ``gc.collect(); gc.freeze()`` (so the imported objects
stay shared, copy-on-write, between workers) and then forks a worker for each
request from the master. A reload starts a new fork server with the new code
and retires the old one once the reload succeeded.

Each worker is forked through an intermediate process that exits at once,
so the worker is re-parented to the master (a child subreaper): the master
reaps it and watches it through a pidfd exactly as a spawned worker, and its
PR_SET_PDEATHSIG is tied to the master, not to the fork server.

The package: ``_wire`` (what both sides agree on), ``client`` (the master's
side: :class:`ForkServer`), ``server`` (the fork server process itself) and
``keeper`` (the arbiter's lifecycle of its fork server: start, ready,
stalled, exited, retired).

Nothing is imported here: the fork server process runs this package
(``__main__``) and must not pay for the master's side.
"""
