"""What a run tells its operator: the -report file, -log-format json, colour and progress."""

import fcntl
import io
import json
import os
import re
import shlex
import signal
import struct
import subprocess
import termios
import textwrap

import pytest

import gxo
from helpers import ENV, ROOT, gxo_command, wait_until, write_playbook

LOOP = """
name: demo
tasks:
  - name: build
    type: exec
    params: {command: "true"}
  - name: push
    type: exec
    depends_on: [build]
    loop: [web1, web2, web3]
    retry: {attempts: 2, delay: 10ms}
    params:
      command: sh
      args: [-c, 'test "$0" != web2', "<< .item >>"]
  - {name: notify, type: log, depends_on: [push], params: {message: pushed}}
"""

# -- the report file

def documented_fields():
    """{dotted field: type} from the table in docs/report.md."""
    text = (ROOT / "docs" / "report.md").read_text()
    return dict(re.findall(r"^\| `([\w.\[\]]+)` \| ([a-z ]+) \|", text, re.M))


_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
          "object": dict, "array": list, "null": type(None)}


def check_against_doc(report):
    """Check that each field written is documented, with its type; return those not written."""
    documented, seen = documented_fields(), set()

    def walk(value, path):
        for key, v in value.items():
            field = f"{path}{key}"
            if path.endswith("counts."):
                continue                    # keyed by status
            assert field in documented, f"{field} is not in docs/report.md"
            kinds = tuple(_TYPES[k] for k in documented[field].split(" or "))
            assert isinstance(v, kinds) and not (isinstance(v, bool) and bool not in kinds), \
                f"{field} = {v!r} is not {documented[field]}"
            seen.add(field)
            if isinstance(v, dict):
                walk(v, field + ".")
            elif isinstance(v, list):
                for element in v:
                    walk(element, field + "[].")

    walk(report, "")
    return set(documented) - seen


def test_report_fields_are_the_documented_ones(cli, tmp_path):
    (tmp_path / "out").mkdir()
    r = cli("-report", "out/report.json", playbook=LOOP)
    assert r.returncode == 1, r.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert check_against_doc(report) == set()       # a failed loop shows every field
    assert report["schema"] == "gxo-report/1" and report["gxo"] == gxo.__version__
    assert report["playbook"] == {"name": "demo", "file": str(tmp_path / "playbook.yml")}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", report["start"])
    assert report["exit_code"] == 1 and report["halted"] == "task 'push' failed"
    assert report["error"] is None and report["dry_run"] is False
    assert report["counts"] == {"Completed": 1, "Failed": 1, "Skipped": 1}
    build, push, notify = report["tasks"]
    assert (build["name"], build["status"], build["items"], build["attempts"]) == \
        ("build", "Completed", None, 1)
    assert push["status"] == "Failed" and push["attempts"] == 2
    assert push["reason"] == "1 of 3 items failed: item 1 'web2': exit status 1"
    assert [(i["index"], i["item"], i["status"], i["reason"], i["attempts"]) for i in push["items"]] \
        == [(0, "web1", "Completed", "", 1), (1, "web2", "Failed", "exit status 1", 2),
            (2, "web3", "Completed", "", 1)]
    assert (notify["status"], notify["reason"], notify["attempts"], notify["duration"]) == \
        ("Skipped", "playbook halted", 0, 0.0)
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_report_of_a_successful_run_and_record_errors(run, tmp_path):
    path = tmp_path / "r.json"
    r = run("""
        name: ok
        tasks:
          - name: e
            type: emit
            params: {count: 4, bad_every: 2}
          - name: items
            type: log
            loop: {a: 1, b: "a long value that is cut to forty characters by the report"}
            params: {message: "<< .item.key >>"}
    """, report=str(path))
    assert r.ok
    report = json.loads(path.read_text())
    assert report["exit_code"] == 0 and report["halted"] is None
    assert report["playbook"]["file"] == str(tmp_path / "playbook.yml")
    e, items = report["tasks"]
    assert (e["status"], e["record_errors"], e["items"]) == ("Completed", 2, None)
    assert [i["item"] for i in items["items"]] == [
        '{"key":"a","value":1}', '{"key":"b","value":"a long value that...']
    assert len(items["items"][1]["item"]) == 40


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_report_is_written_when_interrupted(tmp_path, signum, code):
    started = tmp_path / "started"
    book = write_playbook(tmp_path, f"""
        name: slow
        tasks:
          - name: wait
            type: exec
            loop: [1, 2, 3]
            params: {{command: sh, args: [-c, 'touch {started}; sleep 60']}}
          - {{name: after, type: exec, depends_on: [wait], params: {{command: "true"}}}}
    """, "p.yml")
    report = tmp_path / "report.json"
    proc = subprocess.Popen(gxo_command(str(book), "-report", str(report)), stderr=subprocess.PIPE,
                            text=True)
    wait_until(started.exists, "the first item never started", 30)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    doc = json.loads(report.read_text())
    name = signal.Signals(signum).name
    assert doc["exit_code"] == code and doc["halted"] == f"interrupted by {name}"
    wait, after = doc["tasks"]
    assert wait["status"] == "Failed" and after["status"] == "Skipped"
    assert [(i["status"], i["attempts"]) for i in wait["items"]] == \
        [("Failed", 1), ("Skipped", 0), ("Skipped", 0)]
    assert wait["items"][0]["reason"].startswith(f"cancelled: interrupted by {name}")
    assert wait["items"][1]["reason"] == "not started"


