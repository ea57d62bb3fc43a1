"""The record modules: records (producer), filter, collect, write_file.

Unit tests call a module's perform directly with real Channels; pipeline
tests run small playbooks through the engine; the stream-logs playbook runs
through the CLI.  Tests named test_kernel_* show kernel problems found while
writing these modules (since fixed).
"""

import gzip
import io
import json
import os
import stat
import subprocess
import sys
import threading

import pytest

import gxo
from gxo_modules.collect import Collect
from gxo_modules.filter import Filter
from gxo_modules.records import Records
from gxo_modules.write_file import WriteFile
from helpers import APP_LOG, ROOT, expected_errors, in_background


# ---------------------------------------------------------------- helpers

class Errors(list):
    """Stands in for the engine's errors sink."""

    def put(self, error):
        self.append(error)


class Done:
    """What one direct perform call gave: summary, outputs, errors, log."""

    def __init__(self, summary, outputs, errors, log):
        self.summary, self.outputs, self.errors, self.log = summary, outputs, errors, log

    @property
    def out(self):
        return self.outputs[0]


def parse(cls, params, static=False):
    """Check params as the engine does (static: before rendering)."""
    p = gxo.Params(params, static=static)
    parsed = cls.parse_params(cls, p)
    p.finish()
    return parsed


def perform(cls, params, records=None, outputs=1, dry_run=False, state=None,
            delimiters=("<<", ">>")):
    """Run one module call outside the engine, with real channels."""
    state = state if state is not None else {}
    parsed = parse(cls, params)
    input = None
    if records is not None:
        input = gxo.Channel(len(records) + 1)
        for r in records:
            input.put(r)
        input.close()
    outs = [gxo.Channel(1_000_000) for _ in range(outputs)]
    log = io.StringIO()
    ctx = gxo.TaskContext("t", gxo.Logger("DEBUG", log), dry_run, state, delimiters)
    errors = Errors()
    summary = cls().perform(ctx, parsed, state, input, outs, errors)
    for o in outs:
        o.close()
    return Done(summary, [list(o) for o in outs], errors, log.getvalue())


def param_error(cls, params, static=False):
    with pytest.raises(gxo.ParamError) as e:
        parse(cls, params, static)
    return str(e.value)


def load_error(load, text):
    with pytest.raises(gxo.PlaybookError) as e:
        load(text)
    return str(e.value)


# ---------------------------------------------------------------- records

def test_records_items_wraps_scalars_and_keeps_mappings():
    d = perform(Records, {"items": [{"host": "a", "port": 22}, "b", 3, [1, 2], None]})
    assert d.out == [{"host": "a", "port": 22}, {"value": "b"}, {"value": 3},
                     {"value": [1, 2]}, {"value": None}]
    assert d.summary == {"count": 5}


def test_records_range_count_and_bounds():
    assert [r["value"] for r in perform(Records, {"range": 4}).out] == [0, 1, 2, 3]
    assert perform(Records, {"range": 0}).out == []
    d = perform(Records, {"range": {"start": 10, "stop": 0, "step": -3}})
    assert [r["value"] for r in d.out] == [10, 7, 4, 1]
    assert d.summary == {"count": 4}
    assert [r["value"] for r in perform(Records, {"range": {"stop": "3"}}).out] == [0, 1, 2]
    assert [r["value"] for r in perform(Records, {"range": "2"}).out] == [0, 1]


def test_records_fan_out_gives_every_output_every_record():
    d = perform(Records, {"range": 3}, outputs=2)
    assert d.outputs[0] == d.outputs[1] == [{"value": 0}, {"value": 1}, {"value": 2}]
    d = perform(Records, {"items": ["x", "y"]}, outputs=3)
    assert all(o == [{"value": "x"}, {"value": "y"}] for o in d.outputs)


def test_records_without_consumers_counts_and_warns():
    d = perform(Records, {"range": 5}, outputs=0)
    assert d.summary == {"count": 5}
    assert "no task has 'stream_input: t'" in d.log


def test_records_file_lines(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"first\r\nsecond\n\nlast without newline")
    d = perform(Records, {"file": str(path)})
    assert d.out == [{"line": "first", "number": 1}, {"line": "second", "number": 2},
                     {"line": "", "number": 3}, {"line": "last without newline", "number": 4}]
    assert d.summary == {"count": 4}
    assert perform(Records, {"file": str(path), "format": "lines"}).summary == {"count": 4}


def test_records_file_lines_tolerates_bad_utf8(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"ok\nbad \xff byte\n")
    assert perform(Records, {"file": str(path)}).out[1]["line"] == "bad \ufffd byte"


