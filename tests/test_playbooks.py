"""Every example playbook runs end to end through the CLI, from another directory."""

import io
import json
import os
import re
import subprocess
import threading
import time

import pytest

from gxo import Engine, Logger, TaskError, load_playbook
from helpers import ROOT, expected_errors, gxo_command

PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yml"))


def gxo(tmp_path, name, *args, env=None):
    """Run the example ``name`` through the gxo command, from ``tmp_path``."""
    return subprocess.run(gxo_command("-playbook", str(ROOT / "playbooks" / name), *args),
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, **(env or {})})


def recap(stderr):
    """{task: status} from the recap at the end of the log."""
    lines = stderr.split("recap of", 1)[1].splitlines()[1:-1]     # the last one counts
    return dict(line.split()[:2] for line in lines)


def test_every_playbook_is_covered():
    assert {p.name for p in PLAYBOOKS} == {
        "build-test-deploy.yml", "parallel-disk-usage.yml", "retry-flaky-service.yml",
        "conditional-steps.yml", "cleanup-after-failure.yml", "stream-logs.yml",
        "rollback-on-failure.yml"}


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.stem)
def test_playbook_validates_and_dry_runs(tmp_path, playbook):
    r = gxo(tmp_path, playbook.name, "-dry-run")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr


def test_build_test_deploy(tmp_path):
    r = gxo(tmp_path, "build-test-deploy.yml", "-var", "release=2.0.1", "-var", "target=staging")
    assert r.returncode == 0, r.stderr
    assert set(recap(r.stderr).values()) == {"Completed"}
    assert re.search(r"\[announce\] deployed greeter 2\.0\.1 \([0-9a-f]{12}\) to staging", r.stderr)


def test_parallel_disk_usage(tmp_path):
    (tmp_path / "root" / "big").mkdir(parents=True)
    (tmp_path / "root" / "big" / "f").write_bytes(b"x" * 300_000)
    (tmp_path / "root" / "small").mkdir()
    r = gxo(tmp_path, "parallel-disk-usage.yml", "-var", f"root={tmp_path / 'root'}",
            "-var", "dirs=[small, big, missing]")
    assert r.returncode == 0, r.stderr
    report = r.stderr.split("largest under", 1)[1].splitlines()
    assert report[1].split()[0] == "big" and int(report[1].split()[1]) >= 290


def test_retry_flaky_service(tmp_path):
    r = gxo(tmp_path, "retry-flaky-service.yml")
    assert r.returncode == 0, r.stderr
    attempts = int(re.search(r"health_check\s+Completed\s+\S+\s+(\d+) attempts", r.stderr)[1])
    assert 2 <= attempts <= 20
    assert r.stderr.count("[health_check] attempt") == attempts - 1


@pytest.mark.parametrize("args, ran", [
    ((), {"nothing_to_do"}),
    (("-var", "migrate=true"), {"migrate", "warm_cache"}),
    (("-var", "migrate=true", "-var", "notes=yes"), {"migrate", "warm_cache", "release_notes"}),
])
def test_conditional_steps(tmp_path, args, ran):
    r = gxo(tmp_path, "conditional-steps.yml", *args)
    assert r.returncode == 0, r.stderr
    statuses = recap(r.stderr)
    assert {t for t, s in statuses.items() if s == "Completed"} == ran | {"check_schema"}


def test_cleanup_after_failure(tmp_path):
    r = gxo(tmp_path, "cleanup-after-failure.yml")
    assert r.returncode == 0, r.stderr
    assert recap(r.stderr) == {"scratch": "Completed", "download_cache": "Completed",
                               "fetch_mirrors": "Failed", "use_mirrors": "Skipped",
                               "cleanup": "Completed", "report": "Completed"}
    assert "[report] cached 3 packages; scratch space removed" in r.stderr


@pytest.mark.parametrize("args, code, statuses", [
    ((), 1, {"migrate": "Failed", "announce": "Skipped", "rollback": "Completed",
             "rolled_back": "Completed"}),
    (("-var", "simulate_failure=no"), 0, {"migrate": "Completed", "announce": "Completed",
                                          "rollback": "Skipped", "rolled_back": "Skipped"}),
])
def test_rollback_on_failure(tmp_path, args, code, statuses):
    r = gxo(tmp_path, "rollback-on-failure.yml", *args, env={"TMPDIR": str(tmp_path)})
    assert r.returncode == code, r.stderr
    assert recap(r.stderr) == {"workspace": "Completed", "install": "Completed",
                               "switch": "Completed", "cleanup": "Completed", **statuses}
    assert ("[rolled_back] migration failed: release 1.0.0 is live again" in r.stderr) == bool(code)
    assert not list(tmp_path.glob("gxo-rollback.*"))          # the cleanup ran either way


