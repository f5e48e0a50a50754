"""configs/Dockerfile and configs/kubernetes.yaml (README "Containers and fleets").

Docker's daemon is rarely reachable where the tests run (the client alone
does not build): the Dockerfile is then checked statically (its instructions
parsed: base image, non-root USER, STOPSIGNAL, HEALTHCHECK, ENTRYPOINT and CMD
in exec form), and the commands its CMD and HEALTHCHECK run are run here, as
the container would: with the image's ENV, as the image's numeric uid (when
the tests run as root), the health check polled until it passes, then the
STOPSIGNAL and the graceful exit. Only the listen address (127.0.0.1 and a
free port instead of 0.0.0.0:8000) and the runtime directory (a private one)
differ. With a daemon that answers, the image is also built and run for real.

The Kubernetes manifest is validated against the API schemas that
kubernetes-validate ships (no cluster, no network), its run arguments are
read by `pycluster run`'s own parser, and the stop budget is checked:
terminationGracePeriodSeconds above preStop + graceful_timeout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cli_support import CLI, ROOT, SRC, http_get, pid_gone, unused_port, wait_until

DOCKERFILE = ROOT / "configs" / "Dockerfile"
MANIFEST = ROOT / "configs" / "kubernetes.yaml"
DOCKER_STOP_TIMEOUT = 10.0  # `docker stop`'s default -t
STATUS_WAIT = 5.0  # how long `pycluster status` waits for a master's answer (README "Exit codes")


# -- the Dockerfile, parsed -------------------------------------------------------------------------

def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, even inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continuation line"
    return out


def exec_form(args: str, what: str) -> list[str]:
    """A JSON array of strings (exec form: no shell between Docker and the process)."""
    try:
        argv = json.loads(args)
    except json.JSONDecodeError:
        pytest.fail(f"{what} is in shell form ({args!r}): PID 1 would be /bin/sh, not pycluster")
    assert isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv), f"{what}: {args!r}"
    return argv


def seconds(value: str) -> float:
    """A Docker duration: 10s, 1m30s, 500ms."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a duration: {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


class Image:
    """What `docker build` would make of configs/Dockerfile (final stage)."""

    def __init__(self, path: Path):
        self.steps = instructions(path.read_text())
        self.env: dict[str, str] = {}
        self.user = self.entrypoint = self.cmd = self.stopsignal = None
        self.healthcheck: tuple[dict[str, str], list[str]] | None = None
        self.expose: list[str] = []
        self.runs: list[str] = []
        for keyword, rest in self.steps:
            if keyword == "FROM":  # a new stage starts afresh
                self.env, self.user, self.entrypoint, self.cmd, self.runs = {}, None, None, None, []
            elif keyword == "ENV":
                for pair in shlex.split(rest):
                    key, sep, value = pair.partition("=")
                    assert sep, f"ENV {rest!r}: use KEY=VALUE"
                    self.env[key] = value
            elif keyword == "USER":
                self.user = rest
            elif keyword == "ENTRYPOINT":
                self.entrypoint = exec_form(rest, "ENTRYPOINT")
            elif keyword == "CMD":
                self.cmd = exec_form(rest, "CMD")
            elif keyword == "STOPSIGNAL":
                self.stopsignal = rest
            elif keyword == "EXPOSE":
                self.expose += rest.split()
            elif keyword == "RUN":
                self.runs.append(rest)
            elif keyword == "HEALTHCHECK":
                options = {}
                words = rest.split(" ")
                while words and words[0].startswith("--"):
                    key, _, value = words.pop(0)[2:].partition("=")
                    options[key] = value
                rest = " ".join(w for w in words if w)
                assert rest.startswith("CMD "), f"HEALTHCHECK {rest!r}"
                self.healthcheck = (options, exec_form(rest[4:].strip(), "HEALTHCHECK CMD"))

    @property
    def argv(self) -> list[str]:
        return [*(self.entrypoint or []), *(self.cmd or [])]

    @property
    def uid_gid(self) -> tuple[int, int]:
        uid, _, gid = (self.user or "0").partition(":")
        assert uid.isdigit() and (not gid or gid.isdigit()), f"USER {self.user!r}: give a numeric uid[:gid]"
        return int(uid), int(gid or uid)


