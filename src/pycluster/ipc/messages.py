"""The internal vocabulary between a primary and its workers, in one place.

Internal messages travel in ``KIND_INTERNAL`` frames (never mistaken for a
user's) as JSON objects whose ``act`` names what they are. Requests carry
``seq``; their replies are ``{"act": "ack", "ack": SEQ, ...}``. The primary
answers with what it handles in its message table; a worker handles only
``disconnect``.

The ``PYCLUSTER_*`` environment names a primary sets for the workers it
starts (and the one the fork server is started with) are here too: they are
the other half of the protocol between the two sides.
"""

from __future__ import annotations

from typing import Final

# -- message names (the "act" field) ------------------------------------------------
ACT: Final = "act"
SEQ: Final = "seq"
ACK: Final = "ack"  # a reply: {"act": "ack", "ack": <the request's seq>, ...}

# worker -> primary
QUERY: Final = "query"  # request: the listener for an address (may carry the worker's own socket)
LISTENING: Final = "listening"  # a server in the worker now listens on a handle
CLOSE: Final = "close"  # a server in the worker closed its handle
ONLINE: Final = "online"  # the worker booted (or imported its app, with PYCLUSTER_ONLINE=after-load)
HEARTBEAT: Final = "heartbeat"  # the worker's loop is alive (--timeout)
EXITED_AFTER_DISCONNECT: Final = "exited_after_disconnect"  # request: the worker leaves on its own
# primary -> worker
DISCONNECT: Final = "disconnect"  # close your servers and the channel, then exit

WORKER_ACTS: Final = frozenset({QUERY, LISTENING, CLOSE, ONLINE, HEARTBEAT, EXITED_AFTER_DISCONNECT})
PRIMARY_ACTS: Final = frozenset({DISCONNECT})

# -- environment of a worker (set by the primary, read and removed by the worker's boot) --
ENV_WORKER_ID: Final = "PYCLUSTER_WORKER_ID"  # its presence makes a process a worker
ENV_CHANNEL_FD: Final = "PYCLUSTER_CHANNEL_FD"  # the worker's end of the IPC socketpair
ENV_PPID: Final = "PYCLUSTER_PPID"  # the primary's pid (the worker exits when it is gone)
ENV_STDIO: Final = "PYCLUSTER_STDIO"  # "TARGET:FD,...": passed descriptors the worker moves onto its stdio
ENV_INSPECT_PORT: Final = "PYCLUSTER_INSPECT_PORT"  # the debugger port of this worker (inspect_port)
ENV_HEARTBEAT: Final = "PYCLUSTER_HEARTBEAT"  # seconds between heartbeats (the master's --timeout)
ENV_APP_METRICS: Final = "PYCLUSTER_APP_METRICS"  # seconds between checks of the app's metrics (--metrics)
APP_METRICS_FD: Final = 3  # --metrics: the worker's stdio[3], where it writes the app's samples (JSON lines)
ENV_ONLINE: Final = "PYCLUSTER_ONLINE"  # "after-load": announce online once the app imported
ONLINE_AFTER_LOAD: Final = "after-load"
ENV_SCHED_POLICY: Final = "PYCLUSTER_SCHED_POLICY"  # the facade's default scheduling policy
ENV_FORKSERVER_FD: Final = "PYCLUSTER_FORKSERVER_FD"  # set in the fork server (--preload)
ENV_SERVE: Final = "PYCLUSTER_SERVE"  # pycluster run: how to serve the app (JSON, pycluster.serve.options)

# -- environment read by the master's side ---------------------------------------------
ENV_RUNTIME_DIR: Final = "PYCLUSTER_RUNTIME_DIR"  # where control sockets live (SPEC 3)
ENV_READY_FD: Final = "PYCLUSTER_READY_FD"  # run -d: the pipe a daemon reports readiness on
ENV_FORK_TIMEOUT: Final = "PYCLUSTER_FORK_TIMEOUT"  # seconds a fork-server request may take
# RR tuning knobs (validated by the primary's tuning table)
ENV_RR_WINDOW: Final = "PYCLUSTER_RR_WINDOW"
ENV_HANDOFF_TIMEOUT: Final = "PYCLUSTER_HANDOFF_TIMEOUT"
ENV_RR_PAIRS: Final = "PYCLUSTER_RR_PAIRS"
