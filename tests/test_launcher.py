"""``promptcam run``: supervision (restart, backoff, fatal start-up errors, stop, no orphans),
start-up checks, one-line errors for bad config and arguments, and a short real run."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from clients.health import (
    ChildInfo,
    Observed,
    ProgressWatchdog,
    read_status_file,
    status_document,
    status_line,
    write_status_file,
)
from clients.launcher import (
    ChildFailedError,
    ChildSpec,
    PortInUseError,
    Supervisor,
    check_ports_free,
    page_url,
    prepare_config,
    write_child_config,
)
from clients.proctitle import redact_argv
from stream.config import Config, RunConfig, load_config
from tests.conftest import free_port, tcp_endpoint, wait_for

REPO = Path(__file__).resolve().parent.parent
FAST = RunConfig.model_validate(
    {
        "restart_initial_s": 0.05,
        "restart_max_s": 0.4,
        "stop_timeout_s": 1.0,
        "stable_after_s": 1.0,
        "max_start_failures": 3,
    }
)


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def promptcam(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def supervisors() -> Iterator[list[Supervisor]]:
    made: list[Supervisor] = []
    yield made
    for s in made:
        s.stop(timeout_s=0.5)


def supervise(
    made: list[Supervisor],
    specs: list[ChildSpec],
    run: RunConfig = FAST,
    ready: set[str] | None = None,
) -> Supervisor:
    flags = ready if ready is not None else set()
    sup = Supervisor(specs, run, is_ready=lambda name, _since: name in flags, output=io.StringIO())
    made.append(sup)
    sup.start()
    return sup


def poll_until(sup: Supervisor, cond: Any, timeout: float = 10.0, what: str = "condition") -> None:
    def step() -> Any:
        sup.poll()
        return cond()

    wait_for(step, timeout=timeout, interval=0.01, what=what)


# --------------------------------------------------------------------------- config and checks


def test_child_config_round_trips_and_is_private(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        {
            "web.token": "s3cret-token",
            "source.uri": "rtsp://u:p@127.0.0.1:1/x",
            "engine.max_missed": 7,
        },
    )
    path = write_child_config(cfg, tmp_path)
    assert load_config(path) == cfg
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_prepare_config_resolves_port_zero_and_status_file(tmp_path: Path) -> None:
    cfg = prepare_config(load_config(None, {"web.port": 0}), tmp_path)
    assert cfg.web.port > 0
    assert cfg.run.status_file == tmp_path / "status.json"
    assert page_url(cfg) == f"http://127.0.0.1:{cfg.web.port}/"
    assert (
        page_url(load_config(None, {"web.token": "abcdefgh1"}))
        == "http://127.0.0.1:8080/?token=abcdefgh1"
    )


def test_port_in_use_is_named() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = load_config(None, {"bus.control": f"tcp://127.0.0.1:{port}", "web.port": free_port()})
        with pytest.raises(PortInUseError, match=rf"port {port} \(bus.control\)"):
            check_ports_free(cfg)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--set", "source.fsp=10"], "unknown config key 'source.fsp'"),
        (["--set", "source.fps=-5"], "source.fps"),
        (["--models", "sam3-giant"], "unknown model preset 'sam3-giant'"),
        (["--detector", "owlv9"], "unknown detector 'owlv9'"),
        (["--duration", "-1"], "--duration"),
        (["--set", "web.host=0.0.0.0"], "web.token"),
        (
            [
                *("--set", "source.width=7680", "--set", "source.height=4320"),
                *("--set", "bus.max_payload_mb=64"),
            ],
            "7680x4320 makes 94.9 MiB frames, over bus.max_payload_mb=64",
        ),
    ],
)
def test_bad_arguments_give_one_line(args: list[str], expect: str) -> None:
    r = promptcam("run", "--port", str(free_port()), *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("promptcam run: error:") and expect in lines[0], lines[0]
    assert r.stdout == ""


def test_web_port_in_use_gives_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = promptcam("run", "--port", str(port), "--models", "tiny-random")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"promptcam run: error: port {port} (web.port) on 127.0.0.1 is already in use "
        f"(another promptcam running?); choose another with --set web.port=..."
    )


# --------------------------------------------------------------------------- supervision


def test_child_that_exits_is_restarted_with_backoff(supervisors: list[Supervisor]) -> None:
    sup = supervise(
        supervisors,
        [ChildSpec("flaky", py("import sys; sys.exit(1)"))],
        ready=set(),
        run=FAST.model_copy(update={"max_start_failures": 100}),
    )
    starts: list[float] = []
    last_pid = [0]

    def restarted_four_times() -> bool:
        pid = sup.pids().get("flaky", 0)
        if pid and pid != last_pid[0]:
            last_pid[0] = pid
            starts.append(time.monotonic())
        return sup.children["flaky"].restarts >= 4

    poll_until(sup, restarted_four_times, what="4 restarts")
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # delays 0.05, 0.1, 0.2, 0.4 (cap): each gap at least its delay, and they grow
    assert gaps[-1] >= 0.35 and gaps[-1] > gaps[0], gaps
    assert sup.info()["flaky"].last_exit == 1


def test_backoff_resets_after_stable_run(supervisors: list[Supervisor]) -> None:
    run = FAST.model_copy(update={"stable_after_s": 0.3, "max_start_failures": 100})
    sup = supervise(
        supervisors,
        [ChildSpec("slow", py("import time, sys; time.sleep(0.35); sys.exit(1)"))],
        run=run,
        ready={"slow"},
    )
    poll_until(sup, lambda: sup.children["slow"].restarts >= 3, what="3 restarts")
    assert (
        sup.children["slow"].backoff_level == 1
    )  # reset before each restart: always the first delay


def test_expected_error_at_start_is_fatal_with_its_line(supervisors: list[Supervisor]) -> None:
    code = "import sys; print('loading'); sys.stderr.write('promptcam engine: error: cannot fetch weights; offline options: ...\\n'); sys.exit(2)"
    sup = supervise(supervisors, [ChildSpec("engine", py(code))])
    with pytest.raises(ChildFailedError) as e:
        poll_until(sup, lambda: False, what="fatal error")
    assert str(e.value) == "engine could not start: cannot fetch weights; offline options: ..."
    assert sup.children["engine"].restarts == 0


def test_expected_error_after_ready_is_restarted(supervisors: list[Supervisor]) -> None:
    sup = supervise(
        supervisors,
        [ChildSpec("engine", py("import time, sys; time.sleep(0.2); sys.exit(2)"))],
        ready={"engine"},
    )
    poll_until(sup, lambda: sup.children["engine"].restarts >= 1, what="restart")


def test_repeated_start_failures_give_up(supervisors: list[Supervisor]) -> None:
    sup = supervise(supervisors, [ChildSpec("web", py("raise SystemExit('boom')"))])
    with pytest.raises(
        ChildFailedError, match=r"web failed 3 times before becoming ready \(exit 1\): boom"
    ):
        poll_until(sup, lambda: False, what="give up")


def test_clean_exit_of_finite_capture_is_not_restarted(supervisors: list[Supervisor]) -> None:
    sup = supervise(
        supervisors,
        [ChildSpec("capture", py("pass"), restart_on_clean_exit=False)],
        ready={"capture"},
    )
    poll_until(sup, lambda: sup.children["capture"].state == "finished", what="finished")
    for _ in range(20):
        sup.poll()
    assert sup.children["capture"].restarts == 0


def test_stop_kills_a_child_that_ignores_sigterm_and_its_group(
    supervisors: list[Supervisor], tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild"
    code = f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        g = subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])
        open({str(pidfile)!r}, 'w').write(str(g.pid))
        print('ready', flush=True)
        time.sleep(60)
    """
    sup = supervise(supervisors, [ChildSpec("stubborn", py(code))], ready={"stubborn"})
    wait_for(lambda: pidfile.exists() and pidfile.read_text(), what="grandchild")
    child = psutil.Process(sup.pids()["stubborn"])
    grandchild = psutil.Process(int(pidfile.read_text()))
    t0 = time.monotonic()
    sup.stop(timeout_s=0.5)
    assert time.monotonic() - t0 < 3.0
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    wait_for(
        lambda: not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE,
        what="grandchild gone",
    )