def run_settings(args: list[str], environ: dict[str, str]):
    """The settings `pycluster run ARGS` would use with this environment (run's own parser)."""
    from pycluster.cli import run_cmd
    from pycluster.master import config
    ctx = run_cmd.make_context("pycluster run", list(args))
    flags = {key: value for key, value in ctx.params.items() if key not in ("target", "config_file")}
    flags["app"] = ctx.params.get("target")
    return config.load(flags, config_path=ctx.params.get("config_file"), environ=environ, cwd=tempfile.gettempdir())


@pytest.fixture(scope="module")
def image() -> Image:
    return Image(DOCKERFILE)


def test_dockerfile_instructions(image):
    assert image.steps[0][0] in ("FROM", "ARG"), "a Dockerfile starts with FROM (or ARG for it)"
    uid, gid = image.uid_gid
    assert uid != 0, f"USER {image.user}: the container must not run as root"
    assert image.stopsignal == "SIGTERM", "SIGTERM is the master's graceful stop"
    # pycluster itself is PID 1, in exec form: no shell in between to swallow the stop signal.
    assert image.entrypoint == ["pycluster", "run"], image.entrypoint
    assert image.cmd, "CMD names the target (the demo)"
    # The health check: status --check, in exec form, with a timeout above status's own wait.
    assert image.healthcheck is not None, "no HEALTHCHECK"
    options, check = image.healthcheck
    assert check[:2] == ["pycluster", "status"] and "--check" in check, check
    assert seconds(options["timeout"]) > STATUS_WAIT, options
    assert seconds(options["interval"]) >= seconds(options["timeout"]), options
    # The control socket's directory exists, belongs to the image's user and is private.
    runtime = image.env.get("PYCLUSTER_RUNTIME_DIR")
    assert runtime, "PYCLUSTER_RUNTIME_DIR is not set: the socket would go to /tmp/pycluster-UID"
    assert any(re.search(rf"install -d -o {uid} -g {gid} -m 0700 {re.escape(runtime)}\b", run) for run in image.runs), \
        f"no RUN creates {runtime} owned by {uid}:{gid}, mode 0700"
    # The settings the container runs with: the port it binds is the one EXPOSEd, and the
    # master's stop (graceful_timeout and a margin) fits in `docker stop`'s default timeout.
    cfg = run_settings(image.argv[2:], image.env)
    ports = [address.rsplit(":", 1)[1] for address in cfg.bind]
    assert ports and set(ports) <= {p.split("/")[0] for p in image.expose}, (cfg.bind, image.expose)
    assert cfg.graceful_timeout + 1 <= DOCKER_STOP_TIMEOUT, cfg.graceful_timeout


def test_dockerfile_parser_rejects_shell_form(tmp_path):
    """The static checks can fail: a shell-form entrypoint and a root user are caught."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace('ENTRYPOINT ["pycluster", "run"]', "ENTRYPOINT pycluster run"))
    with pytest.raises(pytest.fail.Exception, match="shell form"):
        Image(bad)
    bad.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "USER app"))
    with pytest.raises(AssertionError, match="numeric"):
        _ = Image(bad).uid_gid


# -- the Dockerfile's commands, run as the container would -----------------------------------------

def _readable_copy(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for root, _dirs, files in os.walk(dst):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o755 if name.endswith(".so") else 0o644)


def _as_user(uid: int, gid: int) -> dict:
    return {"user": uid, "group": gid, "extra_groups": []} if os.geteuid() == 0 else {}


def _interpreter(uid: int, gid: int, home: Path) -> tuple[list[str], str]:
    """A Python command and PYTHONPATH with which the image's uid can run the master and the
    health check: this interpreter, or (pyenv under a 0700 /root) the system one with
    world-readable copies of pycluster's dependencies."""
    probe = "import click, psutil, pycluster.cli, pycluster.master.arbiter, pycluster.examples.hello"
    for python, path in ((sys.executable, str(SRC)), ("/usr/bin/python3", None)):
        if path is None:
            if not os.path.exists(python):
                continue
            deps = home / "deps"
            for name in ("click", "psutil", "tomli"):
                spec = importlib.util.find_spec(name)
                if spec is not None and spec.submodule_search_locations and not (deps / name).exists():
                    _readable_copy(Path(list(spec.submodule_search_locations)[0]), deps / name)
            _readable_copy(SRC / "pycluster", home / "src" / "pycluster")
            path = f"{home / 'src'}{os.pathsep}{deps}"
        try:
            ok = subprocess.run([python, "-c", probe], env={"PYTHONPATH": path}, cwd=home, capture_output=True,
                                timeout=30, **_as_user(uid, gid)).returncode == 0
        except PermissionError:
            ok = False
        if ok:
            return [python, *CLI[1:]], path
    pytest.skip(f"no Python interpreter that uid {uid} can run pycluster with")


