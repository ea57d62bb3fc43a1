"""Loading and validation: YAML 1.2 typing, positions, every static check."""

import re

import pytest

import gxo
from helpers import LAUGHS, write_files


def error(load, text, **kwargs):
    with pytest.raises(gxo.PlaybookError) as info:
        load(text, **kwargs)
    return str(info.value).split("playbook.yml", 1)[-1]


# -- YAML

def test_yaml_12_core_schema(load):
    pb = load("""
        name: types
        vars:
          yes_is_text: yes
          on_is_text: on
          octal_like: 0777
          real_octal: 0o17
          hex: 0x1F
          float: 1.5e3
          boolean: true
          nothing: ~
          empty:
          quoted: "true"
          time_like: 1:30
          inf: .inf
        tasks: [{type: fake}]
    """)
    v = pb.vars
    assert v["yes_is_text"] == "yes" and v["on_is_text"] == "on"
    assert v["octal_like"] == 777 and v["real_octal"] == 15 and v["hex"] == 31
    assert v["float"] == 1500.0 and v["boolean"] is True
    assert v["nothing"] is None and v["empty"] is None
    assert v["quoted"] == "true" and v["time_like"] == "1:30" and v["inf"] == float("inf")


def test_yaml_anchors_and_merge_keys(load):
    pb = load("""
        name: merge
        vars:
          base: &base {region: eu, size: small}
          web: {<<: *base, size: large}
        tasks: [{type: fake}]
    """)
    assert pb.vars["web"] == {"region": "eu", "size": "large"}


@pytest.mark.parametrize("text, message", [
    ("name: x\ntasks:\n  - type: fake\n   params: {}\n", ":4:4: invalid YAML"),
    ("name: x\nname: y\ntasks: [{type: fake}]\n", ":2:1: duplicate key 'name'"),
    ("", ": the playbook is empty"),
    ("- a\n", ":1:1: a playbook is a mapping with 'name' and 'tasks'"),
    ("name: x\ntasks: [{type: fake, params: !!binary aGk=}]\n", "unsupported YAML tag"),
])
def test_yaml_errors(load, text, message):
    assert message in error(load, text)


# -- structure