def test_report_of_a_playbook_that_does_not_load(cli, tmp_path):
    report = tmp_path / "report.json"
    report.write_text('{"exit_code": 0}')         # an older run's report is replaced
    r = cli("-report", str(report), playbook="name: bad\ntasks: [{type: nope}]\n")
    assert r.returncode == 2 and "unknown module type 'nope'" in r.stderr
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == 2 and "unknown module type 'nope'" in doc["error"]
    assert doc["tasks"] == [] and doc["playbook"]["name"] is None
    assert check_against_doc(doc) == {f for f in documented_fields() if f.startswith("tasks[].")}


def test_report_needs_an_existing_directory_and_not_the_playbook(cli, tmp_path):
    r = cli("-report", "missing/report.json", playbook=LOOP)
    assert r.returncode == 2 and "-report missing/report.json: no such directory" in r.stderr
    assert "[build] started" not in r.stderr
    r = cli("-report", "./playbook.yml", playbook=LOOP)
    assert r.returncode == 2 and "-report ./playbook.yml would overwrite the playbook" in r.stderr
    assert (tmp_path / "playbook.yml").read_text() == textwrap.dedent(LOOP)


def test_report_that_cannot_be_written_is_logged(run, tmp_path):
    (tmp_path / "adir").mkdir()
    r = run("name: x\ntasks: [{type: log, params: {message: hi}}]\n", report=str(tmp_path / "adir"))
    assert r.ok
    assert f"ERROR cannot write the report {tmp_path / 'adir'}:" in r.log
    assert not list(tmp_path.glob("*.tmp"))


def test_report_left_unfinished_is_removed(run, tmp_path, monkeypatch):
    def replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(gxo.os, "replace", replace)
    r = run("name: x\ntasks: [{type: log, params: {message: hi}}]\n", report=str(tmp_path / "r.json"))
    assert "cannot write the report" in r.log and "No space left on device" in r.log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["playbook.yml"]


def test_report_through_a_symlink_keeps_the_link(run, tmp_path):
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    r = run("name: x\ntasks: [{type: log, params: {message: hi}}]\n", report=str(tmp_path / "link.json"))
    assert r.ok and (tmp_path / "link.json").is_symlink()
    assert json.loads((tmp_path / "real.json").read_text())["exit_code"] == 0


def test_report_to_stdout(cli, tmp_path):
    r = cli("-report", "-", playbook=LOOP)
    assert r.returncode == 1
    assert check_against_doc(json.loads(r.stdout)) == set()
    assert "recap of 'demo'" in r.stderr and "recap" not in r.stdout
    assert r.stdout.count("\n") == 1 + 1 + 3 + 3       # head, tasks, one line per task and item


def test_report_to_stdout_in_process(capsys):
    assert gxo.run_playbook("name: x\ntasks: [{type: log, params: {message: hi}}]\n",
                            report="-", log_stream=io.StringIO()).ok
    assert json.loads(capsys.readouterr().out)["tasks"][0]["name"] == "#1"


def test_report_to_stdout_closed_early(tmp_path):
    book = tmp_path / "p.yml"
    items = json.dumps(list(range(5000)))          # a report bigger than a pipe holds
    book.write_text(f"name: x\ntasks: [{{type: log, loop: {items}, params: {{message: hi, level: debug}}}}]\n")
    r = subprocess.run(shlex.join(gxo_command(str(book), "-report", "-")) + " | head -c 10",
                       shell=True, capture_output=True, text=True, timeout=60)
    assert r.stdout == '{"schema":'
    assert "ERROR cannot write the report -: Broken pipe" in r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr


