"""End-to-end tests of the gxo command: flags, exit codes, logs, signals."""

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import (GREET, LAUGHS, ROOT, alive, busy_script, gxo_command, wait_for_lines,
                     write_files, write_playbook)

OK = """
name: ok
vars: {who: world}
tasks:
  - name: hello
    type: exec
    params: {command: echo, args: ["hello << .who >>"]}
    register: out
  - name: show
    type: exec
    params: {command: echo, args: ["got << .out.stdout >>"]}
"""


def test_help_and_version(cli):
    r = cli("-h")
    assert r.returncode == 0 and "usage: gxo -playbook FILE" in r.stdout
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("gxo 0.")


@pytest.mark.parametrize("args, message", [
    ((), "missing -playbook FILE"),
    (("-playbok", "x.yml"), "unknown flag '-playbok' (did you mean '-playbook'?)"),
    (("-playbook",), "flag -playbook needs a value"),
    (("-playbook", "x.yml", "-var", "novalue"), "-var needs key=value"),
    (("-playbook", "x.yml", "-concurrency", "zero"), "-concurrency needs a positive integer"),
    (("-playbook", "x.yml", "-log-level", "LOUD"), "unknown log level 'LOUD'"),
    (("-playbook", "x.yml", "-dry-run=maybe"), "-dry-run takes no value"),
    (("-playbook", "x.yml", "-var-file"), "flag -var-file needs a value"),
])
def test_usage_errors_exit_2(cli, args, message):
    r = cli(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_run_logs_each_task_and_a_recap(cli):
    r = cli(playbook=OK)
    assert r.returncode == 0, r.stderr
    assert "[hello] started" in r.stderr and "[show] Completed in" in r.stderr
    assert "recap of 'ok':" in r.stderr
    assert "2 Completed, 0 Failed, 0 Skipped in" in r.stderr


@pytest.mark.parametrize("form", [["-var", "who=gxo"], ["-var=who=gxo"], ["--var", "who=gxo"],
                                  ["--var=who=gxo"]])
def test_var_flag_forms(cli, form, tmp_path):
    out = tmp_path / "out.txt"
    r = cli(*form, playbook=f"""
        name: vars
        vars: {{who: world}}
        tasks:
          - {{name: w, type: exec, params: {{command: sh, args: [-c, 'echo "$0" > {out}', "<< .who >>"]}}}}
    """)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "gxo\n"


def test_var_flow_collections(cli, tmp_path):
    out = tmp_path / "out.txt"
    r = cli("-var", "hosts=[web1, web2]", "-var", "db={host: x, port: 5432}", playbook=f"""
        name: vars
        tasks:
          - name: w
            type: exec
            params: {{command: sh, args: [-c, 'echo "$0" > {out}', "<< len .hosts >> << .db.port >>"]}}
    """)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "2 5432\n"


def test_dry_run_runs_nothing(cli, tmp_path):
    marker = tmp_path / "marker"
    r = cli("-dry-run", playbook=f"""
        name: dry
        tasks:
          - {{name: touch, type: exec, params: {{command: touch, args: ["{marker}"]}}}}
    """)
    assert r.returncode == 0
    assert f"[Dry Run] Would execute command: touch {marker}" in r.stderr
    assert not marker.exists()


def test_failure_exits_1_and_names_task_and_cause(cli):
    r = cli(playbook="""
        name: fail
        tasks:
          - {name: broken, type: exec, params: {command: sh, args: [-c, "echo no space left >&2; exit 4"]}}
          - {name: after, type: exec, depends_on: [broken], params: {command: "true"}}
    """)
    assert r.returncode == 1
    assert "[broken] Failed in" in r.stderr and "exit status 4: no space left" in r.stderr
    assert "[after] Skipped: playbook halted" in r.stderr
    assert "Traceback" not in r.stderr


def test_ignored_failure_exits_0(cli):
    r = cli(playbook="""
        name: ignored
        tasks:
          - {name: broken, type: exec, ignore_errors: true, params: {command: "false"}}
          - {name: other, type: exec, params: {command: "true"}}
    """)
    assert r.returncode == 0
    assert "1 Completed, 1 Failed, 0 Skipped" in r.stderr


def test_invalid_playbook_exits_2_with_position(cli):
    r = cli(playbook="""
        name: bad
        vars: {hosts: [a]}
        tasks:
          - name: a
            type: exec
            params: {command: echo, args: ["<< .hsots >>"]}
    """)
    assert r.returncode == 2
    assert "playbook.yml:7:36: task 'a' (#1): params.args[0]: undefined variable 'hsots' " \
        "(did you mean 'hosts'?)" in r.stderr
    assert "Traceback" not in r.stderr


def test_log_level_error_hides_info(cli):
    r = cli("-log-level", "ERROR", playbook=OK)
    assert r.returncode == 0 and "INFO" not in r.stderr


def test_python_dash_m_and_positional_playbook(tmp_path):
    path = tmp_path / "p.yml"
    path.write_text(OK)
    r = subprocess.run([sys.executable, "-m", "gxo", str(path)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "2 Completed" in r.stderr


def test_modules_dir_and_env_path(cli, tmp_path):
    mods = write_files(tmp_path / "mods", {"greet.py": GREET})
    pb = """
        name: mods
        tasks:
          - {name: g, type: greet, params: {name: operator}}
    """
    r = cli("-modules-dir", str(mods), playbook=pb)
    assert r.returncode == 0, r.stderr
    assert "[g] hello operator" in r.stderr
    r = cli(playbook=pb, env={"GXO_MODULES_PATH": str(mods)})
    assert r.returncode == 0, r.stderr
    r = cli(playbook=pb)
    assert r.returncode == 2 and "unknown module type 'greet'" in r.stderr


def test_broken_user_module_is_a_clear_error(cli, tmp_path):
    mods = write_files(tmp_path / "mods", {"oops.py": "import gxo\ndef broken(:\n"})
    r = cli("-modules-dir", str(mods), playbook="""
        name: mods
        tasks: [{name: o, type: oops}]
    """)
    assert r.returncode == 2
    assert f"cannot load module file {mods / 'oops.py'}: SyntaxError" in r.stderr


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_run_and_leaves_no_process(tmp_path, signum, code):
    pids = tmp_path / "pids"
    path = write_playbook(tmp_path, f"""
        name: long
        tasks:
          - name: busy
            type: exec
            params:
              command: sh
              args: ["-c", "{busy_script(pids)}"]
          - name: stubborn
            type: exec
            params:
              command: sh
              args: ["-c", "trap '' TERM INT; echo $$ >> {pids}; while :; do sleep 1; done"]
          - {{name: later, type: exec, depends_on: [busy], params: {{command: "true"}}}}
    """, "p.yml")
    proc = subprocess.Popen(gxo_command("-playbook", str(path)), stderr=subprocess.PIPE, text=True)
    found = wait_for_lines(pids, 3)
    begin = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert time.monotonic() - begin < 10
    assert "Traceback" not in err
    assert "[later] Skipped: playbook halted" in err
    for pid in found:
        assert not alive(pid), f"process {pid} survived"


# -- hostile input: one line on stderr and exit 2, whatever the file holds

TRUE = "tasks: [{type: exec, params: {command: 'true'}}]\n"
LONG = "x" * 10_000
HOSTILE = {
    "nested 360 deep": (f"name: x\nvars: {{a: {'[' * 360}{']' * 360}}}\n{TRUE}",
                        ":2:109: nested more than 100 levels deep"),
    # Newer libyaml (PyYAML 6.0.4's wheels) stops first, at 1000 levels, as it scans ahead.
    "nested 100,000 deep": (f"name: x\nvars: {{a: {'[' * 100_000}{']' * 100_000}}}\n{TRUE}",
                            " nested more than 100 levels deep"),
    "alias bomb in vars": ("name: x\nvars:\n" + "".join(f"  v{i}: {a}\n" for i, a in enumerate(LAUGHS))
                           + TRUE, ":9:12: aliases repeat more than 1,000,000 values"),
    "alias bomb in loop": (f"name: x\ntasks: [{{type: exec, loop: [{', '.join(LAUGHS)}], "
                           "params: {command: 'true'}}]\n", "aliases repeat more than 1,000,000"),
    "integer key in params": ("name: x\ntasks: [{type: log, params: {message: hi, 1: x}}]\n",
                              ":2:46: task #1: params.1: unknown param"),
    "huge timeout": ("name: x\ntasks: [{type: exec, timeout: 9223372036854775808ns, "
                     "params: {command: 'true'}}]\n", "timeout: duration '9223372036854775808ns' "
                     "is too long: at most 8760h (a year)"),
    "huge retry delay": ("name: x\ntasks: [{type: exec, retry: {attempts: 2, delay: 1000000h}, "
                         "params: {command: 'false'}}]\n", "retry.delay: duration '1000000h' is too long"),
    "long unknown key": (f"name: x\ntasks:\n  - type: exec\n    ? {LONG}\n    : 1\n",
                         ":4:7: task #1: unknown key 'xxxxxxxxxxxxxxxxxxxxxxxxxx…xxxxxxxxxxxxx' "
                         "(10,000 chars); expected one of: name, type"),
    "long bad value": (f"name: x\ntasks: [{{type: exec, ignore_errors: {LONG}}}]\n",
                       "ignore_errors: expected true or false, got the string 'xxxxxxxxxxxxxxxxxxxxxxxxxx"
                       "…xxxxxxxxxxxxx' (10,000 chars)"),
    "long task name": (f"name: x\ntasks: [{{name: {LONG}, type: exec}}]\n",
                       "name: a name is one line of at most 128 characters"),
    "NUL byte": (b"name: x\x00\n" + TRUE.encode(), ":1:8: invalid YAML: character 0x0000 is not "
                 "allowed"),
    "not UTF-8": (b"name: caf\xe9\n" + TRUE.encode(), ": the playbook is not UTF-8 text"),
    "empty file": (b"", ": the playbook is empty"),
    "a directory": (None, ": cannot read the playbook: Is a directory"),
}


@pytest.mark.parametrize("content, message", HOSTILE.values(), ids=HOSTILE)
def test_hostile_playbook_is_a_one_line_error(cli, tmp_path, content, message):
    path = tmp_path / "hostile.yml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    r = cli("-playbook", str(path), timeout=30)
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.startswith(f"gxo: {path}") and r.stderr.count("\n") == 1, r.stderr[-3000:]
    assert message in r.stderr and len(r.stderr) < 400


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmSize from /proc")
def test_out_of_memory_while_loading_is_a_one_line_error(tmp_path):
    book = tmp_path / "big.yml"
    book.write_text(f"name: x\nvars:\n  a: {'a' * (24 << 20)}\n{TRUE}")
    # The CLI's main, with the address space capped at what it has plus 48 MiB
    # (lifted again for the exit, where a coverage tracer may write its data).
    code = ("import re, resource, sys, gxo\n"
            "kib = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read())[1])\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
            "resource.setrlimit(resource.RLIMIT_AS, ((kib << 10) + (48 << 20), hard))\n"
            "code = gxo.main(sys.argv[1:])\n"
            "resource.setrlimit(resource.RLIMIT_AS, (soft, hard))\n"
            "sys.exit(code)\n")
    r = subprocess.run([sys.executable, "-c", code, "-dry-run", "-playbook", str(book)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr == f"gxo: {book}: out of memory while loading the playbook\n"


# -- the same entry point in-process (gxo.main), for what subprocesses do not show

def test_main_in_process(tmp_path, capsys):
    import gxo
    path = tmp_path / "p.yml"
    path.write_text(OK)
    assert gxo.main(["-playbook", str(path), "-log-level=WARN", "-concurrency", "2",
                     "-channel-buffer-size=5"]) == 0
    assert gxo.main(["--help"]) == 0
    assert "usage: gxo" in capsys.readouterr().out
    assert gxo.main(["-version"]) == 0
    assert gxo.main([str(path), "--", "extra"]) == 2
    assert "unexpected argument 'extra'" in capsys.readouterr().err
    path.write_text("name: x\ntasks: [{type: nope}]\n")
    assert gxo.main(["-playbook", str(path)]) == 2
    assert "unknown module type 'nope'" in capsys.readouterr().err
    path.write_text("name: x\ntasks: [{type: exec, params: {command: 'false'}}]\n")
    assert gxo.main(["-playbook", str(path), "-dry-run=false"]) == 1


# -- -var and -var-file, typed by the playbook's vars

TYPED = """
    name: typed
    vars:
      replicas: 1
      ratio: 0.5
      debug: false
      hosts: [web1]
      db: {port: 5432}
      msg: hello
      label: "<< .msg >>!"
      nothing: null
    tasks:
      - name: show
        type: log
        params:
          message: >-
            << .replicas >> << gt .replicas 2 >> << .ratio >> << if .debug >>debug<< end >>
            << len .hosts >> << .db.port >> << .msg >> << .label >> << .nothing >> << .extra >>
      - {name: scale, type: log, when: "<< gt .replicas 1 >>", params: {message: scaled}}
"""


def test_var_is_typed_like_the_declared_var(cli):
    r = cli("-var", "replicas=3", "-var", "ratio=2", "-var", "debug=true", "-var", "hosts=[a, b]",
            "-var", "db={port: 1}", "-var", "msg=[WIP] deploy", "-var", "label={x}",
            "-var", "nothing=[1]", "-var", "extra={a: 1}", playbook=TYPED)
    assert r.returncode == 0, r.stderr
    assert '[show] 3 true 2 debug 2 1 [WIP] deploy {x} [1] {"a":1}\n' in r.stderr
    assert "[scale] scaled" in r.stderr             # gt .replicas 1 compares numbers


@pytest.mark.parametrize("var, message", [
    ("replicas=three", "playbook.yml:4:13: vars.replicas: -var replicas: expected an integer "
                       "(the type of the declared value), got the string 'three'"),
    ("ratio=1/2", "vars.ratio: -var ratio: expected a number"),
    ("debug=yes", "vars.debug: -var debug: expected true or false"),
    ("hosts=web1", "vars.hosts: -var hosts: expected a YAML list, like [a, b]"),
    ("db=[1", "vars.db: -var db: expected a YAML mapping, like {k: v}"),
    ("hsots=[a]", "playbook.yml: -var hsots: the playbook has no variable 'hsots' (in vars or "
                  "read by a template) (did you mean 'hosts'?)"),
])
def test_var_errors_exit_2(cli, var, message):
    r = cli("-var", var, "-var", "extra=1", playbook=TYPED)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_undeclared_var_is_text_unless_a_yaml_collection(cli):
    for value, shown in [("[a, b]", '["a","b"]'), ("[WIP", "[WIP"), ("[1] x", "[1] x"), ("3", "3")]:
        r = cli("-var", f"extra={value}", playbook="""
            name: t
            tasks: [{name: s, type: log, params: {message: "<< printf \\"%v\\" .extra >>"}}]
        """)
        assert r.returncode == 0, r.stderr
        assert f"[s] {shown}\n" in r.stderr


def test_var_files_in_order_then_every_var(cli, tmp_path):
    one, two = tmp_path / "one.yml", tmp_path / "two.yml"
    one.write_text("replicas: 5\nhosts: [a, b, c]\nextra: from one\n")
    two.write_text("# staging\nreplicas: 6\nmsg: '[from two]'\n")
    (tmp_path / "empty.yml").write_text("# nothing here\n")
    r = cli("-var", "replicas=7", "-var-file", str(one), "-var-file", "two.yml",
            "-var-file=empty.yml", playbook=TYPED)
    assert r.returncode == 0, r.stderr
    assert "[show] 7 true 0.5  3 5432 [from two] [from two]!  from one\n" in r.stderr
    r = cli("-var-file", str(two), "-var-file", str(one), playbook=TYPED)
    assert "[show] 5 true" in r.stderr


@pytest.mark.parametrize("text, message", [
    ("replicas: 2\nhsots: [a]\n", "vars.yml:2:1: -var-file: the playbook has no variable 'hsots' "
                                  "(in vars or read by a template) (did you mean 'hosts'?)"),
    ("[a, b]\n", "vars.yml:1:1: -var-file: expected a mapping of variable names to values, "
                 "got a list"),
    ("a.b: 1\n", "vars.yml:1:1: -var-file: 'a.b' is not a usable variable name"),
    ("x: [1\n", "vars.yml:2:1: invalid YAML"),
])
def test_var_file_errors_exit_2(cli, tmp_path, text, message):
    (tmp_path / "vars.yml").write_text(text)
    r = cli("-var-file", "vars.yml", "-var", "extra=1", playbook=TYPED)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_var_file_missing(cli):
    r = cli("-var-file", "nope.yml", "-var", "extra=1", playbook=TYPED)
    assert r.returncode == 2
    assert "gxo: nope.yml: -var-file: cannot read it: No such file or directory" in r.stderr


def test_out_of_memory_while_running_is_one_line(monkeypatch, capsys, tmp_path):
    import gxo

    def exhausted(self):
        raise MemoryError
    monkeypatch.setattr(gxo.Engine, "run", exhausted)
    book = tmp_path / "p.yml"
    book.write_text(OK)
    assert gxo.main(["-playbook", str(book)]) == 1
    assert capsys.readouterr().err == "gxo: out of memory\n"
