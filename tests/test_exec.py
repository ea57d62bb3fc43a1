"""The exec module: with a mocked Popen (argv, env, errors) and with real processes."""

import io
import os
import signal
import subprocess

import pytest

import gxo
from gxo_modules import _process, exec as exec_module
from helpers import (alive, busy_script, gone, gxo_command, in_background, wait_for_lines,
                     write_playbook)


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
    """Records how it was called; answers with canned output on real pipes."""
    calls = []

    def __init__(self, argv, **kwargs):
        self.argv, self.kwargs = argv, kwargs
        self.pid = 999999
        self.returncode = None
        self.stdout, self.stderr = self._pipe(FakePopen.out), self._pipe(FakePopen.err)
        if kwargs["stdin"] == subprocess.PIPE:
            r, w = os.pipe()
            self.stdin, self._stdin = open(w, "wb"), open(r, "rb")
        FakePopen.calls.append(self)

    @staticmethod
    def _pipe(data):
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        return open(r, "rb")

    @property
    def input(self):
        return self._stdin.read()

    def poll(self):
        return self.returncode

    def wait(self):
        self.returncode = FakePopen.exit_code
        return self.returncode


@pytest.fixture
def fake(monkeypatch):
    FakePopen.calls, FakePopen.exit_code = [], 0
    FakePopen.out, FakePopen.err = b"out\n", b""
    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    return FakePopen


# -- mocked runner

def test_argv_and_summary(fake):
    summary = perform({"command": "deploy", "args": ["--env", "prod", 3]})
    assert fake.calls[0].argv == ["deploy", "--env", "prod", "3"]
    assert fake.calls[0].kwargs["start_new_session"] is True
    assert fake.calls[0].kwargs["env"] is None
    assert summary == {"stdout": "out", "stderr": "", "stdout_lines": ["out"], "exit_code": 0,
                       "truncated": False, "skipped": ""}


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
                       "stdout": "", "stderr": "", "stdout_lines": [], "exit_code": 0,
                       "truncated": False, "skipped": ""}
    assert "[Dry Run] Would execute command: rm -rf '/tmp/x y'" in ctx.stream.getvalue()
    ctx = Ctx(dry_run=True)
    perform({"command": "rm -rf $1", "shell": True, "args": ["x y"]}, ctx)
    assert "[Dry Run] Would execute command: rm -rf $1 'x y'" in ctx.stream.getvalue()


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
    summary = perform({"command": "sh", "args": ["-c", "echo out; echo two; echo err >&2"]})
    assert summary == {"stdout": "out\ntwo", "stderr": "err", "stdout_lines": ["out", "two"],
                       "exit_code": 0, "truncated": False, "skipped": ""}


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


def test_a_streaming_command_that_cannot_start_says_so():
    with pytest.raises(gxo.TaskError, match="^command not found: gxo-no-such-cmd$"):
        perform({"command": "gxo-no-such-cmd"}, outputs=[gxo.Channel(10)])


def test_missing_working_dir():
    with pytest.raises(gxo.TaskError, match="working_dir does not exist: /no/such/dir"):
        perform({"command": "true", "working_dir": "/no/such/dir"})


def test_shell_injection_impossible_without_shell(tmp_path):
    marker = tmp_path / "pwned"
    summary = perform({"command": "echo", "args": [f"; touch {marker}"]})
    assert summary["stdout"] == f"; touch {marker}" and not marker.exists()


def test_cancel_kills_the_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    ctx = Ctx()
    call = in_background(perform, {"command": "sh", "args": ["-c", busy_script(pids)]}, ctx)
    shell, child = wait_for_lines(pids, 2)
    ctx.cancel("timed out after 1s")
    with pytest.raises(gxo.Cancelled, match=r"^timed out after 1s$"):
        call.result(10)
    assert gone(shell) and gone(child)