def test_records_file_json_bad_lines_are_record_errors(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n'
                    '\n'                            # blank: skipped, not an error
                    '{"a": \n'                      # broken
                    '[1, 2]\n'                      # not an object
                    '  {"a": 2, "b": {"c": [3]}}  \n')
    d = perform(Records, {"file": str(path), "format": "json"})
    assert d.out == [{"a": 1}, {"a": 2, "b": {"c": [3]}}]
    assert d.summary == {"count": 2}
    assert len(d.errors) == 2
    assert all(isinstance(e, gxo.RecordProcessingError) for e in d.errors)
    assert d.errors[0].item == f"{path}:3" and "invalid JSON" in d.errors[0].cause
    assert d.errors[1].item == f"{path}:4" and "expected a JSON object, got list" in d.errors[1].cause


@pytest.mark.parametrize("format, content", [("lines", "a\nb\n"), ("json", '{"x": 1}\n{"x": 2}\n')])
def test_records_file_fan_out(tmp_path, format, content):
    path = tmp_path / "in"
    path.write_text(content)
    d = perform(Records, {"file": str(path), "format": format}, outputs=2)
    assert len(d.outputs[0]) == 2 and d.outputs[0] == d.outputs[1]


def test_records_file_gzip(tmp_path):
    path = tmp_path / "in.log.gz"
    with gzip.open(path, "wt") as f:
        f.write("one\ntwo\n")
    assert [r["line"] for r in perform(Records, {"file": str(path)}).out] == ["one", "two"]


def test_records_missing_file_fails_naming_it(tmp_path):
    with pytest.raises(gxo.TaskError, match=r"cannot read .*nope\.txt: No such file"):
        perform(Records, {"file": str(tmp_path / "nope.txt")})
    with pytest.raises(gxo.TaskError, match="is a directory"):
        perform(Records, {"file": str(tmp_path)})


def test_records_truncated_gzip_fails(tmp_path):
    path = tmp_path / "cut.gz"
    data = gzip.compress(b"line\n" * 10000)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(gxo.TaskError, match="error reading"):
        perform(Records, {"file": str(path)})


