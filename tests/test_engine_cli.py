"""The engine through the gxo command: failure handlers and signals, a log closed
under gxo, the open-file limit."""

import resource
import signal
import subprocess

import pytest

from helpers import alive, busy_script, gxo_command, wait_for_lines, write_playbook


@pytest.fixture
def start(tmp_path):
    """start(playbook, *args, **popen) -> Popen of `python gxo.py`, killed if a test fails."""
    procs = []

    def start(playbook, *args, **popen):
        path = write_playbook(tmp_path, playbook, "p.yml")
        popen.setdefault("stderr", subprocess.PIPE)
        procs.append(subprocess.Popen(gxo_command("-playbook", str(path), *args), text=True,
                                      cwd=tmp_path, **popen))
        return procs[-1]
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def busy(pids):
    """An exec task's params that note their pids in ``pids`` and wait for a long time."""
    return f'{{command: sh, args: ["-c", "{busy_script(pids)}"]}}'


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_failure_handler_runs_after_a_signal(start, tmp_path, signum, code):
    pids, mark = tmp_path / "pids", tmp_path / "rolled-back"
    proc = start(f"""
        name: handled
        tasks:
          - {{name: deploy, type: exec, params: {busy(pids)}}}
          - {{name: announce, type: exec, depends_on: [deploy], params: {{command: "true"}}}}
          - name: rollback
            type: exec
            always: true
            when: '<< eq ._gxo.tasks.deploy.status "Failed" >>'
            params: {{command: sh, args: ["-c", "echo done > {mark}"]}}
    """)
    found = wait_for_lines(pids, 2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert "[deploy] Failed" in err and "[announce] Skipped: playbook halted" in err
    assert "[rollback] Completed" in err and mark.read_text() == "done\n"
    assert not [pid for pid in found if alive(pid)]


def test_second_signal_stops_a_failure_handler_at_once(start, tmp_path):
    pids, handler_pids = tmp_path / "pids", tmp_path / "handler-pids"
    proc = start(f"""
        name: handled
        tasks:
          - {{name: deploy, type: exec, params: {busy(pids)}}}
          - {{name: rollback, type: exec, always: true, depends_on: [deploy],
              params: {busy(handler_pids)}}}
    """)
    found = wait_for_lines(pids, 2)
    proc.send_signal(signal.SIGINT)
    found += wait_for_lines(handler_pids, 2)        # the handler runs after the first signal
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)           # well before the handler's 60 s
    assert proc.returncode == 130, err
    assert "stopping: interrupted by SIGINT (failure handlers still run" in err
    assert "stopping at once: interrupted by SIGINT" in err
    assert "[rollback] Failed" in err and "Traceback" not in err
    assert not [pid for pid in found if alive(pid)]


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_log_closed_under_gxo_neither_hangs_nor_stops_the_run(start, tmp_path, dry_run):
    """gxo ... 2>&1 | head -2: gxo stops logging and finishes the run."""
    mark = tmp_path / "finished"
    proc = start(f"""
        name: chatty
        tasks:
          - {{name: many, type: exec, loop: [1, 2, 3, 4, 5, 6, 7, 8], params: {{command: "true"}}}}
          - {{name: next, type: exec, depends_on: [many], params: {{command: "true"}}}}
          - {{name: last, type: exec, depends_on: [next], params: {{command: touch, args: ["{mark}"]}}}}
    """, *(["-dry-run"] if dry_run else []))
    assert proc.stderr.readline() and proc.stderr.readline()
    proc.stderr.close()                             # what head does after two lines
    assert proc.wait(timeout=60) == 0
    assert mark.exists() != dry_run


def test_concurrency_is_capped_by_the_open_file_limit(start, tmp_path):
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    tasks = "\n".join(f'  - {{name: t{i}, type: exec, params: {{command: sh, args: ["-c", "sleep 0.1"]}}}}'
                      for i in range(12))
    proc = start(f"""
name: wide
tasks:
  - name: loop
    type: exec
    loop: {list(range(40))}
    loop_control: {{parallel: 40}}
    params: {{command: sh, args: ["-c", "sleep 0.1"]}}
{tasks}
""", "-concurrency", "30", preexec_fn=low_limit)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Too many open files" not in err
    assert err.count("module calls run at once: the open-file limit (ulimit -n 64) allows no more") == 1
