"""Every example playbook runs end to end through the CLI, from another directory."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from test_record_modules import _expected_errors

PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yml"))


def gxo(tmp_path, name, *args):
    return subprocess.run([sys.executable, str(ROOT / "gxo.py"), "-playbook",
                           str(ROOT / "playbooks" / name), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)


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
    r = subprocess.run([sys.executable, str(ROOT / "gxo.py"), "-playbook",
                        str(ROOT / "playbooks" / "rollback-on-failure.yml"), *args],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**os.environ, "TMPDIR": str(tmp_path)})
    assert r.returncode == code, r.stderr
    assert recap(r.stderr) == {"workspace": "Completed", "install": "Completed",
                               "switch": "Completed", "cleanup": "Completed", **statuses}
    assert ("[rolled_back] migration failed: release 1.0.0 is live again" in r.stderr) == bool(code)
    assert not list(tmp_path.glob("gxo-rollback.*"))          # the cleanup ran either way


def test_stream_logs(tmp_path):
    r = gxo(tmp_path, "stream-logs.yml")
    assert r.returncode == 0, r.stderr
    errors = _expected_errors()
    report = re.search(r"report: (\S+)", r.stderr)[1]
    assert [json.loads(line) for line in open(report)] == errors
    assert f"[summary] {len(errors)} ERROR records of 120 in" in r.stderr
    assert "[RECORD_ERROR] task=read_log" in r.stderr