@pytest.mark.parametrize("text, message", [
    ("name: x\n", "missing required key 'tasks'"),
    ("tasks: [{type: fake}]\n", "missing required key 'name'"),
    ("name: x\ntasks: []\n", "tasks: a playbook needs at least one task"),
    ("name: x\ntask: []\n", "unknown key 'task' (did you mean 'tasks'?)"),
    ("name: x\ntasks: [{type: fake, parms: {}}]\n",
     "task #1: unknown key 'parms' (did you mean 'params'?)"),
    ("name: x\ntasks: [{name: a, params: {}}]\n", "task 'a' (#1): missing required key 'type'"),
    ("name: x\ntasks: [{type: fak}]\n", "type: unknown module type 'fak' (did you mean 'fake'?)"),
    ("name: x\ntasks: [{type: fake, ignore_errors: yes}]\n",
     "ignore_errors: expected true or false, got the string 'yes'"),
    ("name: x\ntasks: [{type: fake, timeout: 30}]\n",
     "timeout: expected a duration like '30s', got int 30 (did you mean '30s'?)"),
    ("name: x\ntasks: [{type: fake, timeout: 5 minutes}]\n", "timeout: invalid duration '5 minutes'"),
    ("name: x\ntasks: [{type: fake, retry: {attempts: 0}}]\n", "retry.attempts: must be at least 1"),
    ("name: x\ntasks: [{type: fake, retry: {delay: 1x}}]\n", "retry.delay: invalid duration"),
    ("name: x\ntasks: [{type: fake, retry: {tries: 2}}]\n", "retry.tries: unknown key 'tries'"),
    ("name: x\ntasks: [{type: fake, loop: [1], loop_control: {parallel: 0}}]\n",
     "loop_control.parallel: must be at least 1"),
    ("name: x\ntasks: [{type: fake, loop: [1], loop_control: {loop_var: 2x}}]\n",
     "loop_control.loop_var: '2x' is not a usable variable name"),
    ("name: x\ntasks: [{type: fake, loop: 5}]\n", "loop: expected a list, a mapping or a template"),
    ("name: x\ntasks: [{name: a, type: fake}, {name: a, type: fake}]\n",
     "task 'a' (#2): name: duplicate task name 'a' (also task 'a' (#1))"),
    ("name: x\ntasks: [{name: a, type: fake, register: r}, {name: b, type: fake, register: r}]\n",
     "register key 'r' is already used by task 'a' (#1)"),
    ("name: x\ntasks: [{type: fake, register: my-out}]\n", "'my-out' is not a usable variable name"),
    ("name: x\ntasks: [{type: fake, register: _gxo}]\n", "'_gxo' is reserved"),
    ("name: x\nvars: {r: 1}\ntasks: [{name: a, type: fake, register: r}]\n",
     "register key 'r' is also a playbook variable"),
    ("name: x\ntasks: [{type: fake, register: r}]\n",
     "2:32: task #1: register: a task with 'register' needs a 'name'"),
    ("name: x\ntasks: [{name: a, type: fake, depends_on: [b]}]\n", "depends_on: no task named 'b'"),
    ("name: x\ntasks: [{name: a, type: fake, stream_input: a}]\n", "a task cannot stream from itself"),
    ("name: x\ntasks: [{name: a, type: fake}, {type: fake, stream_input: aa}]\n",
     "no task named 'aa' (did you mean 'a'?)"),
    ("name: x\ntemplating: {engine: jinja2}\ntasks: [{type: fake}]\n",
     "templating.engine: only the 'go' template engine is supported"),
    ("name: x\ntemplating: {delimiters: ['{{']}\ntasks: [{type: fake}]\n",
     "templating.delimiters: expected two strings"),
])
def test_structure_errors(load, text, message):
    assert message in error(load, text)


def test_error_names_file_line_and_column(load):
    text = """
        name: x
        tasks:
          - name: first
            type: fake
          - name: second
            type: fake
            retry: {attempts: many}
    """
    assert error(load, text).startswith(":8:23: task 'second' (#2): retry.attempts: "
                                        "expected a positive integer, got the string 'many'")


# -- params are checked before anything runs

@pytest.mark.parametrize("params, message", [
    ("{comand: ls}", "params.command: is required (is 'comand' a typo of it?)"),
    ("{command: ls, args: -l}", "params.args: expected a list of strings, got the string '-l'"),
    ("{command: ls, args: [a, [b]]}", "params.args[1]: expected a string, got a list"),
    ("{command: ls, envirnoment: {}}", "params.envirnoment: unknown param (did you mean 'environment'?)"),
    ("{command: ls, environment: {A: {b: 1}}}", "params.environment.A: expected a string"),
    ("[ls]", "params: expected a mapping of module params"),
])
def test_exec_params_checked_statically(load, params, message):
    assert message in error(load, f"name: x\ntasks: [{{type: exec, params: {params}}}]\n")


def test_templated_params_pass_static_checks(load):
    load("""
        name: x
        vars: {flags: [-l], dir: /tmp}
        tasks: [{type: exec, params: {command: ls, args: "<< .flags >>", working_dir: "<< .dir >>"}}]
    """)


# -- templates and variables

def test_template_syntax_error_located(load):
    message = error(load, """
        name: x
        tasks:
          - name: a
            type: fake
            params:
              result: ["ok", "<< .x "]
    """)
    assert message.startswith(":7:22: task 'a' (#1): params.result[1]: template error at 1:")