def test_children_die_with_a_sigkilled_launcher(tmp_path: Path) -> None:
    """A launcher killed with SIGKILL cannot clean up: its children's parent-death signal does."""
    pidfile = tmp_path / "pids.json"
    code = f"""
        import json, os, sys, time
        from pathlib import Path
        from clients.launcher import ChildSpec, Supervisor
        from stream.config import RunConfig
        # what the trampoline does first (die_with_parent), then sleep instead of running capture
        code = ('import sys, time; from clients.launcher import die_with_parent; '
                'die_with_parent(int(sys.argv[1])); time.sleep(60)')
        sup = Supervisor([ChildSpec('sleeper', [sys.executable, '-c', code, str(os.getpid())])], RunConfig())
        sup.start()
        time.sleep(0.3)
        Path({str(pidfile)!r}).write_text(json.dumps(sup.pids()))
        time.sleep(60)
    """
    launcher = subprocess.Popen(py(code), cwd=REPO)
    try:
        pids = wait_for(
            lambda: pidfile.exists() and pidfile.read_text() and json.loads(pidfile.read_text()),
            what="child pids",
        )
        child = psutil.Process(pids["sleeper"])
        assert child.is_running()
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=5)
        wait_for(
            lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE,
            timeout=5,
            what="orphan gone",
        )
    finally:
        launcher.kill()
        launcher.wait()


