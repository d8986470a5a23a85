"""``promptcam run``: capture, engine and web as supervised child processes under one config.

Start-up, in order: check that every port to be bound is free (one-line error naming the port
otherwise) and the model preset (known; its Hub weights cached or the Hub reachable; on the demo
source, a Hub preset whose weights are neither gives way to the shipped ``demo`` preset, said in
one line: ``engine.models.availability``), write the resolved config to a private temporary YAML that
every child reads (``--config``), start the children, print the page URL.

Children: ``python -m clients.launcher --child NAME`` (a trampoline that arranges to die with
the launcher, sets the process title ``promptcam: NAME`` and runs ``promptcam NAME``). Each
runs in its own session, so a terminal's Ctrl-C reaches only the launcher, which stops them in
order; each gets ``PR_SET_PDEATHSIG`` = SIGKILL, so even a SIGKILLed launcher leaves no child
behind. Their stdout/stderr are forwarded to the launcher's stderr, prefixed ``[name]``.

Supervision: a child that exits is restarted after an exponential backoff
(``run.restart_initial_s`` doubling to ``run.restart_max_s``; reset once a child has run
``run.stable_after_s``), and its restart counter grows. Not restarted: capture ending a finite
source cleanly (exit 0). Fatal (everything stops, the launcher exits 2 with the child's error
line): a child that exits with status 2 (the CLI's expected-error status, e.g. model weights
that cannot be fetched) before it ever became ready, or one that fails
``run.max_start_failures`` times in a row before becoming ready.

Ready means: capture published a status message, the engine answered ``stats``, the web
answered ``/healthz``. A child not ready within its kind's start timeout
(``run.capture_start_timeout_s``, ``run.engine_start_timeout_s``: model loading is slow on CPU,
``run.web_start_timeout_s``), stopped (SIGSTOP) or stuck on something that never answers, is
killed and restarted with backoff like a child that crashed (a failed start, counted in
``start_timeouts``). A ready child is watched: one stopped by a signal (SIGSTOP) is shown
``suspended`` and not ready at once; one the progress watchdog finds wedged (no answer, or an
engine publishing nothing while frames flow, for ``run.watchdog_s``: ``clients.health``) is
killed and restarted like a child that died, and counted in ``watchdog_restarts``.
Status: one line on stdout every ``run.status_every_s`` and the JSON status file every second
(``clients.health``; mode 0600, in the run directory, mode 0700, unless configured, without the
token). The engine keeps its runtime state in the run directory (``engine.state_file``), so a
restarted engine tracks the prompt and manual objects it had. Stop: SIGINT/SIGTERM or
``--duration``; children get SIGTERM, then SIGKILL after ``run.stop_timeout_s``; a second signal
kills at once.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import psutil
import yaml

from clients.health import (
    ChildInfo,
    Observed,
    ProgressWatchdog,
    StatusCollector,
    status_document,
    status_line,
    write_status_file,
)
from stream.config import LOOPBACK_HOSTS, Config, RunConfig, load_config
from stream.errors import PromptcamError

log = logging.getLogger(__name__)

CHILDREN = ("capture", "engine", "web", "events", "foxglove", "dds", "record")
EXPECTED_ERROR_EXIT = 2  # the CLI's exit status for expected, one-line errors
PR_SET_PDEATHSIG = 1


class LaunchError(PromptcamError):
    """The launcher cannot start or keep the run going; the message is one line."""


class PortInUseError(LaunchError):
    """A port the run must bind is taken."""


class ChildFailedError(LaunchError):
    """A child failed in a way restarting cannot fix."""


# --------------------------------------------------------------------------- start-up checks


def _tcp_host_port(endpoint: str) -> tuple[str, int] | None:
    if not endpoint.startswith("tcp://"):
        return None
    host, _, port = endpoint[6:].rpartition(":")
    return host.strip("[]"), int(port)


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # the children bind with SO_REUSEADDR too (ZeroMQ, aiohttp), so TIME_WAIT is no conflict
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise LaunchError(f"cannot check port {port} on {host}: {e.strerror}") from None
    return True


def bound_ports(cfg: Config) -> list[tuple[str, str, int]]:
    """(config key, host, port) of every TCP port a run binds."""
    out = []
    cameras = cfg.camera_settings()
    for name, cam in cameras.items():
        hp = _tcp_host_port(cam.frames)
        if hp is not None:
            out.append((f"cameras.{name}.frames" if cfg.cameras else "bus.frames", *hp))
    for key in ("tracks", "annotated", "control"):
        hp = _tcp_host_port(getattr(cfg.bus, key))
        if hp is not None:
            out.append((f"bus.{key}", *hp))
    out.append(("web.port", cfg.web.host, cfg.web.port))
    if cfg.foxglove.enabled:
        out.append(("foxglove.port", cfg.foxglove.host, cfg.foxglove.port))
    if cfg.events.active():
        hp = _tcp_host_port(cfg.bus.events)
        if hp is not None:
            out.append(("bus.events", *hp))
    return out


def check_ports_free(cfg: Config) -> None:
    """Raise ``PortInUseError`` naming the first port of the run that is already taken."""
    seen: dict[tuple[str, int], str] = {}
    for key, host, port in bound_ports(cfg):
        if port == 0:
            continue
        if (host, port) in seen:
            raise LaunchError(f"port {port} is configured twice ({seen[(host, port)]} and {key})")
        seen[(host, port)] = key
        if not _port_free(host, port):
            raise PortInUseError(
                f"port {port} ({key}) on {host} is already in use (another promptcam running?); "
                f"choose another with --set {key}=..."
            )


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_models(cfg: Config) -> None:
    """Fail fast on an unknown preset or detector, or on Hub weights that are neither cached
    nor reachable, instead of letting the engine child find out."""
    from engine.models.detectors import check_source, detector_source
    from engine.models.hub import ensure_available
    from engine.models.presets import hub_files

    with_detector = any(c.engine.prompt.strip() for c in cfg.camera_settings().values())
    if with_detector:
        check_source(detector_source(cfg.models))
    ensure_available(hub_files(cfg.models, with_detector=with_detector))


def _demo_fallback(cfg: Config, args: argparse.Namespace) -> Config:
    """The demo source on Hub weights that cannot be had runs on the ``demo`` preset (one line)."""
    from engine.models.availability import demo_fallback

    cfg, note = demo_fallback(cfg, explicit_models=getattr(args, "models", None) is not None)
    if note:
        print(note, flush=True)
    return cfg


def page_url(cfg: Config) -> str:
    host = cfg.web.host
    if host in ("0.0.0.0", "::", "[::]", ""):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    url = f"http://{host}:{cfg.web.port}/"
    return f"{url}?token={cfg.web.token}" if cfg.web.token else url


def write_child_config(cfg: Config, directory: Path) -> Path:
    """The resolved config as YAML, readable only by this user (it may hold a token or RTSP
    credentials); every child loads it with ``--config``."""
    path = directory / "config.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(cfg.model_dump(mode="json"), f, sort_keys=False)
    return path


# --------------------------------------------------------------------------- supervision


@dataclass(frozen=True)
class ChildSpec:
    """What to run for one child: ``argv`` and whether a clean exit (0) is restarted."""

    name: str
    argv: Sequence[str]
    restart_on_clean_exit: bool = True
    # An essential child that cannot start stops the run; a non-essential one (a camera among
    # several) is marked failed, with its error line, and the others go on.
    essential: bool = True
    # Not ready this long after it started: killed, and restarted like a child that crashed.
    start_timeout_s: float | None = None
    # Ready once its output has a line containing this (a child with no status to poll: dds,
    # record); such a child is not watched by the progress watchdog, only restarted on exit.
    ready_line: str | None = None


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = None
    started_at: float = 0.0  # monotonic
    ready: bool = False
    ready_at: float = 0.0  # monotonic
    ever_ready: bool = False
    suspended: bool = False  # stopped by a signal (SIGSTOP), as the kernel says
    restarts: int = 0
    watchdog_restarts: int = 0
    start_timeouts: int = 0  # times it was killed for not becoming ready in time
    killed_because: str | None = None  # why the launcher killed the current process
    start_failures: int = 0  # consecutive exits before becoming ready
    backoff_level: int = 0
    next_start_at: float | None = None
    last_exit: int | None = None
    state: str = "starting"
    last_lines: list[str] = field(default_factory=list)
    error: str | None = None  # why a non-essential child failed for good
    said_ready: bool = False  # printed its spec's ready_line since it started

    def error_line(self) -> str:
        """The child's last error line (the CLI's ``promptcam X: error: ...``), else its last
        line; for a child the launcher killed, why."""
        if self.killed_because is not None:
            return self.killed_because
        for line in reversed(self.last_lines):
            if "error" in line.lower():
                return line
        return self.last_lines[-1] if self.last_lines else "(no output)"


def child_argv(name: str, config_path: Path, camera: str | None = None) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "clients.launcher",
        "--child",
        name,
        "--parent",
        str(os.getpid()),
        "--config",
        str(config_path),
    ]
    return argv if camera is None else [*argv, "--camera", camera]


class Supervisor:
    """Starts children, restarts those that exit (with backoff), stops them all.

    Call ``start()``, ``poll()`` and ``stop()`` from one long-lived thread: a child's
    parent-death signal fires when the *thread* that started it ends.
    ``watchdog(name, ready_at, now)``: why a ready child is wedged (it is then killed and
    restarted), or None.
    """

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        run: RunConfig,
        is_ready: Callable[[str, float], bool] | None = None,
        output: IO[str] | None = None,
        env: Mapping[str, str] | None = None,
        watchdog: Callable[[str, float, float], str | None] | None = None,
    ) -> None:
        self.run = run
        self.children = {s.name: _Child(s) for s in specs}
        self.is_ready = is_ready
        self.watchdog = watchdog
        self.output = output if output is not None else sys.stderr
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._out_lock = threading.Lock()

    # -- lifecycle

    def start(self) -> None:
        for c in self.children.values():
            self._spawn(c)

    def _spawn(self, c: _Child) -> None:
        c.last_lines = []
        c.killed_because = None
        c.said_ready = False
        c.proc = subprocess.Popen(
            list(c.spec.argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=self.env,
        )
        c.started_at = time.monotonic()
        c.ready = False
        c.suspended = False
        c.state = "starting"
        c.next_start_at = None
        c.reader = threading.Thread(
            target=self._forward, args=(c, c.proc), name=f"output-{c.spec.name}", daemon=True
        )
        c.reader.start()
        log.info("started %s (pid %d)", c.spec.name, c.proc.pid)

    def _forward(self, c: _Child, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            c.last_lines = [*c.last_lines[-19:], line]
            if c.spec.ready_line is not None and c.spec.ready_line in line:
                c.said_ready = True
            with self._out_lock:
                self.output.write(f"[{c.spec.name}] {line}\n")
                self.output.flush()
        proc.stdout.close()

    def poll(self) -> None:
        """Notice exits and readiness, start due restarts; ``ChildFailedError`` when fatal."""
        now = time.monotonic()
        for c in self.children.values():
            if c.proc is not None and c.proc.poll() is None:
                if not c.ready and (
                    c.said_ready
                    or (
                        c.spec.ready_line is None
                        and self.is_ready is not None
                        and self.is_ready(c.spec.name, c.started_at)
                    )
                ):
                    c.ready = c.ever_ready = True
                    c.ready_at = now
                    c.start_failures = 0
                    c.state = "running"
                    log.info("%s ready after %.1fs", c.spec.name, now - c.started_at)
                if c.ready:
                    self._watch(c, now)
                else:
                    self._watch_start(c, now)
                continue
            if c.proc is not None:
                self._on_exit(c, now)
            if c.next_start_at is not None and now >= c.next_start_at:
                c.restarts += 1
                self._spawn(c)

    def _mark_suspended(self, c: _Child, active: str) -> None:
        assert c.proc is not None
        suspended = _is_suspended(c.proc.pid)
        if suspended != c.suspended:
            c.suspended = suspended
            c.state = "suspended" if suspended else active
            log.warning("%s %s", c.spec.name, "is suspended (SIGSTOP?)" if suspended else "resumed")

    def _watch_start(self, c: _Child, now: float) -> None:
        """Kill a child that did not become ready within its start timeout (stopped, or stuck
        on something that never answers); its exit is then handled as a failed start."""
        assert c.proc is not None
        self._mark_suspended(c, "starting")
        limit = c.spec.start_timeout_s
        if limit is None or now - c.started_at <= limit:
            return
        c.start_timeouts += 1
        c.killed_because = f"not ready within its start timeout of {limit:g}s"
        c.state = "wedged"
        log.warning(
            "%s %s (%s): killing it, start timeout %d",
            c.spec.name,
            c.killed_because,
            "suspended" if c.suspended else "no answer",
            c.start_timeouts,
        )
        self._kill(c)

    def _kill(self, c: _Child) -> None:
        assert c.proc is not None
        _signal_group(c, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):  # poll() sees the exit later
            c.proc.wait(timeout=5.0)

    def _watch(self, c: _Child, now: float) -> None:
        """Mark a suspended child, kill a wedged one (its exit is then handled as any exit)."""
        assert c.proc is not None
        self._mark_suspended(c, "running")
        reason = None
        if self.watchdog is not None and c.spec.ready_line is None:  # no status to judge by
            reason = self.watchdog(c.spec.name, c.ready_at, now)
        if reason is None:
            return
        c.watchdog_restarts += 1
        c.state = "wedged"
        log.warning(
            "%s is wedged (%s): killing it, watchdog restart %d",
            c.spec.name,
            reason,
            c.watchdog_restarts,
        )
        self._kill(c)

    def _on_exit(self, c: _Child, now: float) -> None:
        assert c.proc is not None
        code = c.proc.returncode
        ran = now - c.started_at
        if c.reader is not None:
            c.reader.join(timeout=2.0)  # collect its last lines
        c.proc = None
        c.last_exit = code
        name = c.spec.name
        if code == EXPECTED_ERROR_EXIT and not c.ever_ready:
            c.state = "failed"
            why = f"{name} could not start: {_strip_prefix(c.error_line(), name)}"
            if not c.spec.essential:
                c.error = why
                log.error("%s; the other children go on", why)
                return
            raise ChildFailedError(why)
        if code == 0 and not c.spec.restart_on_clean_exit:
            c.state = "finished"
            log.info("%s finished (exit 0); not restarted", name)
            return
        if not c.ready:
            c.start_failures += 1
            if c.start_failures >= self.run.max_start_failures:
                c.state = "failed"
                why = (
                    f"{name} failed {c.start_failures} times before becoming ready (exit {code}): "
                    f"{_strip_prefix(c.error_line(), name)}"
                )
                if not c.spec.essential:
                    c.error = why
                    log.error("%s; the other children go on", why)
                    return
                raise ChildFailedError(why)
        if ran >= self.run.stable_after_s:
            c.backoff_level = 0
        delay = min(self.run.restart_initial_s * 2**c.backoff_level, self.run.restart_max_s)
        c.backoff_level += 1
        c.next_start_at = now + delay
        c.state = "backoff"
        log.warning(
            "%s exited (%s) after %.1fs; restart %d in %.1fs",
            name,
            _describe_exit(code),
            ran,
            c.restarts + 1,
            delay,
        )

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM every child (its whole process group), SIGKILL what is left after the timeout."""
        timeout_s = self.run.stop_timeout_s if timeout_s is None else timeout_s
        live = [c for c in self.children.values() if c.proc is not None and c.proc.poll() is None]
        for c in live:
            _signal_group(c, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for c in live:
            assert c.proc is not None
            try:
                c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.1fs; killing it", c.spec.name, timeout_s)
                _signal_group(c, signal.SIGKILL)
                c.proc.wait()
        for c in self.children.values():
            if c.proc is not None:
                _signal_group(c, signal.SIGKILL)  # its group may hold grandchildren
                c.proc.wait()
                c.last_exit = c.proc.returncode
            if c.reader is not None:
                c.reader.join(timeout=2.0)
            c.proc = None
            c.next_start_at = None
            if c.state != "failed":
                c.state = "stopped"

    def kill_now(self) -> None:
        for c in self.children.values():
            if c.proc is not None and c.proc.poll() is None:
                _signal_group(c, signal.SIGKILL)

    # -- views

    def info(self) -> dict[str, ChildInfo]:
        now = time.monotonic()
        out = {}
        for name, c in self.children.items():
            alive = c.proc is not None and c.proc.poll() is None
            out[name] = ChildInfo(
                name=name,
                pid=c.proc.pid if alive and c.proc is not None else None,
                state=c.state,
                ready=c.ready and alive and not c.suspended,
                restarts=c.restarts,
                last_exit=c.last_exit,
                uptime_s=now - c.started_at if alive else None,
                error=c.error,
                watchdog_restarts=c.watchdog_restarts,
                start_timeouts=c.start_timeouts,
            )
        return out

    def pids(self) -> dict[str, int]:
        return {n: c.proc.pid for n, c in self.children.items() if c.proc is not None}


def _is_suspended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except psutil.Error:
        return False  # gone: poll() will see the exit


def _signal_group(c: _Child, sig: int) -> None:
    assert c.proc is not None
    try:
        os.killpg(c.proc.pid, sig)  # its own session: pgid == pid
    except ProcessLookupError:
        pass  # already gone
    except PermissionError:
        c.proc.send_signal(sig)


def _strip_prefix(line: str, name: str) -> str:
    for prefix in (f"promptcam {name}: error: ", f"promptcam {name}: "):
        if line.startswith(prefix):
            return line[len(prefix) :]
    return line


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit {code}"


# --------------------------------------------------------------------------- the run


class _StopRequest:
    """Set by SIGINT/SIGTERM; a second signal asks for an immediate kill."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signals = 0
        self.on_second: Callable[[], None] | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals == 1:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            self.event.set()
        elif self.on_second is not None:
            self.on_second()


def prepare_config(cfg: Config, run_dir: Path) -> Config:
    """The config the children get: web port 0 resolved to a concrete free port (so the URL is
    known and restarts keep it), the status file and the engine's state file placed in
    ``run_dir`` unless configured."""
    tree = cfg.model_dump(mode="json")
    if cfg.web.port == 0:
        tree["web"]["port"] = _free_port(
            cfg.web.host if cfg.web.host in LOOPBACK_HOSTS else "0.0.0.0"
        )
    if cfg.foxglove.enabled and cfg.foxglove.port == 0:
        tree["foxglove"]["port"] = _free_port(
            cfg.foxglove.host if cfg.foxglove.host in LOOPBACK_HOSTS else "0.0.0.0"
        )
    if cfg.run.status_file is None:
        tree["run"]["status_file"] = str(run_dir / "status.json")
    if cfg.engine.state_file is None:
        tree["engine"]["state_file"] = str(run_dir / "engine-state.json")
    if cfg.events.active() and cfg.events.status_file is None:
        tree["events"]["status_file"] = str(run_dir / "events-status.json")
    return Config.model_validate(tree)


def child_specs(cfg: Config, config_path: Path) -> list[ChildSpec]:
    """One capture per camera (``capture``, or ``capture:NAME`` with a cameras mapping, each
    restarted on its own), one engine for all cameras, one web server; each with its kind's
    start timeout (``run.*_start_timeout_s``)."""
    capture_limit = cfg.run.capture_start_timeout_s
    if cfg.cameras:
        captures = [
            ChildSpec(
                f"capture:{name}",
                child_argv("capture", config_path, camera=name),
                restart_on_clean_exit=False,
                essential=False,
                start_timeout_s=capture_limit,
            )
            for name in cfg.cameras
        ]
    else:
        captures = [
            ChildSpec(
                "capture",
                child_argv("capture", config_path),
                restart_on_clean_exit=False,
                start_timeout_s=capture_limit,
            )
        ]
    specs = [
        *captures,
        ChildSpec(
            "engine",
            child_argv("engine", config_path),
            start_timeout_s=cfg.run.engine_start_timeout_s,
        ),
        ChildSpec(
            "web", child_argv("web", config_path), start_timeout_s=cfg.run.web_start_timeout_s
        ),
        *output_specs(cfg, config_path),
        *events_specs(cfg, config_path),
    ]
    if cfg.foxglove.enabled:  # not essential: the run goes on without the Foxglove view
        from clients.robots.foxglove_server import READY_LINE as FOXGLOVE_READY

        specs.append(
            ChildSpec(
                "foxglove",
                child_argv("foxglove", config_path),
                essential=False,
                start_timeout_s=cfg.run.web_start_timeout_s,
                ready_line=FOXGLOVE_READY,
            )
        )
    return specs


def output_specs(cfg: Config, config_path: Path) -> list[ChildSpec]:
    """The optional outputs: ``dds`` (``dds.enabled``) and a recorder per camera
    (``record.enabled``: ``record``, or ``record:NAME`` with a cameras mapping, writing
    ``record.format``); not essential (a failure is said, the run goes on), ready when they
    print their start line."""
    from clients.recorder import READY_LINE as RECORD_READY

    specs = []
    if cfg.dds.enabled:
        from clients.robots.dds import READY_LINE as DDS_READY

        specs.append(
            ChildSpec(
                "dds",
                child_argv("dds", config_path),
                essential=False,
                start_timeout_s=cfg.run.web_start_timeout_s,
                ready_line=DDS_READY,
            )
        )
    if cfg.record.enabled:
        for name in cfg.cameras or [None]:
            specs.append(
                ChildSpec(
                    "record" if name is None else f"record:{name}",
                    child_argv("record", config_path, camera=name),
                    essential=False,
                    start_timeout_s=cfg.run.web_start_timeout_s,
                    ready_line=RECORD_READY,
                )
            )
    return specs


# --------------------------------------------------------------------------- the events child


def events_specs(cfg: Config, config_path: Path) -> list[ChildSpec]:
    """The events service (``promptcam events``) when ``events.enabled`` or any camera has zones
    or lines; not essential: a run whose events cannot start goes on without them."""
    if not cfg.events.active():
        return []
    return [
        ChildSpec(
            "events",
            child_argv("events", config_path),
            essential=False,
            start_timeout_s=cfg.run.web_start_timeout_s,
        )
    ]


def events_status(cfg: Config) -> dict[str, object] | None:
    """The events service's counters (its status file), or None."""
    if cfg.events.status_file is None:
        return None
    try:
        doc = json.loads(Path(cfg.events.status_file).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def events_answered_at(cfg: Config) -> float | None:
    """When (monotonic) the events service last wrote its status file, or None."""
    doc = events_status(cfg)
    t_ns = doc.get("t_ns") if doc else None
    if not isinstance(t_ns, int):
        return None
    return time.monotonic() - (time.time() - t_ns / 1e9)


def _with_events(
    cfg: Config,
    is_ready: Callable[[str, float], bool],
    watchdog: Callable[[str, float, float], str | None] | None,
) -> tuple[Callable[[str, float], bool], Callable[[str, float, float], str | None] | None]:
    """Readiness and watchdog that also judge the events child by its status file."""

    def ready(name: str, since: float) -> bool:
        if name != "events":
            return is_ready(name, since)
        at = events_answered_at(cfg)
        return at is not None and at >= since

    if watchdog is None:
        return ready, None
    limit = cfg.run.watchdog_s or 0.0

    def dog(name: str, ready_at: float, now: float) -> str | None:
        if name != "events":
            return watchdog(name, ready_at, now)
        last = max(events_answered_at(cfg) or ready_at, ready_at)
        return f"no status for {now - last:.1f}s" if now - last > limit else None

    return ready, dog


def main(cfg: Config, args: argparse.Namespace) -> int:
    from setproctitle import setproctitle

    setproctitle("promptcam: run")
    duration: float | None = getattr(args, "duration", None)
    if duration is not None and duration <= 0:
        raise LaunchError(f"--duration must be > 0 seconds, got {duration}")
    cfg.check_frame_size()
    check_ports_free(cfg)
    cfg = _demo_fallback(cfg, args)
    check_models(cfg)  # last: it may ask the Hub (one request, a few seconds at most)
    with tempfile.TemporaryDirectory(prefix="promptcam-run-") as tmp:
        os.chmod(tmp, 0o700)  # config (token, camera credentials), status and state files
        run_cfg = prepare_config(cfg, Path(tmp))
        return _run(run_cfg, write_child_config(run_cfg, Path(tmp)), duration)


def _document(
    cfg: Config, observed: Observed, children: Mapping[str, ChildInfo], url: str, up: float
) -> dict[str, object]:
    doc = status_document(cfg, observed, children, url, up)
    if cfg.events.active():
        doc["events"] = events_status(cfg)
    return doc


def _run(cfg: Config, config_path: Path, duration: float | None) -> int:
    assert cfg.run.status_file is not None
    url = page_url(cfg)
    stop = _StopRequest()
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    collector = StatusCollector(cfg, poll_s=1.0, web_url=url.split("?")[0]).start()
    limit = cfg.run.watchdog_s
    dog = ProgressWatchdog(limit) if limit is not None else None
    is_ready, watchdog = _with_events(
        cfg,
        lambda n, t: collector.snapshot().seen_since(n, t),
        (lambda n, t, now: dog.check(n, t, collector.snapshot(), now)) if dog else None,
    )
    sup = Supervisor(child_specs(cfg, config_path), cfg.run, is_ready=is_ready, watchdog=watchdog)
    stop.on_second = sup.kill_now
    started = time.monotonic()
    try:
        sup.start()
        print(
            f"promptcam: open {url}  (Ctrl-C stops; status file {cfg.run.status_file})", flush=True
        )
        next_status = started + cfg.run.status_every_s
        next_file = started
        while not stop.event.wait(0.1):
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                log.info("duration of %.0fs reached: stopping", duration)
                break
            sup.poll()
            if now >= next_file:
                next_file = now + 1.0
                write_status_file(
                    cfg.run.status_file,
                    _document(cfg, collector.snapshot(), sup.info(), url, now - started),
                )
            if now >= next_status:
                next_status = now + cfg.run.status_every_s
                print(status_line(collector.snapshot(), sup.info(), now - started), flush=True)
    finally:
        sup.stop()
        collector.close()
        for s, h in old.items():
            signal.signal(s, h)
        write_status_file(
            cfg.run.status_file,
            _document(cfg, collector.snapshot(), sup.info(), url, time.monotonic() - started),
        )
    log.info(
        "stopped (restarts: %s)", ", ".join(f"{n} {c.restarts}" for n, c in sup.children.items())
    )
    return 0


# --------------------------------------------------------------------------- child trampoline


def die_with_parent(parent_pid: int) -> None:
    """Get SIGKILL when the launcher dies (``PR_SET_PDEATHSIG``), and exit now if it already
    has; where ``prctl`` is missing, a thread watches the parent pid instead."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        ok = False
    if os.getppid() != parent_pid:
        os._exit(1)  # the launcher died before prctl took effect
    if not ok:

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def child_main(argv: Sequence[str]) -> None:
    """``python -m clients.launcher --child NAME --parent PID --config FILE``: runs ``promptcam
    NAME --config FILE`` tied to the launcher. The capture source is read from the config
    file, not passed on the command line, so RTSP credentials never show in ``ps``."""
    p = argparse.ArgumentParser(prog="promptcam-child")
    p.add_argument("--child", required=True, choices=CHILDREN)
    p.add_argument("--parent", type=int, required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--camera", help="the camera of a capture child (cameras mapping)")
    a = p.parse_args(argv)
    die_with_parent(a.parent)
    from setproctitle import setproctitle

    setproctitle(f"promptcam: {a.child}" + (f" {a.camera}" if a.camera else ""))
    cli_argv = [a.child, "--config", a.config]
    if a.camera is not None:
        cli_argv += ["--camera", a.camera]
    elif a.child == "capture":
        cli_argv += ["--source", load_config(a.config).source.uri]
    from clients.cli import main as cli_main

    cli_main(cli_argv)


if __name__ == "__main__":
    child_main(sys.argv[1:])
