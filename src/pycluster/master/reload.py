"""Rolling reload (nginx semantics): boot the new code first, keep the old
generation serving if anything fails.

For each slot, one at a time: fork a replacement (freshly imported code),
wait until it is ready (``boot_timeout``), take the old worker out of
rotation and stop it gracefully. A replacement that dies or times out
aborts the reload: it is killed, the old workers keep serving, and the
caller gets the replacement's stderr tail. One reload at a time.

The reload is a task the master owns, not part of the control request that
asked for it: a ``reload --wait`` client that hangs up (or is cut off) stops
getting progress lines, and the reload runs on to its end.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from ..control import protocol
from ..control.protocol import RequestError
from .config import resolve_workers


async def rolling_reload(arbiter, *, wait: bool, writer: Any) -> Any:
    if arbiter.state == "reloading":
        raise RequestError("busy", "a reload is already running; wait for it to finish")
    if arbiter.state != "running":
        raise RequestError("not_running", f"cannot reload while the cluster is {arbiter.state}")
    notes = arbiter.reread_config()  # raises RequestError("bad_config") before any worker is touched
    arbiter.state = "reloading"
    generation = arbiter.generation + 1
    if arbiter.notify is not None:
        arbiter.notify.reloading(arbiter)
    task = arbiter.keep_task(_roll(arbiter, generation, _Progress(writer) if wait else None),
                             f"the reload to generation {generation}")
    if not wait:
        return {"generation": generation, "started": True, "notes": notes}
    try:
        result = await asyncio.shield(task)  # cancelling this request leaves the reload running
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - logged with its traceback by keep_task
        raise RequestError("internal", f"the reload failed: {exc!r} (traceback in the master's log)") from None
    result["notes"] = notes
    if not result["ok"]:
        raise RequestError("reload_failed", result["message"])
    return result


class _Progress:
    """``reload --wait``'s progress lines. Written, never awaited: the reload
    neither waits for its client nor stops with it (a client gone quiet gets
    no more lines; there are only as many as workers)."""

    def __init__(self, writer: Any):
        self.writer = writer

    def report(self, progress: dict) -> None:
        writer = self.writer
        if writer is None:
            return
        try:
            if writer.is_closing():
                raise ConnectionError("the client hung up")
            writer.write(protocol.ok({"progress": progress}))
        except (ConnectionError, OSError, RuntimeError):
            self.writer = None


async def _roll(arbiter, generation: int, progress: _Progress | None) -> dict:
    """Replace every slot of an older generation, one at a time. The set of
    slots is looked at afresh for each: a scale during the reload adds slots
    that start on the new code (and need no replacement) or removes slots
    (not replaced any more)."""
    started = time.monotonic()
    total = len(arbiter.slots)
    replaced = 0
    old_server = new_server = None
    ok = False
    try:
        if arbiter.cfg.preload:
            # --preload: the new code is imported once, by a new fork server.
            new_server = arbiter.start_forkserver()
            if not await arbiter._forkserver_ready(new_server):
                failure = f"the new code failed to load: {new_server.error}"
                arbiter.logs.master(f"reload aborted: {failure}; generation {arbiter.generation} keeps serving")
                return _result(False, failure, generation, replaced, total, started)
            old_server, arbiter.forkserver = arbiter.forkserver, new_server
        arbiter.reload_generation = generation  # workers started from now on run the new code
        while True:
            if arbiter.state != "reloading":
                return _result(False, "the reload was interrupted (the cluster is stopping)", generation,
                               replaced, total, started)
            pending = [arbiter.slots[i] for i in sorted(arbiter.slots) if arbiter.slots[i].generation < generation]
            total = replaced + len(pending)
            if not pending:
                break
            slot = pending[0]
            new, failure = await _boot_replacement(arbiter, generation)
            if failure is not None and arbiter.state == "stopping":
                arbiter.logs.master(f"reload interrupted (the cluster is stopping): {failure}")
                return _result(False, "the reload was interrupted (the cluster is stopping)", generation,
                               replaced, total, started)
            if failure is not None:
                arbiter.logs.master(f"reload aborted: {failure}; generation {arbiter.generation} keeps serving")
                return _result(False, failure, generation, replaced, total, started)
            if arbiter.slots.get(slot.index) is not slot or slot.generation >= generation:
                # Scaled away, or restarted on the new code, while the replacement booted.
                arbiter.retire_worker(new)
                continue
            old = slot.worker
            if slot.retry is not None:
                slot.retry.cancel()
                slot.retry = None
            arbiter.adopt(slot, new, generation)
            if old is not None:
                arbiter.retire_worker(old)
            replaced += 1
            if progress is not None:
                progress.report({"replaced": replaced, "total": total, "worker": new.id, "pid": new.pid})
        arbiter.generation = generation
        ok = True
        if arbiter.scale_after_reload is not None:
            was = len(arbiter.slots)
            arbiter.config_workers = arbiter.scale_after_reload
            arbiter.scale(resolve_workers(arbiter.scale_after_reload))
            if arbiter.wanted != was:
                arbiter.logs.master(f"reload: workers {was} -> {arbiter.wanted} (the config changed)")
        arbiter.logs.master(f"reload complete: generation {generation}, {replaced} workers replaced"
                            f" in {time.monotonic() - started:.2f}s")
        return _result(True, "reloaded", generation, replaced, total, started)
    finally:
        arbiter.scale_after_reload = None
        arbiter.reload_generation = None
        if old_server is not None:
            if ok:
                arbiter._retire_forkserver(old_server)
            else:  # the old generation keeps serving: its restarts use its code
                arbiter.forkserver = old_server
                arbiter._retire_forkserver(new_server)
                if not old_server.alive() and arbiter.state == "reloading":
                    arbiter.logs.master(f"the fork server (pid {old_server.pid}) exited during the reload;"
                                        f" starting a new one")
                    arbiter._retire_forkserver(old_server)
                    arbiter.restart_forkserver()
        if arbiter.state == "reloading":
            arbiter.state = "running"
        if arbiter.notify is not None:
            arbiter.notify.ready(arbiter)


async def _boot_replacement(arbiter, generation: int) -> tuple[Any, str | None]:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future = loop.create_future()
    if arbiter.state == "stopping":
        return None, "the cluster is stopping"
    try:
        worker = await arbiter.fork_worker(arbiter.worker_env())
    except OSError as exc:
        return None, f"cannot start a new worker: {exc}"
    worker.heartbeat_timeout = arbiter.cfg.timeout  # what worker_env asked of it (watchdogs)
    tail: deque = deque(maxlen=20)
    arbiter.stderr_tails[worker.id] = tail
    arbiter.logs.attach(worker, loop, tail)
    arbiter.booting[worker.id] = ready
    try:
        ok = await asyncio.wait_for(ready, arbiter.cfg.boot_timeout)
    except asyncio.TimeoutError:
        ok = None
    finally:
        arbiter.booting.pop(worker.id, None)
    if ok:
        return worker, None
    why = "was not ready in time" if ok is None else f"exited ({worker.signal_code or worker.exit_code})"
    if not worker.is_dead():
        worker.signal("SIGKILL")
    lines = "\n".join("  " + line for line in tail)
    message = f"new worker {worker.id} (pid {worker.pid}) {why}"
    if lines:
        message += f"; its last stderr lines:\n{lines}"
    return None, message


def _result(ok: bool, message: str, generation: int, replaced: int, total: int, started: float) -> dict:
    return {"ok": ok, "message": message, "generation": generation, "replaced": replaced,
            "total": total, "seconds": round(time.monotonic() - started, 3)}
