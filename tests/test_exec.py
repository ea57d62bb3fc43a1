"""The exec module: with a mocked Popen (argv, env, errors) and with real processes."""

import io
import subprocess
import time

import pytest

import gxo
from gxo_modules import exec as exec_module


class Ctx(gxo.TaskContext):
    def __init__(self, dry_run=False):
        self.stream = io.StringIO()
        super().__init__("t", gxo.Logger("DEBUG", self.stream), dry_run)


def perform(params, ctx=None, input=None, outputs=()):
    module = exec_module.Exec()
    reader = gxo.Params(params)
    parsed = module.parse_params(reader)
    reader.finish()
    ctx = ctx or Ctx()
    errors = gxo.Channel(1000)
    return module.perform(ctx, parsed, {}, input, list(outputs), errors)


class FakePopen:
    """Records how it was called; answers communicate() with canned output."""
    calls = []

    def __init__(self, argv, **kwargs):
        self.argv, self.kwargs = argv, kwargs
        self.pid = 999999
        self.returncode = None
        FakePopen.calls.append(self)

    def communicate(self, data=None):
        self.input = data
        self.returncode = FakePopen.exit_code
        return FakePopen.out, FakePopen.err

    def wait(self):
        return self.returncode


@pytest.fixture
def fake(monkeypatch):
    FakePopen.calls, FakePopen.exit_code = [], 0
    FakePopen.out, FakePopen.err = b"out\n", b""
    monkeypatch.setattr(exec_module.subprocess, "Popen", FakePopen)
    return FakePopen


# -- mocked runner

def test_argv_and_summary(fake):
    summary = perform({"command": "deploy", "args": ["--env", "prod", 3]})
    assert fake.calls[0].argv == ["deploy", "--env", "prod", "3"]
    assert fake.calls[0].kwargs["start_new_session"] is True
    assert fake.calls[0].kwargs["env"] is None
    assert summary == {"stdout": "out", "stderr": "", "exit_code": 0}


def test_shell_mode_passes_args_as_positional_parameters(fake):
    perform({"command": "echo $1 | wc -c", "shell": True, "args": ["a b"]})
    assert fake.calls[0].argv == ["/bin/sh", "-c", "echo $1 | wc -c", "sh", "a b"]


@pytest.mark.parametrize("environment", [["A=1", "B=x=y"], {"A": 1, "B": "x=y"}])
def test_environment_is_added_to_inherited_env(fake, environment, monkeypatch):
    monkeypatch.setenv("GXO_INHERITED", "yes")
    perform({"command": "x", "environment": environment})
    env = fake.calls[0].kwargs["env"]
    assert env["A"] == "1" and env["B"] == "x=y" and env["GXO_INHERITED"] == "yes"


def test_working_dir_and_stdin(fake):
    perform({"command": "cat", "working_dir": "/tmp", "stdin": "hello"})
    call = fake.calls[0]
    assert call.kwargs["cwd"] == "/tmp" and call.input == b"hello"
    assert call.kwargs["stdin"] == subprocess.PIPE


def test_nonzero_exit_fails_with_code_and_stderr_tail(fake):
    fake.exit_code, fake.err = 3, b"line1\nline2\nline3\nfatal: disk full\n"
    with pytest.raises(gxo.TaskError, match=r"^exit status 3: line2 \| line3 \| fatal: disk full$"):
        perform({"command": "x"})


def test_dry_run_runs_nothing(fake):
    ctx = Ctx(dry_run=True)
    summary = perform({"command": "rm", "args": ["-rf", "/tmp/x y"]}, ctx)
    assert fake.calls == []
    assert summary == {"dry_run": True, "command": "rm", "args": ["-rf", "/tmp/x y"],
                       "stdout": "", "stderr": "", "exit_code": 0}
    assert "[Dry Run] Would execute command: rm -rf '/tmp/x y'" in ctx.stream.getvalue()


@pytest.mark.parametrize("params, message", [
    ({}, "param 'command': is required"),
    ({"command": ""}, "param 'command': is empty"),
    ({"command": ["ls"]}, "param 'command': expected a string, got a list"),
    ({"command": "ls", "args": "-l"}, "param 'args': expected a list of strings"),
    ({"command": "ls", "args": [["x"]]}, r"param 'args\[0\]': expected a string"),
    ({"command": "ls", "shell": "maybe"}, "param 'shell': expected true or false"),
    ({"command": "ls", "environment": ["NOEQUALS"]}, r"param 'environment\[0\]': expected KEY=value"),
    ({"command": "ls", "environment": {"A": [1]}}, "param 'environment.A': expected a string"),
    ({"command": "ls", "output": "xml"}, "param 'output': expected one of lines, json"),
    ({"command": "ls", "workdir": "/"}, "param 'workdir': unknown param .*did you mean 'working_dir'"),
])
def test_param_validation(params, message):
    with pytest.raises(gxo.ParamError, match=message):
        perform(params)


# -- real processes

def test_real_command_output_and_exit_code():
    summary = perform({"command": "sh", "args": ["-c", "echo out; echo err >&2; exit 0"]})
    assert summary == {"stdout": "out", "stderr": "err", "exit_code": 0}


def test_real_working_dir_environment_and_stdin(tmp_path):
    summary = perform({"command": "sh", "args": ["-c", 'pwd; echo "$GXO_T"; cat'],
                       "working_dir": str(tmp_path), "environment": {"GXO_T": "v"},
                       "stdin": "from stdin"})
    assert summary["stdout"].splitlines() == [str(tmp_path), "v", "from stdin"]


def test_real_nonzero_exit():
    with pytest.raises(gxo.TaskError, match="exit status 7: boom"):
        perform({"command": "sh", "args": ["-c", "echo boom >&2; exit 7"]})


