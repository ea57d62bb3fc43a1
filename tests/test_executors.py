"""Executors without Dask: the shared process runner, the local executor, choosing one."""

import subprocess
import sys
import threading
import time

import pytest

import gxo
from gxo_modules import _process, exec as exec_module
from helpers import ROOT, alive, busy_script, gone, in_background, wait_for_lines


def run(spec, stop=None, kill=None):
    never = threading.Event().wait
    return _process.run({"grace": 2.0, **spec}, stop or never, kill or never)


# -- the runner every executor uses

def test_runner_round_trips_argv_env_cwd_stdin(tmp_path, monkeypatch):
    monkeypatch.setenv("GXO_INHERITED", "kept")
    result = run({"argv": ["sh", "-c", 'pwd; echo "$GXO_T $GXO_INHERITED"; cat; echo e >&2'],
                  "env": {"GXO_T": "added"}, "cwd": str(tmp_path), "stdin": "from stdin"})
    assert result["stdout"].decode().splitlines() == [str(tmp_path), "added kept", "from stdin"]
    assert result["stderr"] == b"e\n"
    assert result["exit_code"] == 0 and result["host"]
    assert not (result["truncated"] or result["timed_out"] or result["stopped"])


def test_runner_keeps_head_and_tail_and_says_how_much_it_dropped():
    result = run({"argv": ["sh", "-c", "echo start; seq 100000; echo end >&2; seq 50000 >&2"],
                  "limit": 1000})
    out = result["stdout"]
    assert out.startswith(b"start\n1\n2\n") and out.endswith(b"99999\n100000\n")
    head, gap, tail = out.partition(b"[... ")
    gap, _, tail = tail.partition(b" ...]\n")
    dropped = int(gap.split(b" ")[0].replace(b",", b""))
    assert gap.endswith(b"bytes dropped: the output is over max_output (1,000 bytes)")
    printed = len(subprocess.check_output(["sh", "-c", "echo start; seq 100000"]))
    assert len(head + tail) <= 1000 and dropped + len(head + tail) == printed
    assert (result["printed"][0], result["dropped"][0]) == (printed, dropped)
    assert result["stderr"].startswith(b"end\n1\n") and b"bytes dropped" in result["stderr"]
    assert result["truncated"]


def test_runner_reports_what_could_not_start(tmp_path):
    assert run({"argv": ["gxo-no-such-cmd"]})["oserror"][2] == "gxo-no-such-cmd"
    missing = str(tmp_path / "nope")
    assert run({"argv": ["true"], "cwd": missing})["oserror"][2] == missing
    assert run({"argv": ["true"]}, stop=lambda t: True).keys() == {"host", "stopped"}


def test_runner_timeout_kills_the_group_and_a_failure_leaves_nothing(tmp_path):
    pids = tmp_path / "pids"
    result = run({"argv": ["sh", "-c", busy_script(pids)], "timeout": 0.3})
    assert result["timed_out"] and result["exit_code"] == -15
    # A failing command's background children go too, even when they hold no pipe.
    failed = run({"argv": ["sh", "-c", f"sleep 60 >/dev/null 2>&1 & echo $! >> {pids}; exit 3"]})
    assert failed["exit_code"] == 3
    for pid in wait_for_lines(pids, 3):
        assert gone(pid)


def test_runner_stop_terms_then_kills_after_the_grace(tmp_path):
    pids, stop, kill = tmp_path / "pids", threading.Event(), threading.Event()
    script = f"trap '' TERM; echo $$ > {pids}; while :; do sleep 0.1; done"
    call = in_background(run, {"argv": ["sh", "-c", script], "grace": 60}, stop.wait, kill.wait)
    pid = wait_for_lines(pids, 1)[0]
    stop.set()                      # TERM is ignored: only KILL ends it
    kill.set()
    result = call.result()
    assert result["stopped"] and result["exit_code"] == -9 and not alive(pid)


def test_runner_treats_an_unreadable_stop_signal_as_stop(tmp_path):
    def broken(t):
        raise ConnectionError("worker closing")
    result = run({"argv": ["sleep", "60"], "grace": 0.1}, stop=lambda t: t > 0 and broken(t))
    assert result["stopped"] and result["exit_code"] == -15


def test_runner_survives_a_command_that_does_not_read_its_stdin():
    result = run({"argv": ["true"], "stdin": "x" * (1 << 20)})
    assert result["exit_code"] == 0


