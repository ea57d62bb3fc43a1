"""Fuzzing the loader and the CLI (hypothesis): whatever the YAML, loading gives a
playbook or a one-line PlaybookError, and the gxo command exits 0, 1 or 2 with no
traceback and no hang.  Runs in dry-run mode: nothing a mutated playbook says is done.

The suite runs a few dozen examples per property; for a deeper search:

    GXO_FUZZ_EXAMPLES=2000 python -m pytest -q tests/test_fuzz.py
"""

import contextlib
import io
import os
import signal
import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

import gxo
from helpers import ROOT

EXAMPLES = int(os.environ.get("GXO_FUZZ_EXAMPLES", "30"))
BOOKS = {p.name: p.read_text() for p in sorted((ROOT / "playbooks").glob("*.yml"))}
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Words gxo gives meaning to, so that random structures reach past the first check.
WORDS = ["name", "tasks", "vars", "type", "params", "register", "loop", "when", "retry",
         "timeout", "depends_on", "stream_input", "loop_control", "parallel", "attempts",
         "delay", "exec", "log", "records", "filter", "collect", "write_file", "command",
         "args", "message", "environment", "item", "<< .item >>", "<< .x >>", "<< .x.y >>",
         "<< range .x >><< . >><< end >>", "{{ .x }}", "<<", "1s", "-1s", "300ms", "x", "_gxo",
         "<< ._gxo.tasks.a.status >>", "a", "b", "true", "~"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(WORDS))
keys = st.one_of(st.sampled_from(WORDS), st.text(max_size=8), st.integers(-3, 3))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(keys, inner, max_size=4), max_leaves=16)
# Text made of YAML's punctuation, to reach the parser's corners.
yamlish = st.text(st.sampled_from(list("[]{}:,-?&*!|>'\"#%@` \n\t.<a1\x00\xe9")), max_size=60)


def dump(value):
    return yaml.safe_dump(value, default_flow_style=None, width=1 << 20)


def loads_or_fails_cleanly(text):
    """Load text: a Playbook or a one-line PlaybookError, nothing else."""
    try:
        gxo.load_playbook(text)
    except gxo.PlaybookError as e:
        assert "\n" not in str(e), str(e)


@FUZZ
@given(value=values, where=st.sampled_from(["root", "task", "field", "vars"]),
       key=st.sampled_from(WORDS))
def test_any_yaml_structure_loads_or_is_a_playbook_error(value, where, key):
    doc = {"root": value,
           "task": {"name": "x", "tasks": [value]},
           "field": {"name": "x", "tasks": [{"name": "a", "type": "exec", key: value,
                                             "params": {"command": "true"}}]},
           "vars": {"name": "x", "vars": {"x": value},
                    "tasks": [{"type": "log", "params": {key: value}}]}}[where]
    loads_or_fails_cleanly(dump(doc))


@FUZZ
@given(text=yamlish)
def test_any_text_loads_or_is_a_playbook_error(text):
    loads_or_fails_cleanly("name: x\n" + text + "\n")
    loads_or_fails_cleanly(text + "\n")


@st.composite
def mutated_playbooks(draw):
    """An example playbook with a few lines deleted, cut, doubled, re-indented or
    given another value."""
    lines = BOOKS[draw(st.sampled_from(sorted(BOOKS)))].split("\n")
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        op = draw(st.sampled_from(["delete", "cut", "double", "indent", "value", "insert"]))
        if op == "delete":
            del lines[i]
        elif op == "cut":
            lines[i] = line[:draw(st.integers(0, len(line)))]
        elif op == "double":
            lines.insert(i, line)
        elif op == "indent":
            lines[i] = line[2:] if draw(st.booleans()) else "  " + line
        elif op == "value" and ":" in line:
            head = line.split(":", 1)[0]
            lines[i] = head + ": " + yaml.safe_dump(draw(values), default_flow_style=True,
                                                     width=1 << 20).split("\n...")[0].strip()
        else:
            lines.insert(i, draw(yamlish))
        if not lines:
            lines = [""]
    return "\n".join(lines)


cli_vars = st.dictionaries(st.sampled_from(["app", "release", "target", "hosts", "x", "dir", "1x"]),
                           st.one_of(st.text(max_size=12), st.sampled_from(["[a, b]", "{a: 1}", "[", "3"])),
                           max_size=2)


class _Hang(Exception):
    pass


@contextlib.contextmanager
def no_hang(seconds=30):
    """Fail, rather than wait forever, if the body takes longer than seconds."""
    def alarm(signum, frame):
        raise _Hang(f"still running after {seconds}s")
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@FUZZ
@given(text=mutated_playbooks(), variables=cli_vars)
def test_cli_survives_mutated_playbooks(tmp_path, text, variables):
    book = tmp_path / "book.yml"
    book.write_text(text)
    argv = ["-dry-run", "-playbook", str(book)]
    for name, value in variables.items():
        argv += ["-var", f"{name}={value}"]
    err = io.StringIO()
    with no_hang(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = gxo.main(argv)
    lines = err.getvalue().split("\n")
    assert code in (0, 1, 2) and "Traceback" not in err.getvalue(), err.getvalue()[-3000:]
    if code == 2:       # one line, then the usage for a usage error
        assert lines[0].startswith("gxo: ") and (len(lines) == 2 or lines[2] == "usage: gxo "
                                                 "-playbook FILE [flags]"), err.getvalue()[-3000:]


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutated_playbooks())
def test_cli_process_survives_mutated_playbooks(tmp_path, text):
    book = tmp_path / "book.yml"
    book.write_text(text)
    r = subprocess.run([sys.executable, str(ROOT / "gxo.py"), "-dry-run", "-playbook", str(book)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode in (0, 1, 2) and "Traceback" not in r.stderr, r.stderr[-3000:]


@pytest.mark.parametrize("name", sorted(BOOKS))
def test_example_playbooks_load(name):
    gxo.load_playbook(ROOT / "playbooks" / name)