@pytest.mark.parametrize("field, message", [
    ('when: "<< .nope >>"', "when: undefined variable 'nope'"),
    ('loop: "<< .hots >>"', "loop: undefined variable 'hots' (did you mean 'hosts'?)"),
    ('params: {result: "<< .item >>"}', "'item' exists only in a task with 'loop'"),
    ('when: "<< .item >>"\n    loop: [1]', "when: undefined variable 'item' ('item' is the loop variable"),
    ('params: {result: "<< ._gxo.tasks.aa.status >>"}', "_gxo.tasks: no task named 'aa' (did you mean 'a'?)"),
    ('params: {result: "<< ._gxo.tasks.a.state >>"}', "_gxo.tasks.a has only 'status', not 'state'"),
    ('params: {result: "<< ._gxo.vars >>"}', "'_gxo.vars' does not exist; there are"),
])
def test_undefined_variables(load, field, message):
    text = f"name: x\nvars: {{hosts: [a]}}\ntasks:\n  - name: a\n    type: fake\n  - name: t\n    type: fake\n    {field}\n"
    assert message in error(load, text)


def test_loop_var_defined_in_params_and_index_var(load):
    load("""
        name: x
        tasks:
          - type: fake
            loop: [1, 2]
            loop_control: {loop_var: host, index_var: n}
            params: {result: "<< .n >> << .host >>"}
    """)


def test_vars_render_in_order_with_cli_vars(load):
    pb = load("""
        name: x
        vars:
          region: eu
          bucket: "logs-<< .region >>-<< .env >>"
        tasks: [{type: fake}]
    """, vars={"env": "prod"})
    assert pb.vars["bucket"] == "logs-eu-prod"


@pytest.mark.parametrize("vars, message", [
    ("{a: '<< .b >>', b: 1}", "vars.a: uses undefined variable 'b' (it is defined later"),
    ("{a: '<< .out >>'}", "vars.a: uses undefined variable 'out' (registered by a task"),
    ("{my-var: 1}", "vars.my-var: 'my-var' is not a usable variable name"),
])
def test_var_errors(load, vars, message):
    assert message in error(load, f"name: x\nvars: {vars}\ntasks: [{{name: a, type: fake, register: out}}]\n")


def test_bad_cli_var_name(load):
    with pytest.raises(gxo.PlaybookError, match="-var 'a.b': not a usable variable name"):
        load("name: x\ntasks: [{type: fake}]\n", vars={"a.b": "1"})


def test_cycle_reported_with_path(load):
    message = error(load, """
        name: x
        tasks:
          - {name: a, type: fake, register: ra, params: {result: "<< .rc >>"}}
          - {name: b, type: fake, register: rb, params: {result: "<< .ra >>"}}
          - {name: c, type: fake, register: rc, depends_on: [b]}
    """)
    assert "cycle: a -> c -> b -> a" in message


def test_edges_from_registers_status_and_depends_on(load):
    pb = load("""
        name: x
        tasks:
          - {name: a, type: fake, register: ra}
          - {name: b, type: fake, params: {result: "<< .ra >>"}}
          - {name: c, type: fake, when: "<< eq ._gxo.tasks.b.status \\"Completed\\" >>"}
          - {name: d, type: fake, depends_on: [a, c]}
          - {name: e, type: fake, stream_input: d}
    """)
    assert [sorted(t.needs) for t in pb.tasks] == [[], [0], [1], [0, 2], []]
    assert sorted(map(sorted, pb.pipelines)) == [[0], [1], [2], [3, 4]]


def test_go_delimiters(load):
    pb = load("""
        name: x
        templating: {delimiters: ["{{", "}}"]}
        vars: {a: 1, b: "{{ .a }}-<< .a >>"}
        tasks: [{type: fake}]
    """)
    assert pb.vars["b"] == "1-<< .a >>"


def test_load_from_text_and_missing_file(tmp_path):
    pb = gxo.load_playbook("name: t\ntasks: [{type: fake}]\n")
    assert pb.name == "t" and pb.file == "<playbook>"
    with pytest.raises(gxo.PlaybookError, match="no-such.yml: cannot read the playbook"):
        gxo.load_playbook(tmp_path / "no-such.yml")


