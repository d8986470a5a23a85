"""``bench --parts offline``: the spinning round runs in a child process whose OpenMP threads
spin (libgomp's default), measures both sides at every object count and hands the figures back
(tiny-random, a few frames; the bench reports the speed, tests only check the plumbing)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from clients.bench import offline
from stream.config import Config, ModelsConfig


def test_the_spinning_round_runs_in_a_child_with_the_spin_count_and_reports_every_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, str]] = []
    real_run = subprocess.run

    def spying(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        env = kw.get("env")
        assert isinstance(env, dict)
        seen.append(env)
        return real_run(argv, **kw)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(subprocess, "run", spying)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    video, jpegs = offline._write_inputs(tmp_path, 4)
    base = Config()
    models = ModelsConfig.model_validate({"preset": "tiny-random", "device": "cpu"})
    cfg = base.model_copy(
        update={"models": models, "engine": base.engine.model_copy(update={"prompt": ""})}
    )
    job = tmp_path / "job.json"
    job.write_text(cfg.model_dump_json())
    rounds = offline._spinning(job, video, jpegs, (2, 4))
    assert seen and seen[0]["GOMP_SPINCOUNT"] == offline.SPIN["GOMP_SPINCOUNT"]
    assert sorted(rounds) == list(offline.OBJECTS)
    for r in rounds.values():
        assert r.official_ms > 0  # the job's figure is a difference of two short runs
        assert {"decode", "prepare", "encode", "propagate"} <= set(r.stages)


def test_a_failing_child_is_one_error_with_its_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = tmp_path / "job.json"
    job.write_text("{not json")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    with pytest.raises(RuntimeError, match="bench offline child exited"):
        offline._spinning(job, tmp_path / "none.mp4", tmp_path, (2, 4))
