"""Text params take the text a template prints; status edges through index;
the load-time warning for {{ }} text under << >> (README.md, A playbook: Templates)."""

import pytest

import gxo

TYPED = """
    name: typed
    vars: {debug: true, hosts: [a, b], g: 1000000.0, n: null, m: {k: 1}}
    tasks:
"""


# ---------------------------------------------------------------- text params

@pytest.mark.parametrize("message, text", [
    ("<< .debug >>", "true"),
    ("<< .hosts >>", '["a","b"]'),
    ("<< .g >>", "1e+06"),
    ("v<< .g >>", "v1e+06"),                # the same inside a longer string
    ("<< .n >>", ""),                       # null is empty text
    ("<< .m >>", '{"k":1}'),
    ("<< len .hosts >>", "2"),
    (1.0, "1"),                             # literal scalars: the text a template prints
    (1e6, "1e+06"),
    (True, "true"),
    (7, "7"),
])
def test_log_message_is_the_text_a_template_prints(run, message, text):
    task = f"      - {{name: t, type: log, register: out, params: {{message: {message!r}}}}}\n"
    r = run(TYPED + task)
    assert r.status("t") == "Completed", r.tasks["t"].reason
    assert r.state["out"] == text


def test_exec_args_environment_and_stdin_take_text(run):
    r = run(TYPED + """
      - name: t
        type: exec
        register: out
        params:
          command: sh
          args: [-c, 'echo "$1 $2 $3 [$4]" "$D $G $H $L $N" && cat', sh,
                 "<< .debug >>", "<< .hosts >>", "<< .g >>", "<< .n >>"]
          environment: {D: "<< .debug >>", G: "<< .g >>", H: "<< .hosts >>", L: 1.0, N: "<< .n >>"}
          stdin: "<< .m >>"
    """)
    assert r.status("t") == "Completed", r.tasks["t"].reason
    assert r.state["out"]["stdout"] == 'true ["a","b"] 1e+06 [] true 1e+06 ["a","b"] 1 \n{"k":1}'


def test_a_whole_list_from_a_template_gives_text_items(run):
    r = run("""
        name: l
        vars: {args: [[1, 2], 2.5, null, true]}
        tasks:
          - {name: t, type: exec, register: out, params: {command: echo, args: "<< .args >>"}}
    """)
    assert r.state["out"]["stdout"] == "[1,2] 2.5  true"


def test_native_values_still_reach_params_that_take_them(run):
    r = run("""
        name: native
        vars: {hosts: [a, b], n: 2, on: true, zero: 0}
        tasks:
          - name: t
            type: fake
            register: out
            loop: "<< .hosts >>"
            params:
              result: {h: "<< .item >>", n: "<< .n >>", on: "<< .on >>"}
              fail_times: "<< .zero >>"
    """)
    assert r.state["out"] == [{"h": "a", "n": 2, "on": True}, {"h": "b", "n": 2, "on": True}]


@pytest.mark.parametrize("value, raw, text", [
    (True, "<< .x >>", "true"),
    (True, True, "true"),
    (2.0, 2.0, "2"),
    (1e21, "<< .x >>", "1e+21"),
    (["a", 1], "<< .x >>", '["a",1]'),
    ({"a": None}, "x: << .x >>", '{"a":null}'),
    (None, "<< .x >>", ""),
    ("s", None, "s"),
])
def test_params_str(value, raw, text):
    p = gxo.Params({"x": value}, raw={"x": raw})
    assert p.str("x") == text


@pytest.mark.parametrize("params, raw, message", [
    ({"x": ["a"]}, {"x": ["a"]}, "param 'x': expected a string, got a list"),
    ({"x": {"a": 1}}, None, "param 'x': expected a string, got a mapping"),
    ({"x": None}, {"x": None}, "param 'x': is required"),
    ({"x": None}, None, "param 'x': is required"),
    ({}, {}, "param 'x': is required"),
])
def test_params_str_refuses_what_was_written_wrong(params, raw, message):
    with pytest.raises(gxo.ParamError, match=f"^{message}$"):
        gxo.Params(params, raw=raw).str("x", required=True)


def test_params_list_of_str_and_text():
    raw = {"l": ["<< .a >>", 1.5, True, "<< .b >>"], "w": "<< .whole >>"}
    p = gxo.Params({"l": [False, 1.5, True, None], "w": [[1], None, 3.0]}, raw=raw)
    assert p.list_of_str("l") == ["false", "1.5", "true", ""]
    assert p.list_of_str("w") == ["[1]", "", "3"]
    assert p.text("w[0]", [1]) == "[1]"
    for items in ([None], [["x"]], [{"k": 1}]):
        with pytest.raises(gxo.ParamError, match=r"^param 'l\[0\]': expected a string, got "):
            gxo.Params({"l": items}, raw={"l": items}).list_of_str("l")
    # A rendered null for a param that is not text still means "not set".
    p = gxo.Params({"n": None, "b": None}, raw={"n": "<< .x >>", "b": "<< .x >>"})
    assert p.int("n", 5) == 5 and p.bool("b", True) is True


def test_written_list_in_a_text_param_is_an_error_at_load(cli):
    r = cli(playbook="""
        name: bad
        tasks:
          - {name: t, type: log, params: {message: [a, b]}}
    """)
    assert r.returncode == 2
    assert "playbook.yml:4:44: task 't' (#1): params.message: expected a string, got a list" \
        in r.stderr