@pytest.fixture
def container(image, tmp_path):
    """The container's environment on this machine: (argv prefix for `pycluster`, env, cwd, uid, gid)."""
    uid, gid = image.uid_gid if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    home = Path(tempfile.mkdtemp(prefix="pyc-ctr-", dir="/tmp"))
    os.chmod(home, 0o755)
    runtime = home / "run"  # what the image's RUN install -d -o UID -g GID -m 0700 makes
    runtime.mkdir(mode=0o700)
    os.chown(runtime, uid, gid)
    app = home / "app"  # WORKDIR: root's, read-only for the user
    app.mkdir(mode=0o755)
    pycluster, pythonpath = _interpreter(uid, gid, home)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": pythonpath, **image.env,
           "PYCLUSTER_RUNTIME_DIR": str(runtime), "PYCLUSTER_BIND": f"127.0.0.1:{unused_port()}"}
    try:
        yield pycluster, env, app, uid, gid
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _command(argv: list[str], pycluster: list[str]) -> list[str]:
    assert argv[0] == "pycluster", argv
    return [*pycluster, *argv[1:]]


def test_dockerfile_commands_run_as_the_container(image, container):
    pycluster, env, cwd, uid, gid = container
    options, check = image.healthcheck
    check_timeout = seconds(options["timeout"])

    def health() -> subprocess.CompletedProcess:
        return subprocess.run(_command(check, pycluster), env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=check_timeout, **_as_user(uid, gid))

    before = health()
    assert before.returncode == 3, f"no master yet: exit 3 expected\n{before}"

    master = subprocess.Popen(_command(image.argv, pycluster), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True, **_as_user(uid, gid))
    try:
        seen: list[int] = []

        def healthy():
            result = health()
            seen.append(result.returncode)
            assert result.returncode in (0, 1, 3), result  # 1 starting, 3 not answering yet, 0 ready
            return result if result.returncode == 0 else None

        ok = wait_until(healthy, 20, "the HEALTHCHECK command to exit 0",
                        lambda: f"exit codes {seen}; master rc={master.poll()}")
        assert re.fullmatch(r"app: \d+ of \d+ workers? ready\n", ok.stdout), ok.stdout
        port = int(env["PYCLUSTER_BIND"].rsplit(":", 1)[1])
        status, headers, body = http_get(port)
        assert status == 200 and body.startswith(b"hello from worker"), (status, body)
        # Every process of the container runs as the image's user.
        import psutil
        procs = [psutil.Process(master.pid), *psutil.Process(master.pid).children(recursive=True)]
        assert {p.uids().effective for p in procs} == {uid}, [(p.pid, p.uids()) for p in procs]
        assert len(procs) >= 2

        # docker stop: STOPSIGNAL, then the master's graceful exit within docker's timeout.
        master.send_signal(getattr(signal, image.stopsignal))
        started = time.monotonic()
        rc = master.wait(timeout=DOCKER_STOP_TIMEOUT)
        took = time.monotonic() - started
        output = master.stdout.read()
        assert rc == 0, output
        assert "stopped (exit 0)" in output, output
        assert all(pid_gone(p.pid) for p in procs)
        print(f"docker stop equivalent: exit 0 in {took:.2f}s")
        after = health()
        assert after.returncode == 3, f"after the stop: exit 3 expected\n{after}"
    finally:
        _kill_group(master)


# An app whose workers ignore SIGTERM: only the master's SIGKILL after graceful_timeout ends them.
STUBBORN = """
import signal, threading
import pycluster as cluster

def main():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cluster.listeners()
    print("stubborn up", flush=True)
    threading.Event().wait()
"""