def test_playbook_dir_in_vars_and_tasks(load, run, tmp_path):
    text = """
        name: x
        vars: {data: "<< ._gxo.playbook_dir >>/data"}
        tasks: [{name: a, type: fake, params: {result: "<< ._gxo.playbook_dir >>"}, register: out}]
    """
    assert load(text).vars["data"] == f"{tmp_path}/data"
    assert run(text).state["out"] == str(tmp_path)


def test_vars_cannot_read_task_statuses(load):
    with pytest.raises(gxo.PlaybookError, match="vars can read only _gxo.playbook_dir"):
        load("""
            name: x
            vars: {s: "<< ._gxo.tasks.a.status >>"}
            tasks: [{name: a, type: fake}]
        """)


def test_error_classes_read_well():
    assert str(gxo.PlaybookError("bad", file="p.yml", line=3, col=5, task="task 'a' (#1)",
                                 field="params.x")) == "p.yml:3:5: task 'a' (#1): params.x: bad"
    assert str(gxo.PlaybookError("bad")) == "bad"
    assert str(gxo.ParamError("args", "expected a list")) == "param 'args': expected a list"
    e = gxo.RecordProcessingError("filter", {"n": 1}, "no field 'x'")
    assert (e.task, e.item, e.cause) == ("filter", {"n": 1}, "no field 'x'")
    assert str(e) == "task=filter item={'n': 1} cause=no field 'x'"
    for cls in (gxo.PlaybookError, gxo.ParamError, gxo.TaskError, gxo.Cancelled,
                gxo.RecordProcessingError, gxo.TemplateSyntaxError, gxo.TemplateRenderError):
        assert issubclass(cls, gxo.GxoError)


# -- overrides: vars= (-var) and var_files= (-var-file)

def test_string_vars_from_python_are_typed_like_the_declared_vars(load, tmp_path):
    text = """
        name: x
        vars: {replicas: 1, hosts: [a], msg: hi, when_: "<< .msg >>"}
        tasks: [{type: fake, params: {result: "<< .replicas >><< .hosts >><< .msg >><< .when_ >>"}}]
    """
    pb = load(text, vars={"replicas": "3", "hosts": "[b, c]", "msg": "[WIP] x", "when_": "7"})
    assert pb.vars == {"replicas": 3, "hosts": ["b", "c"], "msg": "[WIP] x", "when_": "7"}
    pb = load(text, vars={"replicas": 2.5, "hosts": ["t"]})      # not text: taken as given
    assert pb.vars["replicas"] == 2.5 and pb.vars["hosts"] == ["t"]
    (tmp_path / "v.yml").write_text("replicas: '4'\nmsg: 5\n")
    pb = load(text, var_files=[tmp_path / "v.yml"], vars={"msg": "6"})
    assert pb.vars["replicas"] == "4" and pb.vars["msg"] == "6"   # file values keep their YAML type


def test_override_names(load):
    text = "name: x\nvars: {a: 1}\ntasks: [{type: fake, params: {result: '<< .b >>'}}]\n"
    assert load(text, vars={"a": "2", "b": "3"}).vars == {"a": 2, "b": "3"}
    for name, message in [("_gxo", "-var '_gxo': not a usable variable name"),
                          ("c", "-var c: the playbook has no variable 'c' (in vars or read by a "
                                "template)")]:
        with pytest.raises(gxo.PlaybookError, match=re.escape(message)):
            load(text, vars={name: "1", "b": "3"})


def test_var_file_can_be_empty_or_a_registered_name_clashes(load, tmp_path):
    (tmp_path / "empty.yml").write_text("")
    (tmp_path / "clash.yml").write_text("out: 1\n")
    text = ("name: x\ntasks: [{name: a, type: fake, register: out}, "
            "{type: fake, params: {result: '<< .out >>'}}]\n")
    assert load(text, var_files=[tmp_path / "empty.yml"]).vars == {}
    with pytest.raises(gxo.PlaybookError, match="register key 'out' is also a playbook variable"):
        load(text, var_files=[tmp_path / "clash.yml"])


