"""Under ``CI=true`` a missing component fails the run instead of skipping (issue 27):
``tests/conftest.py`` turns every skip (in a test, a ``skipif`` mark, a module skipped at
collection) into a failure that names the reason, and ``.ci/skips`` (run by ``.ci/run``) counts
the skipped tests of pytest's JUnit report and fails under ``CI=true`` if any."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ("pytester",)

ROOT = Path(__file__).resolve().parent.parent

# Three ways a test skips for a missing component, and one test that passes.
SKIPPING = {
    "test_in_test": "import pytest\n\n\ndef test_a():\n    pytest.skip('no chromium here')\n",
    "test_mark": (
        "import pytest\n\n\n@pytest.mark.skipif(True, reason='no gstreamer here')\n"
        "def test_b():\n    pass\n"
    ),
    "test_module": (
        "import pytest\n\npytest.importorskip('no_such_component_ray')\n\n\n"
        "def test_c():\n    pass\n"
    ),
    # the one test of the throwaway suite that runs (a real check: pytest's own tmp_path)
    "test_passes": "def test_d(tmp_path):\n    assert tmp_path.is_dir()\n",
}
REASONS = ("no chromium here", "no gstreamer here", "no_such_component_ray")


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: bool) -> Path:
    """The throwaway suite run in-process under the repository's conftest; its JUnit report."""
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile(**SKIPPING)
    report = pytester.path / "junit.xml"
    # (a module that fails at collection stops the run: here the other files still run, to
    # see every kind of skip fail in one run)
    argv = ("-p", "no:cacheprovider", "--continue-on-collection-errors", f"--junitxml={report}")
    result = pytester.runpytest_inprocess(*argv)
    out = "\n".join(result.outlines)
    if ci:
        assert result.ret == pytest.ExitCode.TESTS_FAILED, out
        for reason in REASONS:
            assert any("skipped under CI=true" in ln and reason in ln for ln in result.outlines), (
                reason,
                out,
            )
        result.assert_outcomes(passed=1, failed=1, errors=2, skipped=0)
    else:
        assert result.ret == pytest.ExitCode.OK, out
        result.assert_outcomes(passed=1, skipped=3)
    assert f"skipped tests: {0 if ci else 3}" in result.outlines, out
    return report


def _skips(report: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    argv = [sys.executable, str(ROOT / ".ci" / "skips"), str(report)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("ci", [True, False], ids=["ci", "local"])
def test_skips_fail_under_ci_and_are_counted(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: bool
) -> None:
    """Under CI every skip failed (``_run`` checks), so the report holds none; locally the
    three skips stay skips, and ``.ci/skips`` counts them and fails only under CI=true."""
    report = _run(pytester, monkeypatch, ci=ci)
    expected = 0 if ci else 3
    local = _skips(report, ci=False)
    assert local.returncode == 0, local.stdout + local.stderr
    lines = local.stdout.splitlines()
    assert lines[0] == f"skipped tests: {expected}", local.stdout
    for reason in REASONS:
        assert any(reason in ln for ln in lines[1:]) is not ci, (reason, local.stdout)
    strict = _skips(report, ci=True)
    assert strict.returncode == (0 if ci else 1), strict.stdout + strict.stderr
    assert strict.stdout.splitlines()[0] == f"skipped tests: {expected}", strict.stdout
    if not ci:
        assert "CI=true: 3 skipped test(s) fail the run" in strict.stderr, strict.stderr


def test_ci_skips_fails_without_a_report(tmp_path: Path) -> None:
    r = _skips(tmp_path / "missing.xml", ci=False)
    assert r.returncode == 1, r.stdout
    assert r.stdout.startswith("skipped tests: unknown (no readable test report"), r.stdout