def test_stop_ends_within_graceful_timeout_plus_a_margin(image, container):
    """The master's stop lasts graceful_timeout plus well under the 2 s the image leaves before
    `docker stop`'s SIGKILL (10 s - 8 s), measured with a drain that never ends by itself."""
    pycluster, env, cwd, uid, gid = container
    (cwd / "stubborn.py").write_text(STUBBORN)
    os.chmod(cwd / "stubborn.py", 0o644)
    graceful = 1.0
    env = {**env, "PYCLUSTER_GRACEFUL_TIMEOUT": str(graceful), "PYTHONPATH": f"{cwd}{os.pathsep}{env['PYTHONPATH']}"}
    argv = [*image.entrypoint, "stubborn:main", "-w", "2"]
    master = subprocess.Popen(_command(argv, pycluster), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True, **_as_user(uid, gid))
    check = _command(image.healthcheck[1], pycluster)
    try:
        wait_until(lambda: subprocess.run(check, env=env, cwd=cwd, capture_output=True, timeout=10,
                                          **_as_user(uid, gid)).returncode == 0, 20, "ready")
        master.send_signal(signal.SIGTERM)
        started = time.monotonic()
        rc = master.wait(timeout=DOCKER_STOP_TIMEOUT)
        took = time.monotonic() - started
        output = master.stdout.read()
        assert rc == 0, output
        print(f"stop with graceful_timeout {graceful}s: {took:.2f}s")
        margin = DOCKER_STOP_TIMEOUT - float(image.env["PYCLUSTER_GRACEFUL_TIMEOUT"])
        assert graceful <= took < graceful + margin / 2, (took, output)
    finally:
        _kill_group(master)