def test_override_values_and_files_checked(load, tmp_path):
    text = """
        name: x
        vars: {n: 1, f: 0.5}
        tasks: [{type: fake, params: {result: "<< .n >> << .f >> << .u >>"}}]
    """
    pb = load(text, vars={"f": "2", "u": "[a, b]"})
    assert (pb.vars["f"], pb.vars["u"]) == (2.0, ["a", "b"])
    assert load(text, vars={"u": "[a"}).vars["u"] == "[a"
    assert "vars.n: -var n: expected an integer" in error(load, text, vars={"n": "x", "u": "1"})
    files = {"bad_name.yml": b"x-y: 1\n", "latin1.yml": b"u: caf\xe9\n", "list.yml": b"[1]\n",
             "broken.yml": b"u: [\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    for name, message in [("bad_name.yml", "bad_name.yml:1:1: -var-file: 'x-y' is not a usable"),
                          ("latin1.yml", "latin1.yml: -var-file: not UTF-8 text"),
                          ("list.yml", "list.yml:1:1: -var-file: expected a mapping"),
                          ("broken.yml", "broken.yml:2:1: invalid YAML"),
                          ("missing.yml", "missing.yml: -var-file: cannot read it")]:
        with pytest.raises(gxo.PlaybookError, match=re.escape(message)):
            load(text, var_files=[tmp_path / name], vars={"u": "1"})
    with pytest.raises(gxo.PlaybookError, match="-modules-dir .*/nowhere: no such folder"):
        load(text, vars={"u": "1"}, modules_dirs=[tmp_path / "nowhere"])


def test_module_files_in_process(load, tmp_path):
    for folder, kind in (("one", "sameplace_a"), ("two", "sameplace_b")):
        write_files(tmp_path / folder, {"sameplace.py": f"import gxo\ngxo.register({kind!r}, "
                                                        "type('M', (gxo.Module,), {}))\n"})
    write_files(tmp_path / "three", {"log.py": "import gxo\ngxo.register('log', "
                                               "type('M', (gxo.Module,), {}))\n"})
    pb = load("name: x\ntasks: [{type: sameplace_a}, {type: sameplace_b}]\n",
              modules_dirs=[tmp_path / "one", tmp_path / "two"])
    assert [t.module.__module__ for t in pb.tasks] == ["gxo_user_modules.sameplace",
                                                       "gxo_user_modules.sameplace_2"]
    with pytest.raises(gxo.PlaybookError, match="module type 'log' is built in"):
        load("name: x\ntasks: [{type: log, params: {message: hi}}]\n",
             modules_dirs=[tmp_path / "three"])



# -- hostile input: bounded, and always a one-line error naming the place

def deep(n, opener="[", closer="]"):
    return f"name: x\nvars:\n  a: {opener * n}{closer * n}\ntasks: [{{type: fake}}]\n"


def test_nesting_is_bounded(load):
    value = load(deep(98)).vars["a"]        # with the root and vars: 100 levels
    for _ in range(97):
        value = value[0]
    assert value == []
    for text in (deep(99), deep(360)):
        assert error(load, text) == ":3:104: nested more than 100 levels deep"
    # Newer libyaml (PyYAML 6.0.4's wheels) stops first, at 1000 levels, as it scans ahead.
    assert error(load, deep(100_000)) in (":3:104: nested more than 100 levels deep",
                                          ":3:1004: nested more than 100 levels deep")
    assert error(load, deep(1000, "{a: ", "}")) == ":3:398: nested more than 100 levels deep"
    block = "".join(" " * i + f"k{i}:\n" for i in range(1, 200))
    assert error(load, f"name: x\nvars:\n{block}") == ":102:101: nested more than 100 levels deep"