def test_report_to_a_fifo_is_written_in_place(run, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    r = run("name: x\ntasks: [{type: log, params: {message: hi}}]\n", report=str(fifo))
    out, _ = reader.communicate(timeout=30)
    assert r.ok and json.loads(out)["exit_code"] == 0 and fifo.exists()


# -- -log-format json

def test_json_log_lines(cli):
    r = cli("-log-format", "json", playbook=LOOP)
    assert r.returncode == 1
    lines = [json.loads(line) for line in r.stderr.splitlines()]
    for line in lines:
        assert list(line)[:7] == ["time", "level", "task", "event", "status", "duration", "message"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    events = [(x["event"], x["task"], x["status"]) for x in lines]
    assert events[:2] == [("run_started", None, None), ("task_started", "build", None)]
    assert ("task_ended", "build", "Completed") in events
    assert ("task_ended", "notify", "Skipped") in events
    ended = next(x for x in lines if x["event"] == "task_ended" and x["task"] == "push")
    assert ended["level"] == "ERROR" and ended["status"] == "Failed"
    assert isinstance(ended["duration"], float)
    assert ended["message"].startswith("Failed in ")
    warn = next(x for x in lines if x["level"] == "WARN")
    assert (warn["task"], warn["event"]) == ("push", "log")
    assert "attempt 1 of 2 failed" in warn["message"]
    recap = lines[-1]
    assert recap["event"] == "recap" and recap["exit_code"] == 1
    assert recap["counts"] == {"Completed": 1, "Failed": 1, "Skipped": 1}
    assert recap["halted"] == "task 'push' failed"
    assert recap["message"].startswith("1 Completed, 1 Failed, 1 Skipped in ")


def test_json_log_of_a_playbook_error(cli):
    r = cli("-log-format=json", playbook="name: bad\ntasks: [{type: nope}]\n")
    assert r.returncode == 2
    line = json.loads(r.stderr)
    assert line["event"] == "playbook_error" and line["level"] == "ERROR"
    assert "unknown module type 'nope'" in line["message"]


def test_unknown_log_format_is_a_usage_error(cli):
    r = cli("-log-format", "yaml", playbook=LOOP)
    assert r.returncode == 2 and "unknown log format 'yaml'; use text or json" in r.stderr


def test_json_log_through_the_api():
    out = io.StringIO()
    result = gxo.run_playbook("name: x\ntasks: [{name: hi, type: log, params: {message: 'é \"q\"'}}]\n",
                              log_stream=out, log_format="json")
    assert result.ok
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {"task": "hi", "event": "log", "message": 'é "q"'}.items() <= lines[2].items()


# -- colour

def test_color_is_decided_by_no_color_force_color_and_the_tty(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    for var in ("NO_COLOR", "FORCE_COLOR", "TERM"):
        monkeypatch.delenv(var, raising=False)
    assert gxo._color_wanted(Tty()) and not gxo._color_wanted(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "")                  # empty: as if unset
    assert gxo._color_wanted(Tty())
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert gxo._color_wanted(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")                 # NO_COLOR wins
    assert not gxo._color_wanted(Tty())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.delenv("FORCE_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert not gxo._color_wanted(Tty())
    closed = io.StringIO()
    closed.close()
    assert not gxo._isatty(closed) and not gxo._isatty(object())


def test_colored_lines_and_recap():
    out = io.StringIO()
    log = gxo.Logger("DEBUG", out, color=True)
    engine = gxo.Engine(gxo.load_playbook(LOOP), logger=log)
    assert engine.run().exit_code == 1
    text = out.getvalue()
    assert "\x1b[33mWARN\x1b[0m  [push] item 1 'web2': attempt 1 of 2 failed" in text
    assert "\x1b[1;31mERROR\x1b[0m [push] \x1b[31mFailed\x1b[0m in " in text
    assert "INFO  [build] \x1b[32mCompleted\x1b[0m in " in text
    assert "  notify  \x1b[36mSkipped\x1b[0m          -  playbook halted" in text
    log.debug("detail")
    assert out.getvalue().endswith(" \x1b[2mDEBUG\x1b[0m detail\n")
    assert gxo.Logger(format="json", color=True).paint("Failed") == "Failed"


# -- progress

def test_progress_lines_when_not_a_tty(run, monkeypatch):
    monkeypatch.setattr(gxo._Reporter, "EVERY_PLAIN", 0.0)    # every item, not every 5 s
    r = run("""
        name: p
        tasks:
          - name: many
            type: fake
            loop: [1, 2, 3, 4]
            params: {fail: '<< if eq .item 2 >>no<< end >>'}
            ignore_errors: true
    """, log_level="INFO")
    progress = re.findall(r"INFO  (\[many\] \d/4 items.*)", r.log)
    assert progress == ["[many] 1/4 items", "[many] 2/4 items, 1 failed", "[many] 3/4 items, 1 failed"]
    assert "\r" not in r.log


def test_progress_line_on_a_tty_is_replaced_and_cut_to_its_width():
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 20, 0, 0))
    stream = open(slave, "w")
    try:
        log = gxo.Logger("INFO", stream)
        assert log.tty and not log.color
        log.progress("progress: [push] 10/200 items")
        log.info("next")
        gxo.Logger("WARN", stream).progress("not at WARN")
        assert not gxo.Logger(stream=stream, format="json").tty
        stream.flush()
        out = os.read(master, 1000).decode()
    finally:
        stream.close()
        os.close(master)
    assert out.startswith("\r\x1b[Kprogress: [push]...\r\x1b[K")
    assert out.endswith(" INFO  next\r\n")


def test_progress_of_parallel_loops_on_a_tty_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(gxo._Reporter, "EVERY_TTY", 0.0)      # every item, not every second
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))
    stream = open(slave, "w")
    try:        # b's items end while a's first one runs: a waits for b's last, b for a's first
        result = gxo.run_playbook(textwrap.dedent("""
            name: p
            tasks:
              - name: a
                type: exec
                loop: [1, 2]
                params:
                  command: sh
                  args: [-c, 'touch a; until [ -e b ]; do sleep 0.01; done']
                  working_dir: << .dir >>
              - name: b
                type: exec
                loop: [1, 2, 3]
                params:
                  command: sh
                  args: [-c, 'until [ -e a ]; do sleep 0.01; done; [ $0 = 3 ] && touch b; exit 1',
                         "<< .item >>"]
                  working_dir: << .dir >>
                ignore_errors: true
        """), vars={"dir": str(tmp_path)}, log_stream=stream)
        stream.flush()
        out = os.read(master, 100000).decode()
    finally:
        stream.close()
        os.close(master)
    assert result.ok
    shown = re.findall(r"\r\x1b\[Kprogress: ([^\r]*)", out)
    assert shown[:2] == ["[a] 0/2 items; [b] 1/3 items, 1 failed",
                         "[a] 0/2 items; [b] 2/3 items, 2 failed"], shown


PTY_BOOK = """
name: tty
tasks:
  - name: push
    type: exec
    loop: [1, 2, 3, 4, 5, 6]
    params: {command: sh, args: [-c, 'sleep 0.25; test "$0" != 2', "<< .item >>"]}
    ignore_errors: true
"""

FAST_BOOK = """
name: tty
tasks:
  - name: push
    type: exec
    loop: [1, 2]
    params: {command: sh, args: [-c, 'test "$0" != 2', "<< .item >>"]}
    ignore_errors: true
"""


def in_pty(tmp_path, book, *args, env=None):
    """Run the gxo command with stderr on a pseudo-terminal; return (exit code, what it showed)."""
    path = write_playbook(tmp_path, book, "tty.yml")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(gxo_command(str(path), *args), stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env={**ENV, "TERM": "xterm", **(env or {})}, cwd=tmp_path)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:             # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode()


def test_tty_shows_colour_and_an_updating_progress_line(tmp_path):
    code, out = in_pty(tmp_path, PTY_BOOK)
    assert code == 0, out
    # the loop runs at least 1.5 s: an item ending after its first second shows progress
    assert re.search(r"\r\x1b\[Kprogress: \[push\] [1-5]/6 items(, 1 failed)?\r\x1b\[K", out), out
    assert "\x1b[33mWARN\x1b[0m  [push] item 1 '2' failed" in out
    assert "\x1b[31mFailed\x1b[0m in " in out


@pytest.mark.parametrize("env, args, colored", [
    ({}, (), True),
    ({"NO_COLOR": "1"}, (), False),
    ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, (), False),
    ({}, ("-log-format", "json"), False),
])
def test_tty_color_switches(tmp_path, env, args, colored):
    code, out = in_pty(tmp_path, FAST_BOOK, *args, env=env)
    assert code == 0, out
    assert ("\x1b[" in out) == colored, out
    if args:
        assert all(json.loads(line) for line in out.splitlines())


@pytest.mark.parametrize("env, colored", [({}, False), ({"FORCE_COLOR": "1"}, True),
                                          ({"FORCE_COLOR": "1", "NO_COLOR": "x"}, False)])
def test_pipe_color_switches(cli, env, colored):
    r = cli(playbook=FAST_BOOK, env=env)
    assert r.returncode == 0, r.stderr
    assert ("\x1b[31mFailed\x1b[0m" in r.stderr) == colored
    assert "\r" not in r.stderr


def test_log_module_levels_come_from_gxo(run):
    r = run("""
        name: levels
        tasks:
          - {type: log, params: {message: quiet, level: debug}}
          - {type: log, params: {message: loud, level: error}}
    """, log_level="INFO")
    assert "quiet" not in r.log and "ERROR [#2] loud" in r.log
    assert tuple(gxo.LEVELS) == ("DEBUG", "INFO", "WARN", "ERROR")
    assert gxo.Logger("warning").level == gxo.WARN