def test_command_not_found_names_it_and_suggests_args():
    with pytest.raises(gxo.TaskError, match=r"^command not found: gxo-no-such-cmd$"):
        perform({"command": "gxo-no-such-cmd"})
    with pytest.raises(gxo.TaskError, match=r"command not found: ls -l \(to pass arguments use 'args'"):
        perform({"command": "ls -l"})


def test_missing_working_dir():
    with pytest.raises(gxo.TaskError, match="working_dir does not exist: /no/such/dir"):
        perform({"command": "true", "working_dir": "/no/such/dir"})


def test_shell_injection_impossible_without_shell(tmp_path):
    marker = tmp_path / "pwned"
    summary = perform({"command": "echo", "args": [f"; touch {marker}"]})
    assert summary["stdout"] == f"; touch {marker}" and not marker.exists()


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for_lines(path, n, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().split()) >= n:
            return [int(x) for x in path.read_text().split()]
        time.sleep(0.01)
    raise AssertionError(f"{path} never got {n} lines")


def test_cancel_kills_the_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    ctx = Ctx()
    script = f"echo $$ > {pids}; sleep 60 & echo $! >> {pids}; wait"
    import threading
    caught = []

    def go():
        try:
            perform({"command": "sh", "args": ["-c", script]}, ctx)
        except gxo.Cancelled as e:
            caught.append(str(e))
    t = threading.Thread(target=go)
    t.start()
    shell, child = wait_for_lines(pids, 2)
    begin = time.monotonic()
    ctx.cancel("timed out after 1s")
    t.join(10)
    assert caught == ["timed out after 1s"]
    assert time.monotonic() - begin < 5
    assert not alive(shell) and not alive(child)


def test_term_ignoring_process_is_killed_after_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(exec_module, "GRACE", 0.2)
    pids = tmp_path / "pids"
    ctx = Ctx()
    import threading
    t = threading.Thread(target=lambda: pytest.raises(gxo.Cancelled, perform, {
        "command": "sh", "args": ["-c", f"trap '' TERM; echo $$ > {pids}; sleep 60 & wait"]}, ctx))
    t.start()
    (shell,) = wait_for_lines(pids, 1)
    ctx.cancel("stop")
    t.join(10)
    assert not t.is_alive() and not alive(shell)


def test_timeout_through_the_engine_kills_the_process(run, tmp_path):
    pids = tmp_path / "pids"
    r = run(f"""
        name: timeout
        tasks:
          - name: slow
            type: exec
            timeout: 300ms
            params: {{command: sh, args: ["-c", "echo $$ > {pids}; exec sleep 60"]}}
    """)
    assert r.status("slow") == "Failed" and r.tasks["slow"].reason == "timed out after 300ms"
    (pid,) = [int(x) for x in pids.read_text().split()]
    assert not alive(pid)


def test_failed_command_leaves_no_background_children(tmp_path):
    pids = tmp_path / "pids"
    with pytest.raises(gxo.TaskError):
        perform({"command": "sh", "args": ["-c", f"sleep 60 >/dev/null 2>&1 & echo $! > {pids}; exit 1"]})
    (child,) = [int(x) for x in pids.read_text().split()]
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(child)


def test_stdin_conflicts_with_stream_input():
    with pytest.raises(gxo.ParamError, match="cannot be used with stream_input"):
        perform({"command": "cat", "stdin": "x"}, input=gxo.Channel(1))


# -- streaming

def test_exec_as_producer_emits_lines_as_they_appear():
    out, ctx, done = gxo.Channel(100), Ctx(), []

    def produce():
        try:
            perform({"command": "sh", "args": ["-c", "echo first; sleep 30; echo never"]},
                    ctx, outputs=[out])
        except gxo.Cancelled:
            done.append("cancelled")
    import threading
    t = threading.Thread(target=produce)
    t.start()
    # The first record arrives while the command still runs (not at its exit).
    assert next(iter(out)) == {"line": "first"}
    ctx.cancel("enough")
    t.join(10)
    assert done == ["cancelled"]


def test_exec_consumer_and_producer_json():
    inp, out = gxo.Channel(100), gxo.Channel(1000)
    for i in range(50):
        inp.put({"n": i})
    inp.close()
    summary = perform({"command": "cat", "output": "json"}, input=inp, outputs=[out])
    out.close()
    assert [r["n"] for r in out] == list(range(50))
    assert summary["records_in"] == 50 and summary["records_out"] == 50


def test_exec_consumer_with_input_field_and_bad_json_lines():
    inp, out = gxo.Channel(10), gxo.Channel(1000)
    for word in ["b", "a", "c"]:
        inp.put({"word": word})
    inp.close()
    module = exec_module.Exec()
    reader = gxo.Params({"command": "sort", "input_field": "word", "output": "json"})
    errors = gxo.Channel(10)
    module.perform(Ctx(), module.parse_params(reader), {}, inp, [out], errors)
    errors.close()
    assert len(list(errors)) == 3       # 'a', 'b', 'c' are not JSON objects


def test_exec_pipeline_through_the_engine(run, tmp_path):
    data = tmp_path / "words.txt"
    data.write_text("pear\napple\nfig\napple\n")
    r = run(f"""
        name: pipe
        tasks:
          - {{name: cat, type: exec, params: {{command: cat, args: ["{data}"]}}}}
          - {{name: sort, type: exec, stream_input: cat, params: {{command: sort, args: ["-u"], input_field: line}}}}
          - {{name: count, type: exec, stream_input: sort, params: {{command: wc, args: ["-l"], input_field: line}}, register: n}}
    """, channel_buffer_size=1)
    assert r.ok, r.log
    assert r.state["n"]["stdout"].strip() == "3"