def test_term_ignoring_process_is_killed_after_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(exec_module, "GRACE", 0.2)
    pids = tmp_path / "pids"
    ctx = Ctx()
    call = in_background(perform, {
        "command": "sh", "args": ["-c", f"trap '' TERM; echo $$ > {pids}; sleep 60 & wait"]}, ctx)
    (shell,) = wait_for_lines(pids, 1)
    ctx.cancel("stop")
    with pytest.raises(gxo.Cancelled, match="^stop$"):
        call.result(10)
    assert gone(shell)


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
    assert gone(child)


def test_stdin_conflicts_with_stream_input():
    with pytest.raises(gxo.ParamError, match="cannot be used with stream_input"):
        perform({"command": "cat", "stdin": "x"}, input=gxo.Channel(1))


# -- streaming

def test_exec_as_producer_emits_lines_as_they_appear():
    out, ctx = gxo.Channel(100), Ctx()
    call = in_background(perform, {"command": "sh", "args": ["-c", "echo first; sleep 30; echo never"]},
                         ctx, outputs=[out])
    # The first record arrives while the command still runs (not at its exit).
    assert next(iter(out)) == {"line": "first"}
    ctx.cancel("enough")
    with pytest.raises(gxo.Cancelled):
        call.result(10)


def test_exec_consumer_writes_each_record_without_waiting_for_more():
    inp, out = gxo.Channel(10), gxo.Channel(10)
    inp.put({"line": "first"})
    call = in_background(perform, {"command": "cat", "input_field": "line"}, input=inp, outputs=[out])
    # The record comes back through cat while the input is still open: writes are
    # batched only from what is already queued.
    assert next(iter(out)) == {"line": "first"}
    inp.put({"line": "second"})
    inp.close()
    summary = call.result(30)
    assert summary["records_in"] == summary["records_out"] == 2


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


# -- a consumer that stops reading stops its producer (issue 9)

def test_cli_yes_into_head_ends_and_leaves_no_process(cli, tmp_path):
    r = cli(playbook="""
        name: pipe
        tasks:
          - name: yes
            type: exec
            params: {command: 'echo $$ > yes.pid; exec yes', shell: true}
          - name: head
            type: exec
            stream_input: yes
            register: h
            params: {command: head, args: ["-n", "5"], input_field: line}
          - name: show
            type: log
            params: {message: "head said << .h.stdout_lines >>"}
    """)
    assert r.returncode == 0, r.stderr
    assert 'head said ["y","y","y","y","y"]' in r.stderr
    assert "[yes] every task reading its output has stopped reading" in r.stderr
    assert "3 Completed, 0 Failed" in r.stderr
    assert gone(int((tmp_path / "yes.pid").read_text()))


def test_producer_stops_only_when_every_consumer_detached():
    a, b, ctx = gxo.Channel(10), gxo.Channel(10), Ctx()
    call = in_background(perform, {"command": "yes"}, ctx, outputs=[a, b])
    a.detach()
    assert next(iter(b)) == {"line": "y"}       # still running for b
    b.detach()
    summary = call.result(30)
    assert summary["exit_code"] == -15 and summary["records_out"] > 0
    assert "stopped reading: the command was stopped" in ctx.stream.getvalue()


def test_a_consumer_gone_before_the_start_stops_the_producer_at_once():
    out = gxo.Channel(10)
    out.detach()
    summary = perform({"command": "sleep", "args": ["300"]}, outputs=[out])
    assert summary["exit_code"] == -15


# -- a timeout or signal ends a task whose escaped grandchild holds the pipes (issue 9)

ESCAPE = "setsid sleep 300 & echo $! > escaped.pid; echo started"


@pytest.fixture
def escaped(tmp_path):
    """The pid file of the escaped sleep; kills it afterwards."""
    path = tmp_path / "escaped.pid"
    yield path
    if path.exists():
        pid = int(path.read_text())
        if alive(pid):
            os.kill(pid, 9)


def test_cli_timeout_ends_a_task_whose_escaped_grandchild_holds_stdout(cli, escaped):
    r = cli(playbook=f"""
        name: esc
        tasks:
          - {{name: esc, type: exec, timeout: 1s, params: {{command: "{ESCAPE}", shell: true}}}}
    """)
    assert r.returncode == 1 and "[esc] Failed" in r.stderr and "timed out after 1" in r.stderr
    assert alive(int(escaped.read_text()))      # it escaped: gxo did not wait for it