# --------------------------------------------------------------------------- real runs


def run_overrides(tmp_path: Path) -> dict[str, str]:
    return {
        "bus.frames": tcp_endpoint(),
        "bus.tracks": tcp_endpoint(),
        "bus.annotated": tcp_endpoint(),
        "bus.control": tcp_endpoint(),
        "web.port": str(free_port()),
        "run.status_file": str(tmp_path / "status.json"),
        "run.status_every_s": "1",
        "source.fps": "15",
    }


def as_args(overrides: dict[str, str]) -> list[str]:
    return [x for k, v in overrides.items() for x in ("--set", f"{k}={v}")]


def test_real_preset_offline_fails_with_one_line(tmp_path: Path) -> None:
    """The default preset with no network and nothing cached, on a camera that is not the demo
    scene (there the shipped `demo` preset takes over): the launcher's model check says so in
    one line naming the offline options and exits 2 before starting any child."""
    r = promptcam(
        "run",
        *as_args(run_overrides(tmp_path)),
        "--source",
        "rtsp://127.0.0.1:9/cam",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
        timeout=120,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.count("\n") == 1, r.stderr[-2000:]
    line = r.stderr.strip()
    assert line.startswith(
        "promptcam run: error: model facebook/sam2.1-hiera-tiny is not cached"
    ), line
    assert "tiny-random" in line, line  # the offline options are named
    assert read_status_file(tmp_path / "status.json") is None  # no child was started


def _titles_of_children(pid: int) -> dict[str, int]:
    out = {}
    for p in psutil.Process(pid).children():
        try:
            out[" ".join(p.cmdline()).strip()] = p.pid  # setproctitle pads with empty strings
        except psutil.NoSuchProcess:
            continue
    return out


def test_run_starts_names_reports_and_stops(tmp_path: Path) -> None:
    overrides = run_overrides(tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "clients.cli",
        "run",
        "--models",
        "tiny-random",
        "--duration",
        "60",
        *as_args(overrides),
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        stdout = proc.stdout
        assert stdout is not None
        first = stdout.readline()
        cfg: Config = load_config(None, dict(overrides))
        assert f"http://127.0.0.1:{cfg.web.port}/" in first
        wait_for(
            lambda: (
                {"promptcam: capture", "promptcam: engine", "promptcam: web"}
                <= set(_titles_of_children(proc.pid))
            ),
            timeout=30,
            what="child titles",
        )
        assert psutil.Process(proc.pid).cmdline()[0] == "promptcam: run"
        status = wait_for(
            lambda: (
                (s := read_status_file(tmp_path / "status.json"))
                and all(c["ready"] for c in s["children"].values())
                and s
            ),
            timeout=60,
            what="all ready",
        )
        pids = [c["pid"] for c in status["children"].values()]
        line = wait_for(
            lambda: (ln := stdout.readline()) and "engine in" in ln and ln,
            timeout=30,
            what="status line",
        )
        assert "restarts capture 0 engine 0 web 0" in line, line
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - t0 < cfg.run.stop_timeout_s + 3
        for pid in pids:
            assert (
                not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- watchdog and status


def test_progress_watchdog_rules() -> None:
    """Unanswered for the limit: wedged. An engine publishing nothing while capture publishes:
    wedged after the limit, or 4x its last frame time when that is longer; not while nothing
    comes in, not before its first output, not while it loads a model."""
    dog = ProgressWatchdog(3.0)

    def obs(t: float, out: int, cap: int, **eng: Any) -> Observed:
        engine = {"frames_out": out, "latency_ms": {"process_ms": 10.0}, **eng}
        return Observed(capture={"frames": cap}, capture_at=t, engine=engine, engine_at=t, web_at=t)

    assert dog.check("web", 0.0, Observed(web_at=1.0), 3.5) is None
    assert dog.check("web", 0.0, Observed(web_at=1.0), 4.5) == "no answer for 3.5s"
    assert dog.check("capture", 10.0, Observed(), 12.0) is None  # since ready, not since start
    assert dog.check("engine", 0.0, obs(1, 0, 100), 1) is None
    assert dog.check("engine", 0.0, obs(9, 0, 400), 9) is None  # no output yet: not armed
    assert dog.check("engine", 0.0, obs(10, 5, 430), 10) is None
    assert dog.check("engine", 0.0, obs(11, 5, 430), 11) is None
    assert dog.check("engine", 0.0, obs(20, 5, 430), 20) is None  # nothing came in meanwhile
    assert dog.check("engine", 0.0, obs(22, 5, 460), 22) is None
    assert dog.check("engine", 0.0, obs(23.5, 5, 480), 23.5) == (
        "published nothing for 3.5s while capture published 50 frames"
    )
    assert dog.check("engine", 0.0, obs(24, 6, 490), 24) is None  # moved again
    assert dog.check("engine", 0.0, obs(25, 6, 490, busy_with="loading the detector"), 25) is None
    assert dog.check("engine", 0.0, obs(29, 6, 600, busy_with="loading the detector"), 29) is None
    slow = {"latency_ms": {"process_ms": 2000.0}}
    assert dog.check("engine", 0.0, obs(30, 6, 610, **slow), 30) is None
    assert dog.check("engine", 0.0, obs(37, 6, 700, **slow), 37) is None  # 4 x 2 s > 3 s
    assert dog.check("engine", 0.0, obs(38.5, 6, 720, **slow), 38.5) is not None
    # a new engine (another ready time) starts a new watch
    assert dog.check("engine", 40.0, obs(41, 0, 740), 41) is None


def test_suspended_child_is_shown_and_a_wedged_one_restarted(supervisors: list[Supervisor]) -> None:
    wedged: set[str] = set()
    sup = Supervisor(
        [ChildSpec("engine", py("import time; time.sleep(60)"))],
        FAST,
        is_ready=lambda name, _since: True,
        output=io.StringIO(),
        watchdog=lambda name, _ready_at, _now: "no answer for 9.0s" if name in wedged else None,
    )
    supervisors.append(sup)
    sup.start()
    poll_until(sup, lambda: sup.info()["engine"].ready, what="ready")
    pid = sup.pids()["engine"]
    os.kill(pid, signal.SIGSTOP)
    poll_until(sup, lambda: sup.info()["engine"].state == "suspended", what="suspended")
    assert sup.info()["engine"].ready is False
    wedged.add("engine")
    poll_until(sup, lambda: sup.children["engine"].watchdog_restarts == 1, what="watchdog kill")
    wedged.clear()
    poll_until(
        sup,
        lambda: sup.info()["engine"].ready and sup.pids()["engine"] != pid,
        what="restarted",
    )
    info = sup.info()["engine"]
    assert (info.restarts, info.watchdog_restarts, info.last_exit) == (1, 1, -signal.SIGKILL)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_status_line_says_waiting_for_camera_and_counts_watchdog_restarts() -> None:
    now = time.monotonic()
    obs = Observed(capture={"state": "waiting", "reconnect_attempts": 7}, capture_at=now)
    children = {
        "engine": ChildInfo("engine", 1, "running", True, 2, -9, 3.0, watchdog_restarts=1),
    }
    line = status_line(obs, children, 10.0)
    assert line.startswith("capture waiting for camera (attempt 7) | engine -")
    assert "restarts engine 2, by watchdog 1" in line


def test_status_file_is_private_and_holds_no_token(tmp_path: Path) -> None:
    cfg = load_config(None, {"web.token": "s3cret-token-1"})
    path = tmp_path / "status.json"
    (tmp_path / f".status.json.{os.getpid()}.tmp").write_text("{}")  # a leftover, 0644
    doc = status_document(cfg, Observed(), {}, page_url(cfg), 1.0)
    write_status_file(path, doc)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "s3cret-token-1" not in path.read_text()
    assert read_status_file(path)["url"] == "http://127.0.0.1:8080/"  # type: ignore[index]


def test_prepare_config_keeps_engine_state_in_the_run_directory(tmp_path: Path) -> None:
    cfg = prepare_config(load_config(None), tmp_path)
    assert cfg.engine.state_file == tmp_path / "engine-state.json"


# --------------------------------------------------------------------------- start timeout


def test_child_not_ready_within_its_start_timeout_is_restarted(
    supervisors: list[Supervisor],
) -> None:
    """A child that never becomes ready (here: never answers) is killed after its start
    timeout and restarted like one that crashed; in a row they count as failed starts."""
    spec = ChildSpec("engine", py("import time; time.sleep(60)"), start_timeout_s=0.5)
    sup = supervise(supervisors, [spec], run=FAST.model_copy(update={"max_start_failures": 2}))
    first = sup.pids()["engine"]
    poll_until(sup, lambda: sup.children["engine"].start_timeouts == 1, what="first timeout")
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
    poll_until(sup, lambda: sup.pids().get("engine", first) != first, what="restarted")
    assert sup.info()["engine"].restarts == 1 and sup.info()["engine"].start_timeouts == 1
    with pytest.raises(ChildFailedError, match=r"not ready within its start timeout of 0\.5s"):
        poll_until(sup, lambda: False, what="second start failure is fatal")


def test_run_restarts_an_engine_stopped_during_start_up(tmp_path: Path) -> None:
    """`promptcam run`, its engine SIGSTOPped while it loads: shown suspended, killed after
    run.engine_start_timeout_s and started again (a new, running process)."""
    overrides = {
        **run_overrides(tmp_path),
        "run.engine_start_timeout_s": "8",
        "run.restart_initial_s": "0.2",
        "run.max_start_failures": "100",  # a loaded machine may need several tries
        "run.stop_timeout_s": "1",
    }
    cmd = [sys.executable, "-m", "clients.cli", "run", "--models", "tiny-random"]
    proc = subprocess.Popen(
        [*cmd, "--duration", "120", *as_args(overrides)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def engine_pid() -> int | None:
            for p in psutil.Process(proc.pid).children():
                with contextlib.suppress(psutil.NoSuchProcess):
                    argv = " ".join(p.cmdline())
                    if "promptcam: engine" in argv or "--child engine" in argv:
                        return p.pid
            return None

        stopped = wait_for(engine_pid, timeout=60, interval=0.01, what="engine started")
        os.kill(stopped, signal.SIGSTOP)
        born = psutil.Process(stopped).create_time()
        wait_for(
            lambda: (
                (s := read_status_file(tmp_path / "status.json"))
                and s["children"]["engine"]["state"] == "suspended"
            ),
            timeout=15,
            what="engine shown suspended",
        )
        new = wait_for(
            lambda: (pid := engine_pid()) and pid != stopped and pid,
            timeout=30,
            interval=0.05,
            what="engine restarted",
        )
        restarted_after = psutil.Process(new).create_time() - born
        assert 8 <= restarted_after < 8 + 5, restarted_after  # the timeout, a short backoff
        assert psutil.Process(new).status() != psutil.STATUS_STOPPED
        assert not psutil.pid_exists(stopped) or (
            psutil.Process(stopped).status() == psutil.STATUS_ZOMBIE
        )
        engine = wait_for(
            lambda: (
                (s := read_status_file(tmp_path / "status.json"))
                and (e := s["children"]["engine"])["pid"] == new
                and e
            ),
            timeout=15,
            what="status file shows the new engine",
        )
        assert engine["restarts"] >= 1 and engine["start_timeouts"] >= 1, engine
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------- secrets off argv


def test_redact_argv_hides_tokens_and_url_credentials() -> None:
    argv = [
        "promptcam",
        "run",
        "--token",
        "tok-aaaa1",
        "--token=tok-bbbb2",
        "--set",
        "web.token=tok-cccc3",
        "--set=web.token=tok-dddd4",
        "--source",
        "rtsp://admin:pw-eeee5@127.0.0.1:8554/cam",
        "--set",
        "engine.max_missed=7",
    ]
    out = redact_argv(argv)
    assert not any(s in " ".join(out) for s in ("aaaa1", "bbbb2", "cccc3", "dddd4", "eeee5"))
    assert out[-2:] == ["--set", "engine.max_missed=7"]
    assert out[9] == "rtsp://***@127.0.0.1:8554/cam" and out[6] == "web.token=***"
    assert redact_argv(["promptcam", "run", "--set", "web.port=9"]) == [
        "promptcam",
        "run",
        "--set",
        "web.port=9",
    ]


def _cmdlines_with(secret: bytes, pids: set[int]) -> list[str]:
    """Command lines (of ``pids``) holding ``secret``."""
    found = []
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if secret in raw:
            found.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return found


def _tree(pid: int) -> set[int]:
    try:
        return {pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def _watch_start_up(
    proc: subprocess.Popen[bytes], status: Path, secret: bytes
) -> tuple[list[str], float | None]:
    """Scan the command lines of the launcher and its children until capture, engine and web
    run and the web is ready: (children's command lines seen holding ``secret``, seconds
    after spawn the launcher's own command line last held it, None: never seen)."""
    t0 = time.monotonic()
    last_seen: float | None = None
    leaks: list[str] = []
    deadline = t0 + 120
    while time.monotonic() < deadline:
        pids = _tree(proc.pid)
        if _cmdlines_with(secret, {proc.pid}):
            last_seen = time.monotonic() - t0
        leaks += _cmdlines_with(secret, pids - {proc.pid})
        titles = set(_titles_of_children(proc.pid)) if pids else set()
        s = read_status_file(status)
        if (
            {"promptcam: capture", "promptcam: engine", "promptcam: web"} <= titles
            and s is not None
            and s["children"]["web"]["ready"]
        ):
            return leaks, last_seen
        assert proc.poll() is None, "the run ended early"
        time.sleep(0.002)
    pytest.fail("run did not start within 120 s")


def _start_run(tmp_path: Path, extra: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clients.cli",
            "run",
            "--models",
            "tiny-random",
            "--duration",
            "120",
            *as_args({**run_overrides(tmp_path), "run.stop_timeout_s": "1"}),
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _page_status(port: int, token: str | None) -> int:
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{port}/" + (f"?token={token}" if token else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_token_from_the_environment_never_shows_in_a_command_line(tmp_path: Path) -> None:
    """`promptcam run` with PROMPTCAM_TOKEN: no command line of the launcher or its children
    ever holds the token during start-up, and the page asks for it."""
    token = "envtok-" + os.urandom(6).hex()
    proc = _start_run(tmp_path, [], {"PROMPTCAM_TOKEN": token})
    try:
        leaks, launcher_seen = _watch_start_up(proc, tmp_path / "status.json", token.encode())
        assert leaks == [] and launcher_seen is None, (leaks, launcher_seen)
        status = read_status_file(tmp_path / "status.json")
        assert status is not None
        port = int(status["url"].rsplit(":", 1)[1].strip("/"))
        assert _page_status(port, None) == 401
        assert _page_status(port, token) == 200
    finally:
        _stop(proc)


def test_token_on_the_command_line_is_hidden_at_once_and_never_reaches_children(
    tmp_path: Path,
) -> None:
    """`promptcam run --set web.token=T`: the launcher rewrites its title before its slow
    imports (the token showed ~2 s before), and no child's command line holds the token."""
    token = "argtok-" + os.urandom(6).hex()
    proc = _start_run(tmp_path, ["--set", f"web.token={token}"], {})
    try:
        leaks, launcher_seen = _watch_start_up(proc, tmp_path / "status.json", token.encode())
        assert leaks == []
        assert launcher_seen is None or launcher_seen < 1.0, launcher_seen
    finally:
        _stop(proc)
