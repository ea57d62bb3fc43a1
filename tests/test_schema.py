"""schema/playbook.schema.json: the examples validate, mistakes don't, and it knows every param."""

import json
import re
import textwrap

import jsonschema
import pytest

import gxo
from helpers import ROOT

SCHEMA = json.loads((ROOT / "schema" / "playbook.schema.json").read_text())
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _yaml(text, file="<snippet>"):
    """The values gxo reads (YAML 1.2, like editors), not PyYAML's YAML 1.1 ones."""
    return gxo._Document(textwrap.dedent(text), file).root


def _errors(value):
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(value)]


def _snippets():
    """(where, value) for each YAML block of the docs that is a playbook, a task or tasks."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for m in re.finditer(r"```ya?ml\n(.*?)```", text, re.S):
            where = f"{doc.name}:{text.count(chr(10), 0, m.start()) + 2}"
            value = _yaml(m[1], where)
            if isinstance(value, dict) and "type" in value:
                value = [value]
            if isinstance(value, list) and all(isinstance(t, dict) and "type" in t for t in value):
                value = {"name": "snippet", "tasks": value}
            if isinstance(value, dict) and "tasks" in value:
                found.append(pytest.param(value, id=where))
    return found


def test_schema_is_a_draft_7_schema():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"


@pytest.mark.parametrize("path", sorted((ROOT / "playbooks").glob("*.yml")), ids=lambda p: p.name)
def test_example_playbooks_validate(path):
    assert _errors(_yaml(path.read_text(), str(path))) == []


@pytest.mark.parametrize("value", _snippets())
def test_doc_snippets_validate(value):
    assert _errors(value) == []


def test_the_readme_has_snippets_to_check():
    assert any("README.md" in p.id for p in _snippets())


# Valid for gxo and for the schema alike: templates where values are templated.
VALID = [
    """
    name: templated
    vars: {hosts: [a, b], n: 2, flag: "true"}
    tasks:
      - {name: a, type: exec, params: {command: ls, args: "<< .hosts >>", shell: "<< .flag >>"}}
      - {name: b, type: records, params: {range: "<< .n >>"}}
      - {name: c, type: collect, stream_input: b, params: {limit: "<< .n >>"}}
      - {name: d, type: log, depends_on: a, loop: "<< .hosts >>", params: {message: "<< .item >>"}}
      - {name: e, type: exec, timeout: 1m30s, retry: {attempts: 3, delay: 500ms, on_error: false},
         loop: [1, 2], loop_control: {parallel: 2, loop_var: x, index_var: i},
         params: {command: echo, args: [1, x], environment: {DEBUG: true, N: 1}}}
    """,
    """
    name: go delimiters
    templating: {engine: go, delimiters: ["{{", "}}"]}
    tasks:
      - {name: a, type: log, when: "{{ true }}", params: {message: hi, level: "{{ \\"warn\\" }}"}}
      - {type: my_module, params: {anything: [1, {x: y}]}}
      - {type: records, params: {range: {start: 1, stop: 10, step: 2}}}
    """,
]


@pytest.mark.parametrize("text", VALID, ids=["templated", "go-delimiters"])
def test_valid_playbooks(text, load):
    assert _errors(_yaml(text)) == []
    if "my_module" not in text:
        load(text)


# (playbook, what the schema says is wrong); gxo's loader rejects each one too.
INVALID = [
    ("name: x\ntasks: []\n", "tasks: [] should be non-empty"),
    ("name: x\nhosts: [a]\ntasks: [{type: log, params: {message: m}}]\n",
     "Additional properties are not allowed ('hosts' was unexpected)"),
    ("name: x\ntasks: [{name: a, type: log, depends-on: [b], params: {message: m}}]\n",
     "tasks/0: Additional properties are not allowed ('depends-on' was unexpected)"),
    ("name: x\ntasks: [{name: a, type: exec, timeout: 30, params: {command: ls}}]\n",
     "tasks/0/timeout: 30 is not of type 'string'"),
    ("name: x\ntasks: [{name: a, type: exec, retry: {delay: 2 seconds}, params: {command: ls}}]\n",
     "tasks/0/retry/delay: '2 seconds' does not match"),
    ("name: x\ntasks: [{name: a, type: exec, params: {args: [x]}}]\n",
     "tasks/0/params: 'command' is a required property"),
    ("name: x\ntasks: [{name: a, type: exec, params: {command: ls, cwd: /}}]\n",
     "tasks/0/params: Additional properties are not allowed ('cwd' was unexpected)"),
    ("name: x\ntasks: [{name: a, type: log, params: {message: m, level: loud}}]\n",
     "tasks/0/params/level: 'loud' is not valid under any of the given schemas"),
    ("name: x\ntasks: [{name: a, type: log, loop: [1], loop_control: {parallel: 0}, "
     "params: {message: m}}]\n", "tasks/0/loop_control/parallel: 0 is less than the minimum of 1"),
    ("name: x\ntasks: [{name: a, type: log, register: _gxo, params: {message: m}}]\n",
     "tasks/0/register: '_gxo' should not be valid under {'const': '_gxo'}"),
    ("name: x\ntasks: [{name: a, type: log, ignore_errors: 'yes', params: {message: m}}]\n",
     "tasks/0/ignore_errors: 'yes' is not of type 'boolean'"),
    ("name: x\ntasks: [{name: a, type: records, params: {items: [1], file: f}}]\n",
     "tasks/0/params: {'items': [1], 'file': 'f'} is valid under each of"),
    ("name: x\ntasks: [{name: a, type: records, params: {items: [1]}},\n"
     "  {name: b, type: collect, stream_input: a, loop: [1]}]\n",
     "should not be valid under {'required': ['stream_input', 'loop']}"),
    ("name: x\ntasks: [{name: a, type: exec, executor: dask, params: {command: ls}}]\n",
     "tasks/0/executor: 'local' was expected"),
]


@pytest.mark.parametrize("text, message", INVALID, ids=[m[:40] for _, m in INVALID])
def test_invalid_playbooks(text, message, load):
    errors = _errors(_yaml(text))
    assert len(errors) == 1 and message in errors[0], errors
    with pytest.raises(gxo.PlaybookError):
        load(text)


def test_register_needs_a_name():
    # A register key belongs to a named task (README.md, A playbook: register needs a name).
    errors = _errors(_yaml("name: x\ntasks: [{type: log, register: r, params: {message: m}}]\n"))
    assert errors == ["tasks/0: 'name' is a dependency of 'register'"]


@pytest.mark.parametrize("name", ["exec", "log", "records", "filter", "collect", "write_file"])
def test_schema_knows_every_param_of_the_built_in_modules(name):
    declared = set(SCHEMA["definitions"][f"{name}_params"]["properties"])
    p = gxo.Params({param: "<< .x >>" for param in declared}, static=True)
    try:
        gxo._ModuleFinder().find(name)().parse_params(p)
    except gxo.ParamError:
        pass                    # e.g. records given all its sources at once: asked all the same
    asked = set(p._seen)
    assert asked <= declared, f"params of {name} missing from the schema"
    assert declared - asked <= {"creates", "removes"}, f"the schema has params {name} does not take"
