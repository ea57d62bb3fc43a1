"""The Dask executor: unit tests on an in-process LocalCluster, and one end-to-end run
through the CLI on a real scheduler and two workers that cannot import gxo."""

import importlib.util
import json
import os
import pickle
import signal
import subprocess
import sys

import pytest

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed "
                                  "(pip install 'gxo[dask]')")

import gxo  # noqa: E402
from gxo_modules import _dask  # noqa: E402
from helpers import (alive, busy_script, gone, gxo_command, wait_for_lines, wait_until,  # noqa: E402
                     write_playbook)

LOOPBACK = "127.0.0.1:0"        # Dask's HTTP servers run even without a dashboard


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=False,
                                  dashboard_address=LOOPBACK,
                                  worker_dashboard_address=LOOPBACK) as cluster:
        with distributed.Client(cluster, set_as_default=False) as client:
            yield client


def executor(client):
    return _dask.DaskExecutor(client, gxo.Logger("ERROR"))


# -- unit tests, in-process

def test_playbook_on_a_client_round_trips_and_says_who_ran_what(run, client, tmp_path):
    r = run(f"""
        name: x
        tasks:
          - name: rt
            type: exec
            register: rt
            params:
              command: sh
              args: ["-c", 'pwd; echo "$GXO_T"; cat']
              environment: {{GXO_T: added}}
              working_dir: {tmp_path}
              stdin: from stdin
          - name: many
            type: exec
            register: many
            loop: [1, 2, 3, 4, 5, 6]
            loop_control: {{parallel: 4}}
            params: {{command: sh, args: ["-c", "echo $$"]}}
          - {{name: here, type: exec, executor: local, register: here, params: {{command: "true"}}}}
        """, executor=client, log_level="INFO")
    assert r.ok, r.log
    rt = r.state["rt"]
    assert rt["stdout"].splitlines() == [str(tmp_path), "added", "from stdin"]
    workers = set(client.nthreads())
    assert rt["worker"] in workers and rt["host"]
    assert {s["worker"] for s in r.state["many"]} <= workers
    assert len({s["stdout"] for s in r.state["many"]}) == 6       # six processes, none merged
    assert "host" not in r.state["here"]
    assert "exec calls by worker:\n" in r.log and "  many: " in r.log
    assert client.status == "running"       # the run did not close a client it was given


def test_identical_submissions_are_not_merged(client, tmp_path):
    ex = executor(client)
    spec = {"argv": ["sh", "-c", f"echo $$ >> {tmp_path / 'pids'}"], "grace": 2.0}
    results = [call.result() for call in [ex.submit(spec), ex.submit(spec)]]
    assert [r["exit_code"] for r in results] == [0, 0]
    assert len(set(wait_for_lines(tmp_path / "pids", 2))) == 2
    ex.close()


def test_the_worker_function_is_shipped_by_value():
    fn = _dask._by_value()
    assert fn.__module__ == "gxo_shipped"
    # Plain pickle (what Dask tries first) cannot send it by reference...
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(fn)
    # ...so cloudpickle sends its code, which loads where gxo cannot be imported.
    import cloudpickle
    code = "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read()).__name__)"
    out = subprocess.run([sys.executable, "-I", "-c", code], input=cloudpickle.dumps(fn),
                         capture_output=True, cwd="/", timeout=60)
    assert out.stdout == b"_on_worker\n", out.stderr


def test_the_worker_function_runs_on_a_worker(client):
    # By reference here (the in-process workers can import gxo); cloudpickle drops the
    # file name of what it sends by value, so this is what coverage can see of it.
    result = client.submit(_dask._on_worker, {"argv": ["echo", "hi"], "grace": 1.0},
                           "gxo-test-direct", pure=False).result()
    assert result["stdout"] == b"hi\n" and result["worker"] in client.nthreads()