def test_runner_times_out_a_command_that_closed_its_pipes(tmp_path):
    # The pipes are closed: the loop is done, the timeout comes while waiting for the exit.
    closed = ["sh", "-c", f"exec >&- 2>&-; echo $$ > {tmp_path / 'pid'}; exec sleep 60"]
    result = run({"argv": closed, "timeout": 0.3})
    assert result["timed_out"] and result["exit_code"] == -15 and not result["stopped"]
    call = gxo.LocalExecutor().submit({"argv": closed})
    with pytest.raises(TimeoutError, match="no result after 0.2s"):
        call.result(timeout=0.2)
    call.cancel(0)
    assert call.result()["exit_code"] == -9 and gone(wait_for_lines(tmp_path / "pid", 1)[0])


# -- the local executor

def test_local_executor_protocol(tmp_path):
    executor = gxo.LocalExecutor()
    assert executor.remote is False
    call = executor.submit({"argv": ["sh", "-c", "cat; exit 4"], "stdin": "hi", "grace": 2.0})
    result = call.result()
    assert (result["stdout"], result["exit_code"]) == (b"hi", 4)

    pids = tmp_path / "pids"
    call = executor.submit({"argv": ["sh", "-c", f"echo $$ > {pids}; exec sleep 60"], "grace": 2.0})
    with pytest.raises(TimeoutError, match="no result after 0.05s"):
        call.result(timeout=0.05)
    pid = wait_for_lines(pids, 1)[0]
    call.cancel(0.5)
    assert call.result()["exit_code"] == -15 and not alive(pid)

    call = executor.submit({"argv": ["sh", "-c", "trap '' TERM; sleep 60"], "grace": 60})
    call.cancel(0)
    assert call.result()["stopped"]
    executor.close()


def test_a_remote_call_that_times_out_on_its_worker_names_the_host(tmp_path):
    class Away(gxo.LocalExecutor):
        remote = True
    ctx = gxo.TaskContext("t", gxo.Logger("ERROR"))
    ctx.executor, ctx.deadline = Away(), time.monotonic() + 0.3     # no engine timer here
    module = exec_module.Exec()
    params = module.parse_params(gxo.Params({"command": "sleep", "args": ["60"]}))
    with pytest.raises(gxo.TaskError, match=r"^timed out \(on .+\)$") as e:
        module.perform(ctx, params, {}, None, [], None)
    assert e.value.summary["exit_code"] == -15 and e.value.summary["host"]


def test_local_executor_hands_an_error_to_the_caller():
    with pytest.raises(KeyError, match="argv"):
        gxo.LocalExecutor().submit({}).result()


def test_executor_base_is_a_protocol():
    with pytest.raises(NotImplementedError):
        gxo.Executor().submit({})
    assert gxo.Executor().close() is None


# -- choosing the executor

@pytest.mark.parametrize("text, target", [
    ("local", "local"),
    ("dask://10.0.0.5:8786", "tcp://10.0.0.5:8786"),
    ("dask://[::1]:8786", "tcp://[::1]:8786"),
    ("dask://local", ("local", 2, 4)),
    ("dask://local?workers=3", ("local", 3, 4)),
    ("dask://local?workers=1&threads=8", ("local", 1, 8)),
])
def test_executor_choices(text, target):
    assert gxo._executor_target(text) == target