def test_cli_sigterm_ends_a_task_whose_escaped_grandchild_holds_stdout(tmp_path, escaped):
    write_playbook(tmp_path, f"""
        name: esc
        tasks:
          - {{name: esc, type: exec, params: {{command: "{ESCAPE}", shell: true}}}}
    """, "p.yml")
    proc = subprocess.Popen(gxo_command("-playbook", "p.yml"), cwd=tmp_path, stderr=subprocess.PIPE,
                            text=True)
    wait_for_lines(escaped, 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "[esc] Failed" in err


def test_cancel_stops_feeding_stdin_held_by_an_escaped_grandchild(tmp_path, escaped):
    ctx = Ctx()
    script = ("exec 3<&0; setsid sleep 300 <&3 >/dev/null 2>&1 & echo $! > escaped.pid; "
              "exec 3<&-; exec sleep 300")
    call = in_background(perform, {"command": script, "shell": True, "stdin": "x" * 300_000,
                                   "working_dir": str(tmp_path)}, ctx)
    wait_for_lines(escaped, 1)
    ctx.cancel("timed out after 1s")
    with pytest.raises(gxo.Cancelled, match=r"^timed out after 1s$"):
        call.result(30)


def test_cancel_stops_feeding_records_held_by_an_escaped_grandchild(tmp_path, escaped):
    import threading
    inp, ctx, caught = gxo.Channel(100_000), Ctx(), []
    for i in range(20_000):                     # far more than a pipe holds
        inp.put({"line": f"record {i}"})
    inp.close()
    script = ("exec 3<&0; setsid sleep 300 <&3 >/dev/null 2>&1 & echo $! > escaped.pid; "
              "exec 3<&-; exec sleep 300")

    def go():
        try:
            perform({"command": script, "shell": True, "working_dir": str(tmp_path)}, ctx,
                    input=inp)
        except gxo.Cancelled as e:
            caught.append(str(e))
    t = threading.Thread(target=go)
    t.start()
    wait_for_lines(escaped, 1)
    ctx.cancel("timed out after 1s")
    t.join(30)
    assert caught == ["timed out after 1s"] and 0 < inp.undelivered < 20_000


# -- bounded output (issue 9; README.md, exec)

def test_output_over_max_output_keeps_head_and_tail():
    ctx = Ctx()
    summary = perform({"command": "seq", "args": ["1", "100000"], "max_output": "1KiB"}, ctx)
    out = summary["stdout"]
    assert summary["truncated"] is True and len(out) < 1200
    lines = summary["stdout_lines"]
    assert lines[:3] == ["1", "2", "3"] and lines[-2:] == ["99999", "100000"]
    gap = [x for x in lines if "dropped" in x]
    assert len(gap) == 1 and "max_output (1KiB)" in gap[0]
    dropped = int(gap[0].split()[1].replace(",", ""))
    assert dropped + sum(len(x) + 1 for x in lines if x is not gap[0]) == 588_895
    assert "stdout was 588,895 bytes, over max_output (1KiB)" in ctx.stream.getvalue()


def test_output_under_max_output_is_whole_and_one_long_line_is_cut():
    summary = perform({"command": "seq", "args": ["1", "100"], "max_output": 1000})
    assert summary["truncated"] is False and summary["stdout_lines"] == [str(i) for i in range(1, 101)]
    summary = perform({"command": "sh", "args": ["-c", "head -c 5000 /dev/zero | tr '\\0' x"],
                       "max_output": 100})
    head, gap, tail = summary["stdout"].split("\n")
    assert head == tail == "x" * 50 and "4,900 bytes dropped" in gap


def test_stderr_is_bounded_while_stdout_streams():
    out = gxo.Channel(100)
    summary = perform({"command": "sh", "args": ["-c", "seq 1 20000 >&2; echo done"],
                       "max_output": 64}, outputs=[out])
    out.close()
    assert list(out) == [{"line": "done"}]
    assert summary["truncated"] is True and summary["stderr"].startswith("1\n2\n")
    assert summary["stderr"].endswith("19999\n20000") and len(summary["stderr"]) < 150


def test_a_streamed_line_over_max_output_is_a_record_error():
    out, errors = gxo.Channel(100), []
    module = exec_module.Exec()
    params = module.parse_params(gxo.Params({
        "command": "sh", "args": ["-c", "echo a; head -c 300 /dev/zero | tr '\\0' x; echo; echo b"],
        "max_output": 100}))
    sink = type("Sink", (), {"put": lambda self, e: errors.append(e)})()
    module.perform(Ctx(), params, {}, None, [out], sink)
    out.close()
    assert list(out) == [{"line": "a"}, {"line": "b"}]
    assert len(errors) == 1 and errors[0].item == "line 2"
    assert "longer than max_output (100 bytes), dropped: xxx" in errors[0].cause


@pytest.mark.parametrize("value, size", [
    (0, 0), (1000, 1000), ("2048", 2048), ("512KiB", 512 << 10), ("4MiB", 4 << 20),
    ("1 gib", 1 << 30), ("2MB", 2_000_000), ("10kB", 10_000), ("7b", 7), (None, 2 << 20),
])
def test_max_output_sizes(value, size):
    params = {"command": "true"} if value is None else {"command": "true", "max_output": value}
    assert exec_module.Exec().parse_params(gxo.Params(params))["max_output"] == size


@pytest.mark.parametrize("value", ["lots", "4XB", -1, True, "1.5MiB", [1]])
def test_max_output_bad_sizes(value):
    with pytest.raises(gxo.ParamError, match="param 'max_output': expected a size in bytes"):
        perform({"command": "true", "max_output": value})


# -- NUL bytes and text that is not UTF-8 (issue 9)

@pytest.mark.parametrize("params, name", [
    ({"command": "ec\0ho"}, "command"),
    ({"command": "echo", "args": ["a", "b\0"]}, r"args\[1\]"),
    ({"command": "echo", "working_dir": "/tmp\0"}, "working_dir"),
    ({"command": "echo", "environment": ["A=\0"]}, r"environment\[0\]"),
    ({"command": "echo", "environment": {"A": "x\0y"}}, "environment.A"),
    ({"command": "echo", "environment": {"A\0": "x"}}, "environment.A\0"),
    ({"command": "echo", "creates": "a\0"}, "creates"),
])
def test_nul_bytes_are_param_errors(params, name):
    with pytest.raises(gxo.ParamError, match=f"param '{name}': contains a NUL byte"):
        perform(params)


@pytest.mark.parametrize("params, name", [
    ({"command": "echo", "args": ["\ud800"]}, r"args\[0\]"),
    ({"command": "cat", "stdin": "a\ud800"}, "stdin"),
])
def test_unencodable_text_is_a_param_error(params, name):
    with pytest.raises(gxo.ParamError, match=f"param '{name}': is not valid UTF-8 text: "
                                             r"'\\ud800' at character \d is a lone surrogate"):
        perform(params)


@pytest.mark.parametrize("params, message", [
    ({"environment": {"": "x"}}, "param 'environment.': a variable name cannot be empty"),
    ({"environment": {"A=B": "x"}}, "param 'environment.A=B': a variable name cannot"),
])
def test_bad_environment_names(params, message):
    with pytest.raises(gxo.ParamError, match=message):
        perform({"command": "true", **params})


def test_surrogate_escaped_text_goes_to_stdin_as_its_bytes():
    summary = perform({"command": "od", "args": ["-An", "-tx1"], "stdin": "a\udcff"})
    assert summary["stdout"].split() == ["61", "ff"]


def test_cli_nul_byte_in_a_static_param_is_a_load_error(cli):
    r = cli(playbook="""
        name: nul
        tasks:
          - name: n
            type: exec
            params: {command: echo, args: ["a\\0b"]}
    """)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "playbook.yml:6:" in r.stderr and "params.args[0]: contains a NUL byte" in r.stderr


def test_cli_nul_byte_in_a_rendered_param_fails_the_task_naming_it(cli):
    r = cli(playbook="""
        name: nul
        vars: {x: "a\\0b"}
        tasks:
          - {name: n, type: exec, params: {command: echo, environment: {X: "<< .x >>"}}}
    """)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "[n] Failed" in r.stderr and "param 'environment.X': contains a NUL byte" in r.stderr


def test_cli_non_utf8_records_into_an_exec_consumer(cli, tmp_path):
    (tmp_path / "in.jsonl").write_text(
        '{"line": "a"}\n{"line": "\\udcff\\udcfe"}\n{"line": "\\ud800x"}\n{"n": 1}\n{"line": "z"}\n')
    r = cli(playbook="""
        name: surrogates
        tasks:
          - {name: src, type: records, params: {file: in.jsonl, format: json}}
          - name: text
            type: exec
            stream_input: src
            register: text
            params: {command: od, args: [-An, -tx1], input_field: line}
          - name: json
            type: exec
            stream_input: src
            register: json
            params: {command: cat}
          - name: show
            type: log
            params: {message: "text=<< .text.stdout >> in=<< .text.records_in >> json=<< .json.stdout >>"}
    """)
    assert r.returncode == 0 and "Traceback" not in r.stderr
    # The surrogate-escaped bytes go back as they were read; \ud800 has no bytes: a record
    # error; so has the record without the field.
    assert "text= 61 0a ff fe 0a 7a 0a in=3" in r.stderr
    assert "[RECORD_ERROR] task=text" in r.stderr and "is a lone surrogate" in r.stderr
    assert "no field 'line' to write to stdin" in r.stderr
    assert "[text] Completed" in r.stderr and "(2 record errors)" in r.stderr
    assert ('json={"line": "a"}\n{"line": "\\udcff\\udcfe"}\n{"line": "\\ud800x"}\n{"n": 1}\n'
            '{"line": "z"}\n') in r.stderr


def test_a_record_the_feeder_cannot_write_fails_the_task():
    looped = {}
    looped["self"] = looped
    inp = gxo.Channel(10)
    for record in ({"a": 1}, looped, {"a": 2}):
        inp.put(record)
    inp.close()
    with pytest.raises(ValueError, match="Circular reference"):
        perform({"command": "cat"}, input=inp)


# -- summary and failures (issue 8)

def test_failure_carries_the_summary_and_logs_the_last_lines_of_both_streams():
    ctx = Ctx()
    script = 'seq 1 30; printf "%0500d\\n" 7; echo warn >&2; echo "fatal: it broke" >&2; exit 3'
    with pytest.raises(gxo.TaskError) as e:
        perform({"command": "sh", "args": ["-c", script]}, ctx)
    assert str(e.value) == "exit status 3: warn | fatal: it broke"
    summary = e.value.summary
    assert summary["exit_code"] == 3 and summary["stdout_lines"][:2] == ["1", "2"]
    assert summary["stderr"] == "warn\nfatal: it broke"
    log = ctx.stream.getvalue()
    assert "ERROR stdout (last 10 of 31 lines):\n  | 22\n" in log
    assert "  | 30\n  | " + "0" * 299 + "7"[:0] in log and "... (500 characters)" in log
    assert "ERROR stderr (2 lines):\n  | warn\n  | fatal: it broke" in log


def test_failure_with_no_output_logs_nothing_more():
    ctx = Ctx()
    with pytest.raises(gxo.TaskError, match="^exit status 1$"):
        perform({"command": "false"}, ctx)
    assert "stdout (" not in ctx.stream.getvalue() and "stderr (" not in ctx.stream.getvalue()


def test_cli_loop_over_stdout_lines(cli):
    r = cli(playbook="""
        name: loop
        tasks:
          - {name: files, type: exec, register: files, params: {command: printf, args: ['a.txt\\nb.txt\\n']}}
          - name: each
            type: exec
            loop: "<< .files.stdout_lines >>"
            register: each
            params: {command: echo, args: ["got << .item >>"]}
          - {name: show, type: log, params: {message: "<< range .each >><< .stdout >>;<< end >>"}}
    """)
    assert r.returncode == 0 and "got a.txt;got b.txt;" in r.stderr


def test_cli_failed_command_shows_its_test_report(cli):
    r = cli(playbook="""
        name: ci
        tasks:
          - name: tests
            type: exec
            params: {command: 'echo "1 passed, 1 failed: test_login"; echo boom >&2; exit 2', shell: true}
    """)
    assert r.returncode == 1
    assert "[tests] stdout (1 line):\n  | 1 passed, 1 failed: test_login" in r.stderr
    assert "[tests] Failed in" in r.stderr and "exit status 2: boom" in r.stderr


# -- creates / removes (issue 10)

def test_creates_and_removes(tmp_path, fake):
    (tmp_path / "built").write_text("")
    ctx = Ctx()
    summary = perform({"command": "make", "creates": "built", "working_dir": str(tmp_path)}, ctx)
    assert fake.calls == []
    assert summary == {"stdout": "", "stderr": "", "stdout_lines": [], "exit_code": 0,
                       "truncated": False, "skipped": "creates: built exists"}
    assert "INFO  not running make: creates: built exists" in ctx.stream.getvalue()
    summary = perform({"command": "rm", "removes": str(tmp_path / "gone")})
    assert fake.calls == [] and summary["skipped"] == f"removes: {tmp_path}/gone does not exist"
    # and when the path says the command must run, it runs
    summary = perform({"command": "make", "creates": str(tmp_path / "other"),
                       "removes": str(tmp_path / "built")})
    assert len(fake.calls) == 1 and summary["skipped"] == ""


def test_creates_is_honoured_in_a_dry_run(tmp_path, fake):
    (tmp_path / "built").write_text("")
    ctx = Ctx(dry_run=True)
    summary = perform({"command": "make", "creates": str(tmp_path / "built")}, ctx)
    assert summary["skipped"] == f"creates: {tmp_path}/built exists"
    assert "[Dry Run] not running make: creates:" in ctx.stream.getvalue()
    ctx = Ctx(dry_run=True)
    perform({"command": "make", "creates": str(tmp_path / "nothing")}, ctx)
    assert "[Dry Run] Would execute command: make" in ctx.stream.getvalue() and fake.calls == []


def test_cli_creates_runs_a_step_once(cli, tmp_path):
    playbook = """
        name: once
        tasks:
          - name: build
            type: exec
            register: b
            params: {command: sh, args: [-c, "echo built > out.txt; echo ran"], creates: out.txt}
          - {name: show, type: log, params: {message: "ran=<< .b.stdout >> skipped=<< .b.skipped >>"}}
    """
    r = cli(playbook=playbook)
    assert r.returncode == 0 and "ran=ran skipped=\n" in r.stderr
    r = cli(playbook=playbook)
    assert r.returncode == 0 and "[build] not running sh -c" in r.stderr
    assert "ran= skipped=creates: out.txt exists" in r.stderr and "2 Completed" in r.stderr


# -- the corners of the pipes

def test_dry_run_drains_its_input(fake):
    inp = gxo.Channel(10)
    for i in range(3):
        inp.put({"n": i})
    inp.close()
    assert perform({"command": "cat"}, Ctx(dry_run=True), input=inp)["dry_run"] is True
    assert inp.queued == 0 and fake.calls == []


def test_permission_denied(tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(gxo.TaskError, match=f"^permission denied: {script}$"):
        perform({"command": str(script)})


def test_a_stream_aborted_under_a_producer_kills_its_command(tmp_path):
    out = gxo.Channel(1)
    out.abort("stream producer p failed")
    with pytest.raises(gxo.Cancelled, match="stream producer p failed"):
        perform({"command": "sh", "args": ["-c", "echo $$ > pid; exec yes"],
                 "working_dir": str(tmp_path)}, outputs=[out])
    assert gone(int((tmp_path / "pid").read_text()))


def test_environment_values_and_templates(fake):
    perform({"command": "x", "environment": {"DEBUG": True, "N": 3, "OFF": False}})
    env = fake.calls[0].kwargs["env"]
    assert (env["DEBUG"], env["N"], env["OFF"]) == ("true", "3", "false")
    with pytest.raises(gxo.ParamError, match="param 'environment': expected a list of KEY=value"):
        perform({"command": "x", "environment": "A=1"})
    # Before the run, values still to be rendered pass the checks.
    p = gxo.Params({"command": "x", "environment": ["<< .e >>"], "max_output": "<< .m >>"},
                   static=True)
    parsed = exec_module.Exec().parse_params(p)
    assert parsed["environment"] == {} and parsed["max_output"] == "<< .m >>"


def stream(script, params=None, input=None):
    """Run a shell script as a producer: (records, record errors, summary)."""
    out, errors = gxo.Channel(100_000), []
    sink = type("Sink", (), {"put": lambda self, e: errors.append(e)})()
    module = exec_module.Exec()
    parsed = module.parse_params(gxo.Params({"command": "sh", "args": ["-c", script],
                                             **(params or {})}))
    summary = module.perform(Ctx(), parsed, {}, input, [out], sink)
    out.close()
    return list(out), errors, summary


def test_streamed_lines_crlf_and_last_line_without_newline():
    records, errors, _ = stream(r"printf 'a\r\nb\r\nc'")
    assert records == [{"line": "a"}, {"line": "b"}, {"line": "c"}] and errors == []


def test_a_streamed_line_over_max_output_across_many_chunks():
    records, errors, _ = stream("echo a; head -c 300000 /dev/zero | tr '\\0' x; echo b; echo c",
                                {"max_output": 1000})
    # Line 2 is 300,000 x then "b": it is never held whole, and the lines after it go on.
    assert records == [{"line": "a"}, {"line": "c"}]
    assert [e.item for e in errors] == ["line 2"] and "longer than max_output" in errors[0].cause


def test_json_output_that_is_not_an_object_is_a_record_error():
    records, errors, _ = stream("""echo '{"a": 1}'; echo '[1]'; echo '{"b": 2}'""",
                                {"output": "json"})
    assert records == [{"a": 1}, {"b": 2}]
    assert [e.item for e in errors] == ["line 2"] and "not a JSON object" in errors[0].cause


def test_feeding_records_that_cannot_be_written():
    inp = gxo.Channel(10)
    for record in ({"line": "a\udcff"}, {"line": "\ud800"}, {"line": 7}, {"other": 1}):
        inp.put(record)
    inp.close()
    records, errors, summary = stream("od -An -c", {"input_field": "line"}, inp)
    assert [r["line"].split() for r in records] == [["a", "377", "\\n", "7", "\\n"]]
    assert summary["records_in"] == 2
    assert [e.cause.split(":")[0] for e in errors] == ["'line' is not valid UTF-8 text",
                                                       "no field 'line' to write to stdin"]
    assert errors[0].item == '{"line":"\ud800"}'


def test_feeding_json_records_with_lone_surrogates():
    inp = gxo.Channel(10)
    inp.put({"s": "\ud800", "t": "é"})
    inp.close()
    records, errors, summary = stream("cat", {"output": "json"}, inp)
    assert records == [{"s": "\ud800", "t": "é"}] and errors == [] and summary["records_in"] == 1


def test_a_consumer_that_stops_reading_early_is_fine():
    inp = gxo.Channel(100_000)
    for i in range(50_000):
        inp.put({"line": f"record {i}"})
    inp.close()
    summary = perform({"command": "head", "args": ["-n", "2"], "input_field": "line"}, input=inp)
    assert summary["stdout_lines"] == ["record 0", "record 1"]
    assert 0 < summary["records_in"] < 50_000 and inp.undelivered > 0


def test_terminate_hard_and_after_the_end():
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    _process.terminate(proc, 0)
    assert proc.wait() == -9
    _process.terminate(proc, 2.0)                   # the group is gone: nothing to do