def test_records_file_is_streamed_lazily(tmp_path):
    """The first line is sent before the file ends (a FIFO never ends until closed)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    out = gxo.Channel(10)
    ctx = gxo.TaskContext("t", gxo.Logger("ERROR", io.StringIO()))
    producer = in_background(Records().perform, ctx, parse(Records, {"file": str(fifo)}), {},
                             None, [out], Errors())
    guard = threading.Timer(10, out.abort, ("no record before end of file: not lazy",))
    guard.start()
    try:
        with open(fifo, "w") as w:
            w.write("first\n")
            w.flush()
            it = iter(out)
            assert next(it) == {"line": "first", "number": 1}
            w.write("second\n")
    finally:
        guard.cancel()
    summary = producer.result(10)
    out.close()
    assert list(it) == [{"line": "second", "number": 2}]
    assert summary == {"count": 2}


def test_records_rejects_stream_input():
    with pytest.raises(gxo.TaskError, match="producer"):
        perform(Records, {"range": 1}, records=[{"a": 1}])


@pytest.mark.parametrize("params, expect", [
    ({}, "give one of 'items'"),
    ({"items": [1], "range": 3}, "param 'range': cannot be used with 'items'"),
    ({"range": 3, "file": "x"}, "param 'file': cannot be used with 'range'"),
    ({"items": [1], "format": "json"}, "param 'format': only applies to 'file'"),
    ({"file": "x", "format": "csv"}, "param 'format': expected one of lines, json"),
    ({"file": "x", "format": "jsn"}, "did you mean 'json'"),
    ({"file": " "}, "param 'file': is empty"),
    ({"items": "a,b"}, "param 'items': expected a list"),
    ({"range": -1}, "param 'range': must be at least 0"),
    ({"range": "ten"}, "param 'range': expected an integer or a mapping"),
    ({"range": True}, "param 'range': expected an integer"),
    ({"range": [1, 5]}, "param 'range': expected an integer or a mapping with start, stop, step, got a list"),
    ({"range": {"start": 1}}, "param 'range.stop': is required"),
    ({"range": {"stop": 5, "stpe": 2}}, "param 'range.stpe': unknown key"),
    ({"range": {"stop": 5, "step": 0}}, "param 'range.step': must not be 0"),
    ({"range": {"stop": 5.5}}, "param 'range.stop': expected an integer"),
    ({"range": 3, "count": 3}, "param 'count': unknown param"),
    ({"itmes": [1]}, "did you mean 'items'"),
])
def test_records_param_errors(params, expect):
    assert expect in param_error(Records, params)


def test_records_templates_pass_the_static_check():
    for params in ({"range": "<< .n >>"}, {"range": {"stop": "<< .n >>"}},
                   {"items": "<< .hosts >>"}, {"file": "<< .f >>", "format": "<< .fmt >>"}):
        parse(Records, params, static=True)


def test_records_bad_param_is_a_load_error_naming_the_param(load):
    message = load_error(load, """
        name: bad
        tasks:
          - name: src
            type: records
            params: {range: -5}
    """)
    assert "task 'src'" in message and "params.range" in message and "at least 0" in message
    message = load_error(load, """
        name: bad
        tasks:
          - name: src
            type: records
            params: {items: [1], file: x.txt}
    """)
    assert "params.file" in message and "cannot be used with 'items'" in message
    message = load_error(load, """
        name: bad
        tasks:
          - name: src
            type: records
    """)
    assert "task 'src'" in message and "give one of 'items'" in message


# ---------------------------------------------------------------- filter

LEVELS = [{"level": "INFO", "n": 1}, {"level": "ERROR", "n": 2}, {"level": "WARN", "n": 3},
          {"level": "ERROR", "n": 4}]


def test_filter_where_keeps_matching_records_unchanged():
    d = perform(Filter, {"where": '<< eq .level "ERROR" >>'}, LEVELS)
    assert d.out == [LEVELS[1], LEVELS[3]]
    assert d.summary == {"count": 2, "dropped": 2, "seen": 4}
    assert d.errors == []


def test_filter_where_sees_record_fields_on_top_of_state():
    state = {"wanted": "WARN", "level": "shadowed by the record"}
    d = perform(Filter, {"where": "<< eq .level .wanted >>"}, LEVELS, state=state)
    assert d.out == [LEVELS[2]]


def test_filter_where_the_record_is_the_dot():
    records = [{"a": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}]
    d = perform(Filter, {"where": "<< eq (len .) 2 >>"}, records, state={"x": 1, "y": 2})
    assert d.out == [records[1]]
    d = perform(Filter, {"where": '<< index . "b" >>'}, records[1:])
    assert d.out == records[1:]


def test_filter_where_reads_a_registered_value(run):
    """Reading a registered value works once the filter waits for its task
    (depends_on: see test_kernel_where_reading_a_registered_value_waits_for_its_task)."""
    r = run("""
        name: threshold
        tasks:
          - name: limits
            type: exec
            params: {command: echo, args: ["3"]}
            register: limits
          - name: src
            type: records
            params: {range: 6}
          - name: big
            type: filter
            stream_input: src
            depends_on: [limits]
            params: {where: '<< gt .value .limits.exit_code >>'}
            register: big
          - name: by_status
            type: filter
            stream_input: src
            depends_on: [limits]
            params: {where: '<< eq ._gxo.tasks.limits.status "Completed" >>'}
            register: all
    """)
    assert r.ok, r.log
    assert r.state["big"]["count"] == 5          # values 1..5 (> exit code 0)
    assert r.state["all"]["count"] == 6


def test_filter_where_truthiness_of_rendered_text():
    records = [{"v": x} for x in ("yes", "no", "0", "", "false", "x", 0, 2, None)]
    d = perform(Filter, {"where": "<< .v >>"}, records)
    assert [r["v"] for r in d.out] == ["yes", "x", 2]


@pytest.mark.parametrize("where, kept", [(True, 4), ("true", 4), ("yes", 4), (1, 4),
                                         (False, 0), ("false", 0), ("off", 0), (0, 0), ("", 0)])
def test_filter_constant_where(where, kept):
    d = perform(Filter, {"where": where}, LEVELS)
    assert len(d.out) == kept
    assert d.summary == {"count": kept, "dropped": 4 - kept, "seen": 4}


def test_filter_constant_where_costs_no_template(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a constant condition must not be compiled or rendered")
    monkeypatch.setattr(gxo, "compile_template", boom)
    monkeypatch.setattr(gxo, "resolve", boom)
    assert perform(Filter, {"where": "true"}, LEVELS).summary["count"] == 4


def test_filter_compiles_the_condition_once_per_task(monkeypatch):
    calls = []
    real = gxo.compile_template

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(gxo, "compile_template", counting)
    perform(Filter, {"where": '<< eq .level "ERROR" >>'}, LEVELS * 50)
    assert len(calls) == 1


def test_filter_record_that_cannot_be_rendered_is_a_record_error():
    records = [{"level": "ERROR"}, {"msg": "no level here"}, {"level": "INFO"}]
    d = perform(Filter, {"where": '<< eq .level "ERROR" >>'}, records)
    assert d.out == [{"level": "ERROR"}]
    assert len(d.errors) == 1
    error = d.errors[0]
    assert isinstance(error, gxo.RecordProcessingError) and error.task == "t"
    assert "no level here" in error.item and "where:" in error.cause
    assert d.summary == {"count": 1, "dropped": 1, "seen": 3}


def test_filter_match_searches_a_field():
    lines = [{"line": "2024 INFO ok"}, {"line": "2024 ERROR db down"}, {"line": "FATAL x"}]
    d = perform(Filter, {"match": r"\b(ERROR|FATAL)\b"}, lines)
    assert d.out == lines[1:]
    assert d.summary == {"count": 2, "dropped": 1, "seen": 3}
    d = perform(Filter, {"match": "^5", "field": "status"},
                [{"status": 502}, {"status": 200}, {"status": "503"}, {"nostatus": 1}])
    assert d.out == [{"status": 502}, {"status": "503"}]
    assert len(d.errors) == 1 and "no field 'status'" in d.errors[0].cause


def test_filter_match_and_where_must_both_hold():
    records = [{"line": "ERROR a", "n": 1}, {"line": "ERROR b", "n": 2}, {"line": "INFO", "n": 3},
               {"n": 4}]
    d = perform(Filter, {"match": "ERROR", "where": "<< eq .n 2 >>"}, records)
    assert d.out == [records[1]]
    assert d.summary == {"count": 1, "dropped": 2, "seen": 4}
    assert len(d.errors) == 1


def test_filter_without_consumers_counts():
    d = perform(Filter, {"where": '<< eq .level "ERROR" >>'}, LEVELS, outputs=0)
    assert d.summary == {"count": 2, "dropped": 2, "seen": 4}
    assert perform(Filter, {"where": True}, LEVELS, outputs=0).summary["count"] == 4
    assert perform(Filter, {"match": "E"}, [{"line": "E"}], outputs=0).summary["count"] == 1


def test_filter_fan_out():
    d = perform(Filter, {"where": '<< eq .level "ERROR" >>'}, LEVELS, outputs=2)
    assert d.outputs[0] == d.outputs[1] == [LEVELS[1], LEVELS[3]]
    d = perform(Filter, {"where": True}, LEVELS, outputs=2)
    assert d.outputs[0] == d.outputs[1] == LEVELS


def test_filter_custom_delimiters():
    d = perform(Filter, {"where": '{{ eq .level "WARN" }}'}, LEVELS, delimiters=("{{", "}}"))
    assert d.out == [LEVELS[2]]


def test_filter_needs_stream_input():
    with pytest.raises(gxo.TaskError, match="filter needs stream_input"):
        perform(Filter, {"where": True})


@pytest.mark.parametrize("params, expect", [
    ({}, "param 'where': is required"),
    ({"where": {"a": 1}}, "param 'where': expected a condition"),
    ({"where": [1]}, "param 'where': expected a condition"),
    ({"match": "(unclosed"}, "param 'match': invalid regular expression"),
    ({"where": True, "field": "x"}, "param 'field': only applies to 'match'"),
    ({"match": "x", "field": ["a"]}, "param 'field': expected a string"),
    ({"wher": True}, "did you mean 'where'"),
    ({"wher": True}, "param 'wher': unknown param"),
])
def test_filter_param_errors(params, expect):
    assert expect in param_error(Filter, params)


def test_filter_where_is_rendered_per_record_not_before(run):
    """'where' names record fields; the loader must not call them undefined."""
    r = run("""
        name: ok
        tasks:
          - name: src
            type: records
            params: {items: [{kind: a}, {kind: b}]}
          - name: keep
            type: filter
            stream_input: src
            params: {where: '<< eq .kind "b" >>'}
            register: kept
    """)
    assert r.ok, r.log
    assert r.state["kept"] == {"count": 1, "dropped": 1, "seen": 2}


def test_filter_bad_where_syntax_is_a_load_error(load):
    message = load_error(load, """
        name: bad
        tasks:
          - name: src
            type: records
            params: {range: 3}
          - name: keep
            type: filter
            stream_input: src
            params: {where: '<< eq .value 1 '}
    """)
    assert "task 'keep'" in message and "params.where" in message


# ---------------------------------------------------------------- collect

def test_collect_keeps_up_to_limit_and_counts_all():
    records = [{"n": i} for i in range(10)]
    d = perform(Collect, {"limit": 3}, records, outputs=0)
    assert d.summary == {"records": records[:3], "count": 10, "truncated": True}
    d = perform(Collect, {}, records, outputs=0)
    assert d.summary == {"records": records, "count": 10, "truncated": False}
    d = perform(Collect, {"limit": 10}, records, outputs=0)
    assert d.summary == {"records": records, "count": 10, "truncated": False}
    d = perform(Collect, {"limit": 0}, records, outputs=0)
    assert d.summary == {"records": [], "count": 10, "truncated": True}
    d = perform(Collect, {"limit": 0}, [], outputs=0)
    assert d.summary == {"records": [], "count": 0, "truncated": False}


def test_collect_default_limit_is_1000():
    d = perform(Collect, {}, [{"n": i} for i in range(1005)], outputs=0)
    assert len(d.summary["records"]) == 1000 and d.summary["count"] == 1005
    assert d.summary["truncated"] is True


@pytest.mark.parametrize("outputs", [1, 2])
def test_collect_passes_records_through(outputs):
    records = [{"n": i, "tags": ["x"]} for i in range(5)]
    d = perform(Collect, {"limit": 2}, records, outputs=outputs)
    assert all(o == records for o in d.outputs)
    assert d.summary == {"records": records[:2], "count": 5, "truncated": True}
    # What it keeps is its own: a consumer downstream changing a record does not change it.
    d.outputs[0][0]["tags"].append("changed")
    assert d.summary["records"][0] == {"n": 0, "tags": ["x"]}


def test_collect_needs_stream_input():
    with pytest.raises(gxo.TaskError, match="collect needs stream_input"):
        perform(Collect, {})


@pytest.mark.parametrize("params, expect", [
    ({"limit": -1}, "param 'limit': must be at least 0"),
    ({"limit": "many"}, "param 'limit': expected an integer"),
    ({"max": 3}, "param 'max': unknown param"),
])
def test_collect_param_errors(params, expect):
    assert expect in param_error(Collect, params)


# ---------------------------------------------------------------- write_file

def test_write_file_lines_of_a_field(tmp_path):
    path = tmp_path / "out.txt"
    records = [{"line": "a"}, {"line": 2}, {"line": {"k": [1]}}, {"other": 1}, {"line": None}]
    d = perform(WriteFile, {"path": str(path)}, records, outputs=0)
    assert path.read_text() == 'a\n2\n{"k":[1]}\n\n'
    assert d.summary == {"path": str(path), "count": 4}
    assert len(d.errors) == 1 and "no field 'line'" in d.errors[0].cause
    d = perform(WriteFile, {"path": str(path), "field": "n"}, [{"n": 1}, {"n": 2}], outputs=0)
    assert path.read_text() == "1\n2\n"


def test_write_file_json_lines(tmp_path):
    path = tmp_path / "out.jsonl"
    records = [{"a": 1, "s": "é"}, {"b": [1, {"c": None}]}]
    d = perform(WriteFile, {"path": str(path), "format": "json"}, records, outputs=0)
    assert [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] == records
    assert "é" in path.read_text(encoding="utf-8")
    assert d.summary["count"] == 2


def test_write_file_replaces_or_appends(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    perform(WriteFile, {"path": str(path), "append": True}, [{"line": "new"}], outputs=0)
    assert path.read_text() == "old\nnew\n"
    perform(WriteFile, {"path": str(path)}, [{"line": "only"}], outputs=0)
    assert path.read_text() == "only\n"
    perform(WriteFile, {"path": str(path)}, [], outputs=0)
    assert path.read_text() == ""
    assert os.listdir(tmp_path) == ["out.txt"]         # no temporary file left behind


def test_write_file_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    os.chmod(path, 0o640)
    perform(WriteFile, {"path": str(path)}, [{"line": "x"}], outputs=0)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_write_file_dry_run_writes_nothing_but_reads_everything(tmp_path):
    path = tmp_path / "out.txt"
    d = perform(WriteFile, {"path": str(path)}, [{"line": "a"}, {"line": "b"}], dry_run=True)
    assert not path.exists()
    assert d.summary == {"path": str(path), "count": 2, "dry_run": True}
    assert "[Dry Run] Would write 2 records to" in d.log
    assert d.out == [{"line": "a"}, {"line": "b"}]     # still passes records on


def test_write_file_tees_records_to_consumers(tmp_path):
    records = [{"line": "a"}, {"n": 1}]
    d = perform(WriteFile, {"path": str(tmp_path / "x")}, records, outputs=2)
    assert d.outputs[0] == d.outputs[1] == records
    d = perform(WriteFile, {"path": str(tmp_path / "y"), "format": "json"}, records)
    assert d.out == records


def test_write_file_missing_directory_fails_naming_the_path(tmp_path):
    path = tmp_path / "no" / "such" / "out.txt"
    with pytest.raises(gxo.TaskError, match=f"cannot write {path}: No such file"):
        perform(WriteFile, {"path": str(path)}, [{"line": "a"}])


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_write_file_error_while_writing_fails_the_task():
    with pytest.raises(gxo.TaskError, match="cannot write /dev/full: No space left"):
        perform(WriteFile, {"path": "/dev/full", "append": True},
                [{"line": "x" * 1000} for _ in range(200)])


def test_write_file_needs_stream_input(tmp_path):
    with pytest.raises(gxo.TaskError, match="write_file needs stream_input"):
        perform(WriteFile, {"path": str(tmp_path / "x")})


@pytest.mark.parametrize("params, expect", [
    ({}, "param 'path': is required"),
    ({"path": ""}, "param 'path': is empty"),
    ({"path": "x", "format": "csv"}, "param 'format': expected one of lines, json"),
    ({"path": "x", "format": "json", "field": "a"}, "param 'field': only applies to format: lines"),
    ({"path": "x", "append": "sometimes"}, "param 'append': expected true or false"),
    ({"path": "x", "mode": "a"}, "param 'mode': unknown param"),
    ({"pth": "x"}, "param 'pth': unknown param (did you mean 'path'?)"),
])
def test_write_file_param_errors(params, expect):
    assert expect in param_error(WriteFile, params)


# ---------------------------------------------------------------- pipelines through the engine

def test_pipeline_records_filter_collect_register(run):
    r = run("""
        name: pipeline
        vars: {wanted: 3}
        tasks:
          - name: numbers
            type: records
            params: {range: 1000}
          - name: some
            type: filter
            stream_input: numbers
            params: {where: '<< eq .value .wanted >>'}
          - name: gather
            type: collect
            stream_input: some
            register: got
          - name: report
            type: exec
            params: {command: echo, args: ["found << .got.count >>: << .got.records >>"]}
            register: report
    """)
    assert r.ok, r.log
    assert r.state["got"] == {"records": [{"value": 3}], "count": 1, "truncated": False}
    assert r.state["report"]["stdout"] == 'found 1: [{"value":3}]'
    assert r.tasks["numbers"].summary == {"count": 1000}
    assert r.tasks["some"].summary == {"count": 1, "dropped": 999, "seen": 1000}


def test_pipeline_fan_out_to_two_consumers(run, tmp_path):
    out = tmp_path / "values.txt"
    r = run(f"""
        name: fan-out
        tasks:
          - name: src
            type: records
            params: {{items: [a, b, c]}}
          - name: keep
            type: collect
            stream_input: src
            register: kept
          - name: save
            type: write_file
            stream_input: src
            params: {{path: "{out}", field: value}}
            register: saved
    """)
    assert r.ok, r.log
    assert r.state["kept"]["records"] == [{"value": "a"}, {"value": "b"}, {"value": "c"}]
    assert out.read_text() == "a\nb\nc\n"
    assert r.state["saved"] == {"path": str(out), "count": 3}


def test_pipeline_file_to_file_with_record_errors(run, tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"user": "ann", "ok": true}\nnot json\n{"user": "bob", "ok": false}\n'
                   '{"nouser": 1}\n{"user": "cy", "ok": true}\n')
    r = run(f"""
        name: file-to-file
        tasks:
          - name: read
            type: records
            params: {{file: "{src}", format: json}}
          - name: good
            type: filter
            stream_input: read
            params: {{where: "<< .ok >>"}}
          - name: names
            type: write_file
            stream_input: good
            params: {{path: "{dst}", field: user}}
            register: written
    """)
    assert r.ok, r.log
    assert dst.read_text() == "ann\ncy\n"
    assert r.tasks["read"].record_errors == 1         # "not json"
    assert r.tasks["good"].record_errors == 1         # {"nouser": 1} has no .ok
    assert r.tasks["names"].record_errors == 0
    assert "[RECORD_ERROR] task=read" in r.log and "[RECORD_ERROR] task=good" in r.log


def test_pipeline_record_errors_counted_per_task(run):
    r = run("""
        name: errors
        tasks:
          - name: src
            type: records
            params: {items: [{level: ERROR}, {msg: x}, {level: INFO}, {msg: y}]}
          - name: keep
            type: filter
            stream_input: src
            params: {where: '<< eq .level "ERROR" >>'}
          - name: all
            type: collect
            stream_input: keep
            register: got
    """)
    assert r.ok, r.log
    assert r.tasks["keep"].record_errors == 2
    assert r.tasks["src"].record_errors == 0
    assert r.state["got"]["count"] == 1
    assert r.log.count("[RECORD_ERROR] task=keep") == 2
    assert "2 record errors" in r.log


def test_pipeline_items_from_a_template_and_range_from_a_var(run):
    r = run("""
        name: templated
        vars:
          hosts: [{name: web1}, {name: web2}]
          n: 4
        tasks:
          - name: hosts
            type: records
            params: {items: "<< .hosts >>"}
          - name: got_hosts
            type: collect
            stream_input: hosts
            register: h
          - name: numbers
            type: records
            params: {range: {start: 1, stop: "<< .n >>"}}
          - name: got_numbers
            type: collect
            stream_input: numbers
            register: n_out
    """)
    assert r.ok, r.log
    assert r.state["h"]["records"] == [{"name": "web1"}, {"name": "web2"}]
    assert [x["value"] for x in r.state["n_out"]["records"]] == [1, 2, 3]


def test_pipeline_bad_rendered_param_fails_the_task(run):
    r = run("""
        name: bad
        vars: {n: -2}
        tasks:
          - name: src
            type: records
            params: {range: "<< .n >>"}
          - name: all
            type: collect
            stream_input: src
    """)
    assert not r.ok
    assert r.status("src") == "Failed"
    assert "param 'range': must be at least 0" in r.tasks["src"].reason
    assert r.status("all") == "Failed"
    assert "stream producer src failed" in r.tasks["all"].reason


def test_pipeline_records_from_params_are_plain_for_consumers(run):
    """Items come from read-only params; consumers get records they may change."""
    r = run("""
        name: mutable
        tasks:
          - name: src
            type: records
            params: {items: [{tags: [a]}, x]}
          - name: change
            type: mutate
            stream_input: src
            register: changed
    """)
    assert r.ok, r.log
    assert r.state["changed"] == [{"tags": ["a", "changed"], "seen": True},
                                  {"value": "x", "seen": True}]


def test_pipeline_failed_producer_leaves_old_file_untouched(run, tmp_path):
    out = tmp_path / "report.txt"
    out.write_text("previous report\n")
    r = run(f"""
        name: broken
        tasks:
          - name: src
            type: emit_then_fail
            params: {{count: 50}}
          - name: save
            type: write_file
            stream_input: src
            params: {{path: "{out}"}}
    """)
    assert not r.ok
    assert r.status("save") == "Failed"
    assert out.read_text() == "previous report\n"
    assert sorted(os.listdir(tmp_path)) == ["playbook.yml", "report.txt"]   # no temporary file


def test_pipeline_dry_run(run, tmp_path):
    out = tmp_path / "out.txt"
    r = run(f"""
        name: dry
        tasks:
          - name: src
            type: records
            params: {{range: 5}}
          - name: save
            type: write_file
            stream_input: src
            params: {{path: "{out}", field: value}}
          - name: count
            type: collect
            stream_input: save
            params: {{limit: 0}}
            register: c
    """, dry_run=True)
    assert r.ok, r.log
    assert not out.exists()
    assert r.state["c"]["count"] == 5
    assert "[Dry Run] Would write 5 records to" in r.log


def test_pipeline_long_stream_small_buffer(run):
    r = run("""
        name: long
        tasks:
          - name: src
            type: records
            params: {range: 20000}
          - name: odd
            type: filter
            stream_input: src
            params: {where: true}
          - name: all
            type: collect
            stream_input: odd
            params: {limit: 5}
            register: got
    """, channel_buffer_size=1, log_level="INFO")
    assert r.ok, r.log
    assert r.state["got"]["count"] == 20000
    assert [x["value"] for x in r.state["got"]["records"]] == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- the example playbook

PLAYBOOK, LOG = str(ROOT / "playbooks" / "stream-logs.yml"), str(APP_LOG)


def test_stream_logs_playbook_through_the_api(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))          # where mktemp puts the report
    log = io.StringIO()
    result = gxo.run_playbook(PLAYBOOK, vars={"log_file": LOG}, log_stream=log)
    assert result.ok, log.getvalue()
    expected = expected_errors()
    assert result.state["found"]["count"] == len(expected) > 0
    assert result.state["found"]["records"] == expected[:5]
    report = result.state["report"]["path"]
    assert report.startswith(str(tmp_path))
    with open(report) as f:
        assert [json.loads(x) for x in f] == expected
    assert result.tasks["read_log"].record_errors == 1    # the sample has one mangled line
    summary = result.state["summary"]
    assert summary.startswith(f"{len(expected)} ERROR records of 120 in {LOG}; report: {report}")


def test_stream_logs_playbook_cli_from_repo_root(tmp_path):
    proc = subprocess.run([sys.executable, "gxo.py", "-playbook", "playbooks/stream-logs.yml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "6 Completed, 0 Failed, 0 Skipped" in proc.stderr
    reports = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files]
    assert len(reports) == 1 and reports[0].endswith("errors.jsonl")
    with open(reports[0]) as f:
        assert len(f.readlines()) == len(expected_errors())


def test_stream_logs_playbook_cli_from_another_directory(cli, tmp_path):
    proc = cli("-playbook", PLAYBOOK, "-var", f"log_file={LOG}",
               env={"TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    # The default log file is found next to the playbook (_gxo.playbook_dir).
    proc = cli("-playbook", PLAYBOOK, env={"TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    missing = tmp_path / "missing.jsonl"
    proc = cli("-playbook", PLAYBOOK, "-var", f"log_file={missing}", env={"TMPDIR": str(tmp_path)})
    assert proc.returncode == 1
    assert f"cannot read {missing}" in proc.stderr


def test_stream_logs_playbook_dry_run(cli, tmp_path):
    proc = cli("-playbook", PLAYBOOK, "-var", f"log_file={LOG}", "-dry-run",
               env={"TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "[Dry Run] Would write 10 records to" in proc.stderr
    # Nothing was created: no report directory (mktemp did not run), no report.
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- kernel problems found on the way

def test_kernel_where_reading_a_registered_value_waits_for_its_task(run):
    """A raw param ('where') that reads a registered value must still make a state edge.

    The loader leaves raw params out of the template variables entirely, so the
    filter starts before 'threshold' has registered and every record fails to
    render ('map has no key threshold').
    """
    r = run("""
        name: raw-edge
        tasks:
          - name: threshold
            type: exec
            params: {command: sh, args: ["-c", "sleep 0.5; echo 2"]}
            register: threshold
          - name: src
            type: records
            params: {range: 5}
          - name: keep
            type: filter
            stream_input: src
            params: {where: '<< eq .threshold.exit_code .value >>'}
            register: kept
    """)
    assert r.ok, r.log
    assert r.tasks["keep"].record_errors == 0, "the filter ran before 'threshold' registered"
    assert r.state["kept"]["count"] == 1


def test_fan_out_consumer_never_sees_another_consumers_change(run):
    """A consumer can never see another consumer's change to a record.

    Regression: when consumer 1 got the producer's own dict and the others a
    copy made at put time, consumer 1 could change the record before the
    producer had put it on the other channels (forced here with an event; in
    real life any thread switch) and they saw the change.
    """
    r = run("""
        name: fan-out-isolation
        tasks:
          - name: src
            type: handoff
          - name: changer
            type: mutate
            stream_input: src
          - name: watcher
            type: collect
            stream_input: src
            register: seen
    """)
    assert r.ok, r.log
    assert r.state["seen"]["records"] == [{"value": "original"}]


def test_kernel_timeout_interrupts_a_consumer_waiting_for_records(run):
    """'timeout' must reach a task blocked on its input channel.

    The timeout timer only sets ctx.cancelled; nothing aborts the task's
    channels, so a consumer asleep in 'for record in input' (or a producer
    asleep in a full put) sleeps on, and when the stream finally ends the
    module returns and the task is reported Completed, long after its timeout.
    """
    r = run("""
        name: timeout
        tasks:
          - name: slow
            type: exec
            params: {command: sleep, args: ["60"]}      # stopped once keep stops reading
          - name: keep
            type: filter
            stream_input: slow
            timeout: 300ms
            params: {where: true}
            ignore_errors: true
    """)
    keep = r.tasks["keep"]
    assert keep.status == "Failed" and "timed out" in keep.reason, (keep.status, keep.reason)
    assert keep.duration < 2.0


# ---------------------------------------------------------------- write_file: what it refuses

@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_write_file_never_replaces_what_is_not_a_regular_file(tmp_path, kind):
    path, target = tmp_path / "out", tmp_path / "target.txt"
    target.write_text("keep\n")
    {"symlink": lambda: path.symlink_to(target), "fifo": lambda: os.mkfifo(path),
     "directory": lambda: path.mkdir()}[kind]()
    with pytest.raises(gxo.TaskError, match=f"cannot write {path}: it is an? "
                                            f"{'FIFO' if kind == 'fifo' else kind}, not a regular"):
        perform(WriteFile, {"path": str(path)}, [{"line": "new"}])
    assert target.read_text() == "keep\n"
    assert os.path.islink(path) if kind == "symlink" else not os.path.isfile(path)
    assert sorted(os.listdir(tmp_path)) == ["out", "target.txt"]      # no temporary file


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_write_file_refuses_a_device_but_appends_to_it():
    with pytest.raises(gxo.TaskError, match="cannot write /dev/null: it is a device"):
        perform(WriteFile, {"path": "/dev/null"}, [{"line": "x"}])
    assert perform(WriteFile, {"path": "/dev/null", "append": True}, [{"line": "x"}]).summary["count"] == 1


def test_write_file_append_follows_a_symlink(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("old\n")
    (tmp_path / "link").symlink_to(target)
    perform(WriteFile, {"path": str(tmp_path / "link"), "append": True}, [{"line": "new"}])
    assert target.read_text() == "old\nnew\n"


def test_write_file_nul_in_path_is_a_param_error():
    assert "param 'path': contains a NUL byte" in param_error(WriteFile, {"path": "a\0b"})


def test_write_file_surrogate_escaped_text(tmp_path):
    # What a file read with surrogateescape gives goes back as the bytes it was read from;
    # a lone surrogate that stands for no byte is a record error; JSON escapes both.
    records = [{"line": "a\udcff"}, {"line": "\ud800"}, {"line": "z"}]
    path = tmp_path / "out.txt"
    d = perform(WriteFile, {"path": str(path)}, records)
    assert path.read_bytes() == b"a\xff\nz\n" and d.summary["count"] == 2
    assert len(d.errors) == 1 and "'line' is not valid UTF-8 text" in d.errors[0].cause
    assert d.out == records
    d = perform(WriteFile, {"path": str(path), "format": "json"}, records)
    assert path.read_text() == '{"line":"a\\udcff"}\n{"line":"\\ud800"}\n{"line":"z"}\n'
    assert [json.loads(x) for x in path.read_text().splitlines()] == records


def test_cli_write_file_onto_a_symlink_fails_and_keeps_it(cli, tmp_path):
    (tmp_path / "real.txt").write_text("keep\n")
    (tmp_path / "out.txt").symlink_to(tmp_path / "real.txt")
    r = cli(playbook="""
        name: w
        tasks:
          - {name: src, type: records, params: {items: [a, b]}}
          - {name: w, type: write_file, stream_input: src, params: {path: out.txt, field: value}}
    """)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "[w] Failed" in r.stderr and "cannot write out.txt: it is a symlink" in r.stderr
    assert (tmp_path / "out.txt").is_symlink() and (tmp_path / "real.txt").read_text() == "keep\n"