def _kill_group(master: subprocess.Popen) -> None:
    """Whatever happened, nothing of the cluster outlives the test."""
    try:
        os.killpg(master.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    master.wait(timeout=5)


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.mark.timeout(600)
@pytest.mark.skipif(not _docker_answers(), reason="no Docker daemon answers (the client alone cannot build)")
def test_docker_build_and_run(image):  # pragma: no cover - needs a daemon (and the base image or a registry)
    tag = f"pycluster-test:{os.getpid()}"
    name = f"pycluster-test-{os.getpid()}"
    build = subprocess.run(["docker", "build", "-f", str(DOCKERFILE), "-t", tag, str(ROOT)],
                           capture_output=True, text=True, timeout=480)
    assert build.returncode == 0, build.stderr[-3000:]
    try:
        port = unused_port()
        subprocess.run(["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", tag],
                       check=True, capture_output=True, timeout=30)

        def health():
            out = subprocess.run(["docker", "inspect", "--format", "{{.State.Health.Status}}", name],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            return out == "healthy"

        wait_until(health, 60, "the container's health to be 'healthy'")
        assert http_get(port)[0] == 200
        assert subprocess.run(["docker", "exec", name, "pycluster", "status", "--check"],
                              capture_output=True, timeout=15).returncode == 0
        stop = subprocess.run(["docker", "stop", name], capture_output=True, timeout=30)
        assert stop.returncode == 0
        code = subprocess.run(["docker", "inspect", "--format", "{{.State.ExitCode}}", name],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        assert code == "0", code
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=30)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=60)


# -- the Kubernetes manifest ------------------------------------------------------------------------

yaml = pytest.importorskip("yaml")


@pytest.fixture(scope="module")
def manifest() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def test_manifest_passes_the_api_schemas(manifest, tmp_path):
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.utils.latest_version()
    assert {doc["kind"] for doc in manifest} == {"Deployment", "Service"}
    for doc in manifest:
        kv.validate(doc, version, strict=True)  # raises on an unknown field or a wrong type
    # The validator is not vacuous: a misspelt field and a wrong type are refused.
    deployment = next(doc for doc in manifest if doc["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 40
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, version, strict=True)
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "forty"
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, version, strict=True)


def _container(manifest) -> tuple[dict, dict]:
    pod = next(doc for doc in manifest if doc["kind"] == "Deployment")["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    return pod, container


def _run_args(container: dict) -> tuple[list[str], str | None]:
    """The container's `pycluster run` arguments, without --metrics ADDR when this checkout's
    run does not have that option yet; and the metrics address."""
    from pycluster.master.config import BY_NAME
    args = list(container["args"])
    metrics = None
    if "--metrics" in args:
        i = args.index("--metrics")
        metrics = args[i + 1]
        if "metrics" not in BY_NAME:
            del args[i:i + 2]
    return args, metrics


def test_manifest_stop_budget_probes_and_metrics(manifest, image):
    pod, container = _container(manifest)
    spec = pod["spec"]
    args, metrics = _run_args(container)
    env = {**image.env, **{e["name"]: e["value"] for e in container.get("env", [])}}
    cfg = run_settings(args, env)  # run's own parser: a typo in the args fails here
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep", pre_stop
    grace = spec["terminationGracePeriodSeconds"]
    # The grace period counts from preStop's start: it must cover preStop, then the drain.
    assert grace >= float(pre_stop[1]) + cfg.graceful_timeout + 5, (grace, pre_stop, cfg.graceful_timeout)
    assert cfg.workers == int(container["resources"]["requests"]["cpu"]), "one worker per requested CPU"
    # Probes: readiness is status --check; liveness is only "the master answers", less often.
    ready, alive = container["readinessProbe"], container["livenessProbe"]
    assert ready["exec"]["command"][:2] == ["pycluster", "status"] and "--check" in ready["exec"]["command"]
    assert alive["exec"]["command"][:2] == ["pycluster", "status"] and "--check" not in alive["exec"]["command"]
    for probe in (ready, alive):
        assert probe["timeoutSeconds"] > STATUS_WAIT, probe
    assert alive["periodSeconds"] * alive["failureThreshold"] >= 30, "liveness would restart a busy master"
    # Non-root, as the image.
    uid, gid = image.uid_gid
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == uid
    # The runtime directory is writable on a read-only root filesystem.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert image.env["PYCLUSTER_RUNTIME_DIR"] in mounts
    # The metrics port: annotated, declared, and the one --metrics listens on.
    notes = pod["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == "/metrics"
    assert metrics is not None and metrics.rsplit(":", 1)[1] == notes["prometheus.io/port"] == "9100"
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"] == 9100
    # The Service reaches the port the master binds.
    http = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert [int(a.rsplit(":", 1)[1]) for a in cfg.bind] == [http]
    service = next(doc for doc in manifest if doc["kind"] == "Service")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


def test_manifest_probe_commands_run_against_a_master(manifest, image, container):
    """The readiness and liveness commands, run as the kubelet would (in the container, as its
    user), against a master started with the manifest's arguments."""
    pycluster, env, cwd, uid, gid = container
    _pod, spec = _container(manifest)
    args, _metrics = _run_args(spec)
    args = [a if a != "0.0.0.0:8000" else env["PYCLUSTER_BIND"] for a in args]
    ready = _command(spec["readinessProbe"]["exec"]["command"], pycluster)
    alive = _command(spec["livenessProbe"]["exec"]["command"], pycluster)

    def probe(cmd):
        return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=10, **_as_user(uid, gid))

    assert probe(alive).returncode == 3 and probe(ready).returncode == 3  # no master: both fail
    master = subprocess.Popen(_command([*image.entrypoint, *args], pycluster), env=env, cwd=cwd,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True, **_as_user(uid, gid))
    try:
        wait_until(lambda: probe(ready).returncode == 0, 20, "the readiness probe to pass")
        assert probe(alive).returncode == 0
        # Paused (scale 0): not ready (out of the Service's endpoints), still alive (no restart).
        scale = subprocess.run([*pycluster, "scale", "0"], env=env, cwd=cwd, capture_output=True, text=True,
                               timeout=10, **_as_user(uid, gid))
        assert scale.returncode == 0, scale
        not_ready = probe(ready)
        assert not_ready.returncode == 1 and "0 workers wanted" in not_ready.stderr, not_ready
        assert probe(alive).returncode == 0
        scale = subprocess.run([*pycluster, "scale", "2"], env=env, cwd=cwd, capture_output=True, text=True,
                               timeout=10, **_as_user(uid, gid))
        assert scale.returncode == 0, scale
        wait_until(lambda: probe(ready).returncode == 0, 20, "ready again")
        master.send_signal(signal.SIGTERM)
        assert master.wait(timeout=DOCKER_STOP_TIMEOUT) == 0
    finally:
        _kill_group(master)
