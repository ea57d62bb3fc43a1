"""-validate and -graph: the plan of a playbook, what waits for what and why, run nothing."""

import html
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import gxo
from helpers import ROOT, gxo_command

# One edge of each kind, a task waiting for one task for two reasons, a pipeline with
# fan-out, an unnamed task and a task that waits for nothing.
PLAYBOOK = """
name: shapes
tasks:
  - name: build
    type: exec
    params: {command: touch, args: [built]}
    register: out
  - name: test
    type: exec
    depends_on: [build]
    params: {command: echo, args: ["<< .out.stdout >>"]}
  - name: lint
    type: log
    params: {message: linting}
  - type: log
    when: '<< eq ._gxo.tasks.test.status "Completed" >>'
    params: {message: tested}
  - name: source
    type: records
    depends_on: [lint]
    params: {items: [1, 2]}
  - name: keep
    type: filter
    stream_input: source
    params: {where: "<< gt .value 1 >>"}
  - name: count
    type: collect
    stream_input: keep
  - name: save
    type: collect
    stream_input: keep
"""

PLAN = """\
playbook 'shapes' is valid: 8 tasks in 3 waves; nothing was run

task    type     waits for (why)
build   exec     -
test    exec     build (data .out, depends_on)
lint    log      -
#4      log      test (status)
source  records  lint (depends_on)
keep    filter   source (stream)
count   collect  keep (stream)
save    collect  keep (stream)

wave  tasks that can run at the same time
1     build, lint
2     test, [source, keep, count, save]
3     #4

data .KEY: reads the register key KEY of that task
status: reads _gxo.tasks.NAME.status of that task
depends_on: names that task in depends_on
stream: reads that task's records, running beside it (stream_input)
[a, b]: a stream pipeline, its tasks start together
a wave's tasks start once what they wait for in earlier waves has ended
"""

EDGES = {("t1", "t2"): "data, depends_on", ("t2", "t4"): "status", ("t3", "t5"): "depends_on",
         ("t5", "t6"): "stream", ("t6", "t7"): "stream", ("t6", "t8"): "stream"}


def test_edges_record_why_each_task_waits(load):
    pb = load(PLAYBOOK)
    assert [t.edges for t in pb.tasks[:5]] == [
        {}, {0: {"data", "depends_on"}}, {}, {1: {"status"}}, {2: {"depends_on"}}]
    assert [sorted(t.needs) for t in pb.tasks] == [[], [0], [], [1], [2], [], [], []]


def test_edges_also_record_streams_and_failure_handlers(load):
    pb = load(PLAYBOOK.replace("  - name: source\n", "  - name: source\n    always: true\n"))
    assert [t.edges for t in pb.tasks[4:]] == [
        {2: {"depends_on", "always"}}, {4: {"stream"}}, {5: {"stream"}}, {5: {"stream"}}]
    assert [sorted(t.needs) for t in pb.tasks[4:]] == [[2], [], [], []]
    assert pb.consumers == {0: [], 1: [], 2: [], 3: [], 4: [5], 5: [6, 7], 6: [], 7: []}


def test_validate_prints_the_plan_and_runs_nothing(cli, tmp_path):
    r = cli("-validate", playbook=PLAYBOOK)
    assert r.returncode == 0, r.stderr
    assert r.stdout == PLAN
    assert r.stderr == ""
    assert not (tmp_path / "built").exists()


def test_waves_follow_the_longest_path():
    # c waits for a directly and through b: it is in the third wave, not the second.
    pb = gxo.load_playbook(textwrap.dedent("""
        name: w
        tasks:
          - {name: a, type: log, params: {message: a}, register: ra}
          - {name: b, type: log, params: {message: "<< .ra >>"}, register: rb}
          - {name: c, type: log, params: {message: "<< .ra >> << .rb >>"}}
          - {name: d, type: log, params: {message: d}}
    """))
    assert gxo._waves(pb) == [[[0], [3]], [[1]], [[2]]]


def test_validate_an_invalid_playbook_exits_2(cli):
    r = cli("-validate", playbook="""
        name: bad
        tasks:
          - {name: a, type: log, depends_on: [b], params: {message: x}}
    """)
    assert r.returncode == 2
    assert r.stdout == ""
    assert "task 'a' (#1): depends_on: no task named 'b'" in r.stderr