def test_stream_logs(tmp_path):
    r = gxo(tmp_path, "stream-logs.yml")
    assert r.returncode == 0, r.stderr
    errors = expected_errors()
    report = re.search(r"report: (\S+)", r.stderr)[1]
    assert [json.loads(line) for line in open(report)] == errors
    assert f"[summary] {len(errors)} ERROR records of 120 in" in r.stderr
    assert "[RECORD_ERROR] task=read_log" in r.stderr


# -- race-freedom: tasks run in DAG order, not file order

PATIENCE = 10.0     # seconds a task waits for its rivals at most: never, unless gxo hangs


def _hold_for_rivals(playbook, later_first):
    """Hold each task, before its module runs, until its rivals have ended: the tasks the
    DAG lets run at the same time as it that come later in the file (``later_first``),
    or earlier.  A task that uses what a rival makes (a file, a process) without an edge
    to it then runs first and fails, however fast or slow either of them is.

    Pipelines count as one task.  A task does not wait for a rival that waits for it,
    through the DAG or other holds: those two run as the engine likes.
    """
    tasks = playbook.tasks
    groups = sorted(sorted(g) for g in playbook.pipelines)
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    waits = [{group_of[d] for i in m for d in tasks[i].needs} - {g} for g, m in enumerate(groups)]

    def reaches(g, h):                  # does g wait for h, transitively?
        seen, todo = set(), [g]
        while todo:
            for x in waits[todo.pop()] - seen:
                seen.add(x)
                todo.append(x)
        return h in seen
    dag = [set(w) for w in waits]
    for g in range(len(groups)):
        for h in (range(g + 1, len(groups)) if later_first else range(g)):
            if not reaches(g, h) and not reaches(h, g):
                waits[g].add(h)
    for g, members in enumerate(groups):
        rivals = [tasks[i].key for h in waits[g] - dag[g] for i in groups[h]]
        for i in members:
            tasks[i].module = _held(tasks[i].module, rivals)


def _held(factory, rivals):
    """The module class, its first call (of a loop or retries) held until ``rivals`` end."""
    lock, started = threading.Lock(), []

    class Held(factory):
        def perform(self, ctx, params, state, *args):
            with lock:                  # parallel loop items wait for the first one
                deadline = time.monotonic() + PATIENCE
                ended = state["_gxo"]["tasks"]
                while not started and not all(r in ended for r in rivals):
                    if time.monotonic() > deadline:
                        raise TaskError(f"held for {PATIENCE}s: {rivals} did not end")
                    if ctx.wait(0.01):
                        break
                started.append(True)
            return super().perform(ctx, params, state, *args)
    return Held


def _run(text_or_path, later_first=None):
    """Run a playbook in this process; with ``later_first``, hold tasks for their rivals."""
    playbook = load_playbook(text_or_path)
    if later_first is not None:
        _hold_for_rivals(playbook, later_first)
    log = io.StringIO()
    engine = Engine(playbook, concurrency=len(playbook.tasks), logger=Logger("INFO", log))
    return engine.run(), log.getvalue()


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.stem)
def test_playbook_is_race_free(playbook, tmp_path, monkeypatch):
    # Whichever of two unordered tasks goes first, the run ends as it does at full speed:
    # every task waits for what it uses.  (Compared, not required to pass: an example may
    # fail on purpose.)
    monkeypatch.chdir(tmp_path)
    result, log = _run(playbook)
    expected = (result.exit_code, {name: r.status for name, r in result.tasks.items()})
    for later_first in (True, False):
        result, log = _run(playbook, later_first)
        assert (result.exit_code, {n: r.status for n, r in result.tasks.items()}) == expected, log


def test_race_check_catches_a_missing_edge(tmp_path, monkeypatch):
    # build-test-deploy as it was: unit_tests ran the artifact without waiting for build.
    text = (ROOT / "playbooks" / "build-test-deploy.yml").read_text()
    racy = text.replace("    depends_on: [build]\n", "", 1)
    assert racy != text
    monkeypatch.chdir(tmp_path)
    result, log = _run(racy, later_first=True)
    assert result.tasks["unit_tests"].status == "Failed", log
    assert "dist/app.py" in result.tasks["unit_tests"].reason