@pytest.mark.parametrize("text", [
    "name: x\nvars:\n" + "".join(f"  v{i}: {a}\n" for i, a in enumerate(LAUGHS))
    + "tasks: [{type: fake}]\n",
    f"name: x\ntasks: [{{type: fake, loop: [{', '.join(LAUGHS)}]}}]\n",
])
def test_alias_bombs_are_refused(load, text):
    assert "aliases repeat more than 1,000,000 values (an alias bomb?)" in error(load, text)


def test_aliases_that_expand_modestly_load(load):
    pb = load("""
        name: x
        vars:
          hosts: &hosts [a, b]
          both: [*hosts, *hosts]
        tasks: [{type: fake, loop: *hosts}]
    """)
    assert pb.vars["both"] == [["a", "b"], ["a", "b"]] and pb.tasks[0].loop == ["a", "b"]


@pytest.mark.parametrize("text, message", [
    pytest.param("n: " + "9" * 5000 + "\n", ":1:4: the number '99999999999999999999999999…"
                 "9999999999999' (5,000 chars) is too long", id="long-int"),
    ("a: &x [1, *x]\n", ":1:11: alias '*x' is inside its own anchor"),
    ("a: *x\n", ":1:4: alias '*x' has no anchor before it"),
    ("? [a]\n: 1\n", ":1:3: a mapping key must be a scalar"),
    ("name: x\n---\nname: y\n", ":2:1: a playbook is one YAML document; found a second one"),
    ("name: x\x00\ntasks: []\n", ":1:8: invalid YAML: character 0x0000 is not allowed"),
    ("name: x\ntasks: [{type: fake}]\nvars: {1: a, '1': b}\n", ":3:14: duplicate key '1'"),
])
def test_yaml_traps(text, message):
    with pytest.raises(gxo.PlaybookError) as info:
        gxo.load_playbook(text)
    assert str(info.value) == "<playbook>" + message


def test_keys_are_text(load):
    pb = load("""
        name: x
        vars: {ports: {80: http, 1.50: old, true: yes}}
        tasks: [{type: exec, params: {command: env, environment: {1: one}}, loop: {2: two}}]
    """)
    assert pb.vars["ports"] == {"80": "http", "1.50": "old", "true": "yes"}
    assert pb.tasks[0].params["environment"] == {"1": "one"} and pb.tasks[0].loop == {"2": "two"}
    assert error(load, "name: x\ntasks: [{type: log, params: {message: hi, 1: x}}]\n") == \
        ":2:46: task #1: params.1: unknown param; expected one of: message, level"


@pytest.mark.parametrize("field, message", [
    ("timeout: 9223372036854775808ns", "timeout: duration '9223372036854775808ns' is too long: "
                                       "at most 8760h (a year)"),
    ("timeout: 8761h", "timeout: duration '8761h' is too long"),
    ("retry: {delay: 1000000h}", "retry.delay: duration '1000000h' is too long"),
    ("retry: {delay: -1000000h}", "retry.delay: duration '-1000000h' is too long"),
])
def test_durations_are_bounded(load, field, message):
    assert message in error(load, f"name: x\ntasks: [{{type: fake, {field}}}]\n")
    assert load("name: x\ntasks: [{type: fake, timeout: 8760h}]\n").tasks[0].timeout == 8760 * 3600