def test_timeout_kills_the_remote_group(run, client, tmp_path):
    pids = tmp_path / "pids"
    r = run(f"""
        name: x
        tasks:
          - name: slow
            type: exec
            timeout: 300ms
            params: {{command: sh, args: ["-c", "{busy_script(pids)}"]}}
        """, executor=client)
    assert r.status("slow") == "Failed" and r.tasks["slow"].reason == "timed out after 300ms"
    for pid in wait_for_lines(pids, 2):
        assert gone(pid)


def test_cancel_terms_then_kills_and_a_hard_cancel_kills_at_once(client, tmp_path):
    ex = executor(client)
    stubborn = {"argv": ["sh", "-c", f"trap '' TERM; echo $$ >> {tmp_path / 'pids'}; "
                                     "while :; do sleep 0.1; done"], "grace": 60.0}
    first = ex.submit(stubborn)
    pid = wait_for_lines(tmp_path / "pids", 1)[0]
    first.cancel(0.2)                   # TERM is ignored: KILL after the grace
    result = first.result()
    assert result["stopped"] and result["exit_code"] == -9 and not alive(pid)
    second = ex.submit(stubborn)
    pid = wait_for_lines(tmp_path / "pids", 2)[1]
    second.cancel(60)
    second.cancel(0)                    # a second signal: no more grace
    assert second.result()["exit_code"] == -9 and not alive(pid)
    with pytest.raises(TimeoutError):
        ex.submit({"argv": ["sleep", "0.5"], "grace": 1.0}).result(timeout=0.01)
    ex.close()


def test_a_cancelled_call_that_never_started_never_runs(client, tmp_path, monkeypatch):
    monkeypatch.setattr(_dask, "SETTLE", 0.05)
    ex = executor(client)
    marker = tmp_path / "ran"
    # Fill every worker thread, so that the next call waits in the scheduler's queue.
    busy = [ex.submit({"argv": ["sh", "-c", f"echo $$ >> {tmp_path / 'pids'}; exec sleep 60"],
                       "grace": 1.0}) for _ in range(sum(client.nthreads().values()))]
    wait_for_lines(tmp_path / "pids", len(busy))
    queued = ex.submit({"argv": ["touch", str(marker)], "grace": 1.0})
    queued.cancel(0)
    with pytest.raises(gxo.Cancelled, match="cancelled before the cluster answered"):
        queued.result()
    for call in busy:
        call.cancel(0)
        assert call.result()["stopped"]
    assert not marker.exists()
    ex.close()


def test_failures_name_the_host(run, client, tmp_path):
    r = run(f"""
        name: x
        tasks:
          - {{name: nf, type: exec, ignore_errors: true, params: {{command: "ls -l"}}}}
          - {{name: wd, type: exec, ignore_errors: true,
             params: {{command: "true", working_dir: {tmp_path / "nope"}}}}}
          - {{name: perm, type: exec, ignore_errors: true, params: {{command: {tmp_path}}}}}
          - {{name: exit, type: exec, ignore_errors: true,
             params: {{command: sh, args: ["-c", "echo out; echo boom >&2; exit 3"]}}}}
          - {{name: big, type: exec, register: big, params: {{command: seq, args: ["2000000"]}}}}
        """, executor=client)
    host = os.uname().nodename
    reason = {name: t.reason for name, t in r.tasks.items()}
    assert reason["nf"] == (f"command not found: ls -l (on {host}) (to pass arguments use 'args', "
                            "or set 'shell: true')")
    assert reason["wd"] == f"working_dir does not exist: {tmp_path / 'nope'} (on {host})"
    assert reason["perm"] == f"permission denied: {tmp_path} (on {host})"
    assert reason["exit"] == f"exit status 3: boom (on {host})"
    big = r.state["big"]
    assert big["truncated"] and "bytes dropped: the output is over max_output (2MiB)" in big["stdout"]
    assert big["stdout"].startswith("1\n2\n") and big["stdout"].endswith("\n2000000")