@pytest.mark.parametrize("args, message", [
    (("-graph", "svg"), "-graph takes mermaid or dot, got 'svg'"),
    (("-graph", "merm"), "(did you mean 'mermaid'?)"),
    (("-graph",), "flag -graph needs a value"),
    (("-graph", "dot", "-validate"), "-validate and -graph are two different outputs"),
])
def test_graph_usage_errors(cli, args, message):
    r = cli(*args, playbook=PLAYBOOK)
    assert r.returncode == 2 and message in r.stderr and r.stdout == ""


def test_validate_into_a_closed_pipe(tmp_path):
    # `gxo -validate ... | true`: the reader is gone before gxo writes.
    path = tmp_path / "playbook.yml"
    path.write_text(PLAYBOOK)
    p = subprocess.Popen(gxo_command("-validate", "-playbook", str(path)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    p.stdout.close()
    assert p.stderr.read() == b""
    assert p.wait(timeout=60) == 0


def test_main_in_process(tmp_path, capsys, monkeypatch):
    path = tmp_path / "p.yml"
    path.write_text(PLAYBOOK)
    assert gxo.main(["-validate", "-playbook", str(path)]) == 0
    assert capsys.readouterr().out == PLAN
    assert gxo.main(["-graph=dot", str(path)]) == 0
    assert _dot_edges(capsys.readouterr().out) == EDGES
    assert gxo.main(["-graph", "svg", str(path)]) == 2
    assert gxo.main(["-validate", "-graph", "dot", str(path)]) == 2
    assert capsys.readouterr().out == ""
    read, write = os.pipe()
    os.close(read)
    with open(write, "w") as closed:
        monkeypatch.setattr(sys, "stdout", closed)
        assert gxo.main(["-validate", str(path)]) == 0
        assert os.path.samestat(os.fstat(write), os.stat(os.devnull))


# -- Mermaid: the grammar gxo writes, checked line by line

_M_NODE = re.compile(r'(t\d+)\["([^"]*)"\]$')
_M_EDGE = re.compile(r'(t\d+) (-->|-\.->|==>)\|([a-z_, ]+)\| (t\d+)$')


def _mermaid(text):
    """(nodes {id: label}, edges {(a, b): label}, arrows, subgraphs, linkStyle) or fail."""
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    nodes, edges, arrows, subgraphs, styled, depth = {}, {}, {}, [], None, 0
    for line in lines[1:]:
        line = line.strip()
        if line.startswith("%%"):
            assert not line.startswith("%%{"), "a directive, not a comment"
        elif m := _M_NODE.match(line):
            label = m[2]
            assert not set(label) & set('<>`"'), label
            assert not re.search(r"#(?![a-z]+;|\d+;)", label), f"a bare # in {label!r}"
            nodes[m[1]] = re.sub(r"#(\d+|[a-z]+);", lambda e: html.unescape(
                f"&#{e[1]};" if e[1].isdigit() else f"&{e[1]};"), label)
            if depth:
                subgraphs[-1].append(m[1])
        elif m := _M_EDGE.match(line):
            edges[m[1], m[4]] = m[3]
            arrows[m[1], m[4]] = m[2]
        elif m := re.match(r'subgraph (p\d+) \["pipeline"\]$', line):
            depth += 1
            subgraphs.append([])
        elif line == "end":
            depth -= 1
        elif m := re.match(r"linkStyle ([\d,]+) stroke:#d33,color:#d33$", line):
            styled = [int(n) for n in m[1].split(",")]
        else:
            pytest.fail(f"not gxo's Mermaid: {line!r}")
    assert depth == 0
    assert set(a for e in edges for a in e) <= set(nodes)
    return nodes, edges, arrows, subgraphs, styled


def test_graph_mermaid(cli):
    r = cli("-graph", "mermaid", playbook=PLAYBOOK)
    assert r.returncode == 0, r.stderr
    nodes, edges, arrows, subgraphs, styled = _mermaid(r.stdout)
    assert nodes == {"t1": "build (exec)", "t2": "test (exec)", "t3": "lint (log)",
                     "t4": "#4 (log)", "t5": "source (records)", "t6": "keep (filter)",
                     "t7": "count (collect)", "t8": "save (collect)"}
    assert edges == EDGES
    assert arrows[("t5", "t6")] == "==>" and arrows[("t1", "t2")] == "-->"
    assert arrows[("t2", "t4")] == arrows[("t3", "t5")] == "-.->"
    assert subgraphs == [["t5", "t6", "t7", "t8"]]
    assert styled is None


ODD = """
name: 'odd "names"'
tasks:
  - name: 'say "hi" <b>&amp; #1;'
    type: log
    params: {message: x}
    register: a
  - name: "`tick` %% {x} [y] | end --> z"
    type: log
    params: {message: "<< .a >>"}
"""


def test_graph_mermaid_quotes_odd_names(cli):
    r = cli("-graph", "mermaid", playbook=ODD)
    assert r.returncode == 0, r.stderr
    nodes, edges, *_ = _mermaid(r.stdout)
    assert nodes == {"t1": 'say "hi" <b>&amp; #1; (log)', "t2": "`tick` %% {x} [y] | end --> z (log)"}
    assert edges == {("t1", "t2"): "data"}


def test_graph_always_edges(load):
    pb = load(PLAYBOOK.replace("  - type: log\n", "  - type: log\n    always: true\n")
              .replace("  - name: source\n", "  - name: source\n    always: true\n"))
    assert [t.key for t in pb.tasks if t.always] == ["#4", "source"]
    nodes, edges, arrows, _, styled = _mermaid(gxo._graph(pb, "mermaid"))
    assert edges == {**EDGES, ("t2", "t4"): "status, always", ("t3", "t5"): "depends_on, always"}
    assert arrows[("t2", "t4")] == "-.->"
    order = list(edges)         # linkStyle counts edges in the order they are written
    assert sorted(order[n] for n in styled) == [("t2", "t4"), ("t3", "t5")]
    assert "test (status, always)" in gxo._plan(pb)
    assert "always: a failure handler" in gxo._plan(pb)
    dot = gxo._graph(pb, "dot")
    assert 't2 -> t4 [label="status, always", style=dashed, color="#dd3333"' in dot


# -- DOT

def _dot_edges(text):
    return {(a, b): label for a, b, label in re.findall(r'(t\d+) -> (t\d+) \[label="([^"]*)"', text)}


def test_graph_dot(cli):
    r = cli("-graph", "dot", playbook=PLAYBOOK)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('digraph "shapes" {\n') and r.stdout.endswith("}\n")
    assert _dot_edges(r.stdout) == EDGES
    assert "subgraph cluster_p1 {" in r.stdout and 't4 [label="#4\\nlog"];' in r.stdout


@pytest.mark.skipif(shutil.which("dot") is None,
                    reason="Graphviz's dot is not installed (apt-get install graphviz)")
@pytest.mark.parametrize("playbook", [PLAYBOOK, ODD] + sorted((ROOT / "playbooks").glob("*.yml")),
                         ids=lambda p: p.stem if hasattr(p, "stem") else p.split("\n")[1])
def test_graph_dot_is_accepted_by_graphviz(cli, playbook, tmp_path):
    if hasattr(playbook, "stem"):
        r = cli("-graph", "dot", "-playbook", str(playbook))
    else:
        r = cli("-graph", "dot", playbook=playbook)
    assert r.returncode == 0, r.stderr
    svg = subprocess.run(["dot", "-Tsvg"], input=r.stdout, capture_output=True, text=True,
                         timeout=60)
    assert svg.returncode == 0 and svg.stderr == "", svg.stderr
    assert "<svg" in svg.stdout
    if playbook is ODD:
        assert "say &quot;hi&quot; &lt;b&gt;&amp;amp; #1;" in svg.stdout


# -- the README shows real output

README = (ROOT / "README.md").read_text()


def test_readme_validate_example(cli):
    playbook = re.search(r"## A playbook\n\n```yaml\n(.*?)```", README, re.S)[1]
    shown = re.search(r"\$ gxo -validate -playbook deploy.yml\n(.*?)```", README, re.S)[1]
    r = cli("-validate", playbook=playbook)
    assert r.returncode == 0, r.stderr
    assert r.stdout == shown


def test_readme_graph_example(cli):
    shown = re.search(r"```mermaid\n(.*?)```", README, re.S)[1]
    r = cli("-graph", "mermaid", "-playbook", str(ROOT / "playbooks" / "stream-logs.yml"))
    assert r.stdout == shown