def test_long_values_are_excerpted(load):
    assert gxo._excerpt("short") == "'short'"
    assert gxo._excerpt("a" * 26 + "b" * 9974) == "'" + "a" * 26 + "…" + "b" * 13 + "' (10,000 chars)"
    assert gxo._excerpt("x" * 100, 80).endswith("' (100 chars)")
    long = "k" * 10_000
    for text, expected in [
        (f"name: x\ntasks:\n  - type: fake\n    ? {long}\n    : 1\n", "unknown key 'kkkk"),
        (f"name: x\ntasks: [{{type: fake, ignore_errors: {long}}}]\n", "got the string 'kkkk"),
        (f"name: x\ntasks: [{{type: fake, name: {long}}}]\n", "a name is one line of at most 128"),
        (f"name: {long}\ntasks: [{{type: fake}}]\n", "a name is one line of at most 128"),
        (f"name: x\ntasks: [{{type: fake, depends_on: [{long}]}}]\n", "no task named 'kkkk"),
    ]:
        message = error(load, text)
        assert expected in message and "…kkkkkkkkkkkkk' (10,000 chars)" in message, message
        assert len(message) < 300, message
    # A long key in a field's path: the path is cut too.
    message = error(load, f"name: x\ntasks: [{{type: exec, params: {{command: x, {'p' * 1000}: 1}}}}]\n")
    assert message.startswith(f":2:1045: task #1: 'params.{'p' * 46}…{'p' * 26}' (1,007 chars): "
                              "unknown param; expected one of: command, args, ")
    assert "one line" in error(load, 'name: x\ntasks: [{type: fake, name: "a\\nb"}]\n')


def test_out_of_memory_while_loading_is_a_playbook_error(load, monkeypatch):
    def exhausted(*args):
        raise MemoryError
    monkeypatch.setattr(gxo._Document, "_build", exhausted)
    assert error(load, "name: x\ntasks: [{type: fake}]\n") == ": out of memory while loading the playbook"


def test_positions_are_found_again_on_error(load):
    text = """
        name: x
        vars:
          slow: &slow {attempts: 0}
          base: &base {delay: 1s}
        tasks:
          - {name: a, type: fake}
          - {name: b, type: fake, depends_on: [a, c]}
    """
    assert error(load, text) == ":8:43: task 'b' (#2): depends_on: no task named 'c'"
    assert error(load, text.replace("depends_on: [a, c]", "retry: *slow")) == \
        ":4:26: task 'b' (#2): retry.attempts: must be at least 1"
    assert error(load, text.replace("depends_on: [a, c]", "retry: {<<: *base, attempts: 0}")) == \
        ":8:56: task 'b' (#2): retry.attempts: must be at least 1"
    assert error(load, text.replace("depends_on: [a, c]", "retry: {<<: *base, tries: 2}")) == \
        ":8:46: task 'b' (#2): retry.tries: unknown key 'tries'; expected one of: attempts, " \
        "delay, on_error"


def test_tags_anchors_and_odd_keys():
    pb = gxo.load_playbook("""
name: x
vars: {s: !!str 1, i: !!int "5", f: !!float 1, b: !!bool true, n: !!null "", five: &five 5,
       again: *five, by_alias: {*five : v}, plain: ! 7}
tasks: [{type: fake}]
""")
    assert pb.vars == {"s": "1", "i": 5, "f": 1.0, "b": True, "n": None, "five": 5, "again": 5,
                       "by_alias": {"5": "v"}, "plain": 7}
    for text, message in [
        ("a: !!set {x}\n", ":1:4: unsupported YAML tag '!!set'"),
        ("a: !!binary aGk=\n", ":1:4: unsupported YAML tag '!!binary'"),
        ("m: &m {a: 1}\nb: {*m : x}\n", ":2:5: a mapping key must be a scalar"),
        ("a: {<<: [1]}\n", ":1:9: '<<' merges a mapping or a list of mappings"),
    ]:
        with pytest.raises(gxo.PlaybookError) as info:
            gxo.load_playbook(text)
        assert str(info.value) == "<playbook>" + message


def test_positions_of_values_only_merged_in(load):
    # retry exists only through the merge: the error points at the task that merges it.
    assert error(load, """
        name: x
        tasks:
          - {type: fake, <<: {retry: {tries: 1}}}
    """) == ":4:5: task #1: retry.tries: unknown key 'tries'; expected one of: attempts, delay, on_error"
    doc = gxo._Document("a: &x [1]\nb: *x\n", "f.yml")
    assert doc._replay(("b", 0)) == [1 << 32 | 3]           # the path meets an alias: its place
    assert doc.node({"not": "from the document"}, "not") is None