def test_other_oserrors_are_reported_with_the_host(run, client, tmp_path):
    script = tmp_path / "noexec"
    script.write_bytes(b"\x7fELF garbage")
    script.chmod(0o755)
    r = run(f"name: x\ntasks: [{{name: bad, type: exec, params: {{command: {script}}}}}]\n",
            executor=client)
    assert r.tasks["bad"].reason == f"Exec format error: {script} (on {os.uname().nodename})"


def test_a_wrong_target_is_a_type_error():
    with pytest.raises(TypeError, match="executor must be local, dask://HOST:PORT or "
                       "dask://local.workers=N, a distributed.Client or a gxo.Executor, not object"):
        _dask.DaskExecutor(object(), gxo.Logger("ERROR"))


def test_an_unreachable_scheduler_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_dask, "CONNECT_TIMEOUT", 0.3)
    book = tmp_path / "p.yml"
    book.write_text("name: x\ntasks: [{type: exec, params: {command: 'true'}}]\n")
    assert gxo.main(["-playbook", str(book), "-executor", "dask://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gxo: cannot reach the Dask scheduler dask://127.0.0.1:9: ")
    assert err.count("\n") == 1


def test_dask_local_in_python(run):
    r = run("name: x\ntasks: [{name: a, type: exec, register: a, params: {command: echo}}]\n",
            executor="dask://local?workers=1&threads=1", log_level="INFO")
    assert r.ok and r.state["a"]["worker"].startswith("inproc://")
    assert "executor dask://local?workers=1&threads=1: 1 workers, 1 threads" in r.log


def test_dask_local_runs_a_cluster_of_its_own(cli):
    r = cli("-executor", "dask://local?workers=2", playbook="""
        name: x
        tasks:
          - {name: a, type: exec, register: a, params: {command: echo, args: [hi]}}
          - {name: b, type: log, params: {message: "<< .a.stdout >> from << .a.worker >>"}}
          # Calls in parallel keep the comms busy as the cluster closes: nothing may be logged then.
          - {name: many, type: exec, loop: [1, 2, 3, 4, 5, 6], loop_control: {parallel: 6},
             params: {command: echo, args: ["<< .item >>"]}}
          - {name: p, type: exec, params: {command: seq, args: ["3"]}}
          - {name: c, type: collect, stream_input: p}
        """)
    assert r.returncode == 0, r.stderr
    assert "executor dask://local?workers=2&threads=4: 2 workers, 8 threads" in r.stderr
    assert "streams stay on this machine: p runs locally" in r.stderr
    assert "hi from inproc://" in r.stderr
    assert "Traceback" not in r.stderr and "distributed." not in r.stderr


# -- end to end: a real scheduler and two workers, the CLI, a signal

# Runs ``python -m MODULE ARGS`` where gxo cannot be imported, even where it is installed
# (CI installs it): the cluster must run what gxo ships it by value.
_WITHOUT_GXO = ("import runpy, sys; sys.modules.update(gxo=None, gxo_modules=None); "
                "sys.argv = sys.argv[2:]; runpy.run_module(sys.argv[0], run_name='__main__', "
                "alter_sys=True)")


def _spawn(argv, cwd, log):
    assert argv[0] == "-m"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GXO_EXECUTOR")}
    return subprocess.Popen([sys.executable, "-c", _WITHOUT_GXO, *argv], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def _address(info):
    try:
        return json.loads(info.read_text())["address"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two workers on 127.0.0.1, run from a folder where gxo is not
    importable; yields the scheduler's address, a client and the workers' pids."""
    home = tmp_path_factory.mktemp("cluster")
    log = open(home / "cluster.log", "wb")
    info = home / "scheduler.json"
    procs = [_spawn(["-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                     "--no-dashboard", "--dashboard-address", LOOPBACK, "--scheduler-file", str(info)],
                    home, log)]
    try:
        for i in range(2):
            procs.append(_spawn(["-m", "distributed.cli.dask_worker", "--scheduler-file", str(info),
                                 "--nthreads", "2", "--no-dashboard", "--dashboard-address", LOOPBACK,
                                 "--no-nanny", "--host", "127.0.0.1", "--name", f"w{i}"],
                                home, log))
        # The scheduler writes its file in place: wait until it is whole.
        wait_until(lambda: _address(info), f"no scheduler file after 60 s: see "
                   f"{home / 'cluster.log'}", 60)
        address = _address(info)
        with distributed.Client(address, set_as_default=False, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            yield address, client, [p.pid for p in procs[1:]]
    finally:
        _stop(procs[1:])        # workers first: a scheduler closing under them can hang them
        _stop(procs[:1])
        log.close()


def _stop(procs):
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_end_to_end_on_a_real_cluster(cluster, tmp_path):
    address, client, workers = cluster
    before = {w: _children(w) for w in workers}
    # The workers cannot import gxo: whatever runs there was shipped by value.
    assert set(client.run(importlib.util.find_spec, "gxo").values()) == {None}
    assert set(client.run(importlib.util.find_spec, "gxo_modules").values()) == {None}
    pids, work = tmp_path / "pids", tmp_path / "work"
    work.mkdir()
    book = write_playbook(tmp_path, f"""
        name: e2e
        tasks:
          - name: fan
            type: exec
            register: fan
            loop: [1, 2, 3, 4, 5, 6, 7, 8]
            loop_control: {{parallel: 4}}
            params: {{command: sh, args: ["-c", "echo $$ >> {pids}; echo item << .item >>"]}}
          - name: rt
            type: exec
            register: rt
            params:
              command: sh
              args: ["-c", 'pwd; echo "$GXO_T"; tr a-z A-Z']
              environment: {{GXO_T: from gxo}}
              working_dir: {work}
              stdin: shout
          - name: slow
            type: exec
            timeout: 1s
            ignore_errors: true
            params: {{command: sh, args: ["-c", "echo $$ >> {pids}; exec sleep 60"]}}
          - name: show
            type: log
            params: {{message: '<< printf "%q" .rt.stdout >> on << .rt.worker >>; << len .fan >> items'}}
    """, "p.yml")
    cli = gxo_command("-playbook", str(book), "-executor", address.replace("tcp://", "dask://"))
    r = subprocess.run(cli, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f'"{work}\\nfrom gxo\\nSHOUT" on tcp://127.0.0.1:' in r.stderr and "; 8 items" in r.stderr
    assert "[slow] Failed in" in r.stderr and "timed out after 1.00s (ignored)" in r.stderr
    assert "exec calls by worker:\n  fan: " in r.stderr
    assert "Traceback" not in r.stderr

    # A SIGINT mid-run: every remote command is gone, on every worker.
    write_playbook(tmp_path, f"""
        name: interrupted
        tasks:
          - name: sleepers
            type: exec
            loop: [1, 2, 3, 4, 5, 6]
            loop_control: {{parallel: 4}}
            params: {{command: sh, args: ["-c", "{busy_script(pids)}"]}}
    """, "p.yml")
    proc = subprocess.Popen(cli, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    found = wait_for_lines(pids, 9 + 4 * 2, timeout=60)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "[sleepers] Failed" in err and "interrupted by SIGINT" in err
    for pid in found:
        assert gone(pid), f"process {pid} survived"
    assert {w: _children(w) for w in workers} == before     # no process left on the workers
    assert len(client.nthreads()) == 2                      # and the workers are fine


def test_a_scheduler_address_in_python(run, cluster):
    address, client, _ = cluster
    r = run("name: x\ntasks: [{name: a, type: exec, register: a, params: {command: hostname}}]\n",
            executor=address.replace("tcp://", "dask://"), log_level="INFO")
    assert r.ok and r.state["a"]["worker"] in client.nthreads()
    assert f"  a: 1 on {r.state['a']['stdout']} ({r.state['a']['worker']})" in r.log


def _children(pid):
    """The processes whose parent is ``pid``."""
    found = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.add(int(entry))
        except (OSError, ValueError):
            pass
    return found