@pytest.mark.parametrize("env, message", [
    ("{A: [1]}", ":62: task #1: params.environment.A: expected a string, got a list"),
    ("{A: ~}", ":62: task #1: params.environment.A: expected a string, got null"),
    ('["A=1", 5]', ":66: task #1: params.environment[1]: expected KEY=value, got '5'"),
])
def test_environment_values_written_wrong(load, env, message):
    with pytest.raises(gxo.PlaybookError) as info:
        load(f"""
            name: env
            tasks: [{{type: exec, params: {{command: env, environment: {env}}}}}]
        """)
    assert str(info.value).endswith("playbook.yml:3" + message)


def test_cli_prints_typed_values_as_go_does(cli):
    r = cli(playbook=TYPED + """
      - name: echo
        type: exec
        register: out
        params: {command: echo, args: ["<< .debug >>", "<< .hosts >>", "<< .g >>", "v<< .g >>"]}
      - {name: show, type: log, params: {message: "echo said: << .out.stdout >>"}}
      - {name: hosts, type: log, params: {message: "<< .hosts >>"}}
      - {name: g, type: log, params: {message: "<< .g >>|v<< .g >>"}}
    """)
    assert r.returncode == 0, r.stderr
    assert '[show] echo said: true ["a","b"] 1e+06 v1e+06\n' in r.stderr
    assert '[hosts] ["a","b"]\n' in r.stderr
    assert "[g] 1e+06|v1e+06\n" in r.stderr


# ---------------------------------------------------------------- index ._gxo.tasks "a.b"

DOTTED = """
    name: dotted
    tasks:
      - {name: a.b, type: fake, params: {sleep: 0.2}}     # a reader without the edge would not wait
      - name: after
        type: log
        register: said
        when: '<< eq (index ._gxo.tasks "a.b" "status") "Completed" >>'
        params: {message: '<< index ._gxo.tasks "a.b" "status" >>/<< (index ._gxo.tasks "a.b").status >>'}
"""


def test_index_of_a_task_status_is_a_status_edge(load, run):
    assert load(DOTTED).tasks[1].needs == {0}
    r = run(DOTTED)
    assert r.status("after") == "Completed" and r.state["said"] == "Completed/Completed"


@pytest.mark.parametrize("ref, message", [
    ('index ._gxo.tasks "a.c" "status"', "_gxo.tasks: no task named 'a.c' (did you mean 'a.b'?)"),
    ('index ._gxo.tasks "a.b" "stat"', "_gxo.tasks.a.b has only 'status', not 'stat'"),
    ('index ._gxo "task"', "'_gxo.task' does not exist; there are _gxo.tasks.NAME.status"),
])
def test_index_of_an_unknown_task_is_a_load_error(cli, ref, message):
    r = cli(playbook=f"""
        name: dotted
        tasks:
          - {{name: a.b, type: log, params: {{message: hi}}}}
          - {{name: after, type: log, params: {{message: '<< {ref} >>'}}}}
    """)
    assert r.returncode == 2
    assert f"playbook.yml:5:48: task 'after' (#2): params.message: {message}" in r.stderr


# ---------------------------------------------------------------- {{ }} under << >>

OTHER = """
    name: helm
    vars: {chart: "{{ .Values.chart }}"}
    tasks:
      - name: t
        type: exec
        register: out
        params:
          command: echo
          args: ["--set", "image={{ .Values.image }}", '{"a": {"b": 1}}', "{{}}", "{{ 1 }}"]
      - {type: log, when: "{{ x }}", params: {message: "<< .chart >>"}}
"""
FIX = 'for {{ }} templates set templating: {delimiters: ["{{", "}}"]}'


def test_other_template_syntax_warns_at_load(load):
    warnings = load(OTHER).warnings
    assert [w.split("playbook.yml", 1)[1] for w in warnings] == [
        f":3:15: vars.chart: '{{{{ .Values.chart }}}}' is passed on as text, not rendered: "
        f"templates here are << .x >>; {FIX}",
        f":10:23: task 't' (#1): params.args[1]: '{{{{ .Values.image }}}}' is passed on as text, "
        f"not rendered: templates here are << .x >>; {FIX}",
        f":11:23: task #2: when: '{{{{ x }}}}' is passed on as text, not rendered: templates "
        f"here are << .x >>; {FIX}"]


def test_other_template_syntax_warning_through_the_cli(cli):
    r = cli(playbook=OTHER)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count(" WARN ") == 3
    assert "playbook.yml:10:23: task 't' (#1): params.args[1]: '{{ .Values.image }}' is " \
           "passed on as text" in r.stderr
    # The warning comes before any task starts; the text is passed on as written.
    assert r.stderr.index(" WARN ") < r.stderr.index("[t] started")
    assert "[#2] {{ .Values.chart }}" in r.stderr


def test_no_warning_with_go_delimiters_or_without_such_text(load):
    assert load("""
        name: go
        templating: {delimiters: ["{{", "}}"]}
        vars: {x: 1}
        tasks: [{type: log, when: "{{ .x }}", params: {message: '{{ .x }} << .x >>'}}]
    """).warnings == []
    assert load("""
        name: plain
        tasks: [{type: log, params: {message: '{"a": {"b": 1}} {{}} {{ 1 }} << "{{" >>'}}]
    """).warnings == []