@pytest.mark.parametrize("text, message", [
    ("dask", "expected local, dask://HOST:PORT or dask://local?workers=N, got the string 'dask'"),
    ("dask://host", "got the string 'dask://host'"),
    ("dask://host:port", "got the string 'dask://host:port'"),
    ("dask://h:1?workers=2", "got the string"),
    ("dask://local?workers=0", "dask://local takes workers=N and threads=N (N >= 1), "
                               "got the string 'workers=0'"),
    ("dask://local?nodes=2", "got the string 'nodes=2'"),
    (3, "got int 3"),
])
def test_bad_executor_choices(text, message):
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[")):
        gxo._executor_target(text)


def test_engine_reads_gxo_executor_and_names_it_in_errors(load, monkeypatch):
    playbook = load("name: x\ntasks: [{type: log, params: {message: hi}}]\n")
    monkeypatch.setenv("GXO_EXECUTOR", "dask://local?workers=2")
    assert gxo.Engine(playbook).executor_target == ("local", 2, 4)
    assert gxo.Engine(playbook, executor="local").executor_target == "local"
    monkeypatch.setenv("GXO_EXECUTOR", "")
    assert gxo.Engine(playbook).executor_target == "local"
    monkeypatch.setenv("GXO_EXECUTOR", "yarn")
    with pytest.raises(ValueError, match="^GXO_EXECUTOR: expected local"):
        gxo.Engine(playbook)
    with pytest.raises(ValueError, match="^executor: expected local"):
        gxo.Engine(playbook, executor="yarn")


def test_an_executor_object_is_used_and_left_open(run):
    class Recording(gxo.LocalExecutor):
        remote, calls, closed = True, [], False

        def submit(self, spec):
            self.calls.append(spec)
            return super().submit(spec)

        def close(self):
            self.closed = True

    executor = Recording()
    r = run("""
        name: x
        tasks:
          - {name: away, type: exec, register: a,
             params: {command: sh, args: ["-c", "echo $A"], environment: {A: "1"}}}
          - {name: here, type: exec, executor: local, register: h, params: {command: "true"}}
          - {name: prod, type: exec, params: {command: echo, args: [x]}}
          - {name: sink, type: collect, stream_input: prod}
        """, executor=executor)
    assert r.ok and not executor.closed
    assert "streams stay on this machine: prod runs locally" in r.log
    assert [c["argv"] for c in executor.calls] == [["sh", "-c", "echo $A"]]
    assert executor.calls[0]["env"] == {"A": "1"} and executor.calls[0]["task"] == "away"
    assert r.state["a"]["stdout"] == "1" and r.state["a"]["host"]
    assert "host" not in r.state["h"]


def test_task_executor_key_is_validated(load):
    assert load("name: x\ntasks: [{type: exec, executor: local, params: {command: 'true'}}]\n"
                ).tasks[0].executor == "local"
    assert load("name: x\ntasks: [{type: exec, executor: null, params: {command: 'true'}}]\n"
                ).tasks[0].executor is None
    with pytest.raises(gxo.PlaybookError, match=r"playbook.yml:2:\d+: task #1: executor: a task can "
                       r"only pin itself to this machine: expected 'local', got the string "
                       r"'dask://h:1'"):
        load("name: x\ntasks: [{type: exec, executor: 'dask://h:1', params: {command: 'true'}}]\n")


# -- the command line, without Dask installed

def test_cli_rejects_a_bad_executor(cli):
    r = cli("-playbook", "x.yml", "-executor", "dask://nowhere")
    assert r.returncode == 2 and "gxo: -executor: expected local, dask://HOST:PORT" in r.stderr
    r = cli("-executor", "yarn", playbook="name: x\ntasks: [{type: exec, params: {command: 'true'}}]\n")
    assert r.returncode == 2 and "gxo: -executor: expected local" in r.stderr
    r = cli(playbook="name: x\ntasks: [{type: exec, params: {command: 'true'}}]\n",
            env={"GXO_EXECUTOR": "yarn"})
    assert r.returncode == 2 and r.stderr == ("gxo: GXO_EXECUTOR: expected local, dask://HOST:PORT "
                                              "or dask://local?workers=N, got the string 'yarn'\n")


def test_cli_without_dask_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)      # as if it were not installed
    monkeypatch.delitem(sys.modules, "gxo_modules._dask", raising=False)
    import gxo_modules
    monkeypatch.delattr(gxo_modules, "_dask", raising=False)
    book = tmp_path / "p.yml"
    book.write_text("name: x\ntasks: [{type: exec, params: {command: 'true'}}]\n")
    assert gxo.main(["-playbook", str(book), "-executor", "dask://127.0.0.1:8786"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gxo: the dask executor needs Dask: pip install 'gxo[dask]'")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_dry_run_does_not_contact_the_executor(cli):
    r = cli("-dry-run", "-executor", "dask://127.0.0.1:9",
            playbook="name: x\ntasks: [{type: exec, params: {command: 'true'}}]\n")
    assert r.returncode == 0, r.stderr
    assert "dry run: the executor is not contacted" in r.stderr


def test_importing_gxo_does_not_import_dask():
    code = ("import sys, gxo; gxo.run_playbook('name: x\\ntasks: [{type: exec, params: "
            "{command: \"true\"}}]\\n', log_stream=open('/dev/null', 'w')); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout == "[]\n", out.stderr
