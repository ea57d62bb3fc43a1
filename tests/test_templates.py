"""Tests of gxo's template language (DESIGN.md section 4).

The conformance cases in tests/conformance/templates.jsonl hold Go 1.19
text/template's own outputs; the rest tests the Python API around them.
"""

import json
import re
import threading
from collections import ChainMap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings, strategies as st

import gxo

CASES = [json.loads(line) for line in
         (Path(__file__).parent / "conformance" / "templates.jsonl").open(encoding="utf-8")]

# Cases tagged go_specific_format: what gxo prints where Go prints a list,
# a map or nil its own way (lists and maps are compact JSON, nil is empty).
OUR_FORMAT = {
    "dollar_prints_whole_map": '{"b":"x","a":1}',
    "and_returns_list_operand": '["a","b"]',
    "or_returns_map_operand": '{"k":"v"}',
    "index_map_missing_key_zero_value": "",
    "index_map_null_value": "",
    "slice_list_print": '["b","c"]',
    "print_nil_literal": "",
    "print_list": '["a","b","c"]',
    "print_map": '{"b":2,"a":1}',
    "printf_v_map": '{"b":2,"a":1}',
    "null_field": "",
    "null_empty_value": "",
    "null_list_element": "[a][][b]",
    "null_nested_field": "",
    "null_variable": "",
    "print_list_strings": '["a","b","c"]',
    "print_list_ints": "[1,2,3]",
    "print_list_nested": "[[1,2],[3]]",
    "print_list_floats": "[1.5,2.0]",
    "print_list_bools": "[true,false]",
    "print_list_strings_with_spaces": '["a b","c"]',
    "print_map_nested": '{"a":{"b":1}}',
    "print_map_empty": "{}",
    "print_map_with_null": '{"a":null}',
    "print_list_of_maps": '[{"name":"a"},{"name":"b"}]',
    "print_list_variable": '["x","y"]',
}


def test_conformance_file_is_complete():
    assert len(CASES) == 461
    assert {c["id"] for c in CASES if "go_specific_format" in c["tags"]} == set(OUR_FORMAT)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_conformance(case, monkeypatch):
    env = case.get("env", {})
    for name in set(re.findall(r'env "(\w+)"', case["template"])) | {"CONFORMANCE_UNSET_VAR"}:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    data = yaml.safe_load(case["data_yaml"]) or {}
    expect = case["expect"]
    if expect["ok"]:
        out = gxo.render(case["template"], data)
        assert out == OUR_FORMAT.get(case["id"], expect["out"])
    else:
        error = gxo.TemplateSyntaxError if expect["phase"] == "parse" else gxo.TemplateRenderError
        with pytest.raises(error) as info:
            gxo.render(case["template"], data)
        assert info.value.reason and str(info.value).startswith(f"{info.value.line}:")


# ---------------------------------------------------------------- resolve

@pytest.mark.parametrize("text, data, value", [
    ("<< .hosts >>", {"hosts": ["a", "b"]}, ["a", "b"]),
    ("  << .n >>\n", {"n": 3}, 3),
    ("<< .m >>", {"m": {"k": 1}}, {"k": 1}),
    ("<< .flag >>", {"flag": False}, False),
    ("<< .nothing >>", {"nothing": None}, None),
    ("<< len .l >>", {"l": [1, 2]}, 2),
    ("<< .a >>-<< .b >>", {"a": 1, "b": 2}, "1-2"),       # two actions: text
    ("x << .a >>", {"a": 1}, "x 1"),
    ("<< if .a >>yes<< end >>", {"a": 1}, "yes"),
    ("<< $x := .a >>", {"a": 1}, ""),                     # an assignment prints nothing
    ("no actions at all", {}, "no actions at all"),
])
def test_resolve(text, data, value):
    assert gxo.resolve(text, data) == value
    assert type(gxo.resolve(text, data)) is type(value)


def test_resolve_text_without_delimiter_is_not_parsed():
    assert gxo.resolve("<< .a", {}, ("{{", "}}")) == "<< .a"
    assert gxo.render("100% {{ not a template", {}) == "100% {{ not a template"


# ---------------------------------------------------------------- template_variables

@pytest.mark.parametrize("text, paths", [
    ("<< .x.y >> << $.a >>", {"x.y", "a"}),
    ("<< ._gxo.tasks.build.status >>", {"_gxo.tasks.build.status"}),
    ("<< . >><< $ >>", set()),
    ("<< with .a >><< .b >><< $.c >><< end >>", {"a", "a.b", "c"}),
    ("<< range .items >><< .name >><< $.prefix >><< end >>", {"items", "prefix"}),
    ("<< range $i, $e := .l >><< $e.x >><< end >>", {"l"}),
    ("<< $x := .a >><< $x.b >>", {"a", "a.b"}),
    ('<< index .m "k" >>', {"m", "m.k"}),
    ("<< if eq .env \"prod\" >><< .x >><< else >><< (.y).z >><< end >>", {"env", "x", "y", "y.z"}),
    ("<< printf \"%s\" .a | len >>", {"a"}),
    ("<< with $v := .a >><< .b >><< end >><< .c >>", {"a", "a.b", "c"}),
])
def test_template_variables(text, paths):
    assert gxo.template_variables(text) == paths
    assert gxo.compile_template(text).variables == frozenset(paths)


# ---------------------------------------------------------------- delimiters, data

def test_other_delimiters():
    assert gxo.render("{{ .a }} << .a >>", {"a": 1}, ("{{", "}}")) == "1 << .a >>"
    assert gxo.render("{{- .a -}} !", {"a": 1}, ("{{", "}}")) == "1!"
    assert gxo.template_variables("[% .x %]", ("[%", "%]")) == {"x"}
    assert gxo.resolve("{{ .l }}", {"l": [1]}, ["{{", "}}"]) == [1]


@pytest.mark.parametrize("data, out", [
    ({"a": {"x": 1}, "b": "B"}, "A1"),
    ({"a": None, "b": "B"}, "B=B"),
    ({"a": 0, "b": ""}, "none"),
])
def test_else_with(data, out):
    text = "<< with .a >>A<< .x >><< else with .b >><< . >>=<< $.b >><< else >>none<< end >>"
    assert gxo.render(text, data) == out
    assert gxo.template_variables(text) == {"a", "a.x", "b"}


def test_variables_are_lexically_scoped_and_per_render():
    t = gxo.compile_template("<< $x := .a >><< range .l >><< $x = . >><< end >><< $x >>")
    assert [t.render({"a": "none", "l": l}) for l in ([], [1, 2], [])] == ["none", "2", "none"]
    with pytest.raises(gxo.TemplateRenderError, match="'\\$y' is not set"):
        gxo.render("<< $y := $y >>", {})


def test_mapping_data_and_tuples():
    scope = ChainMap({"a": 1}, {"a": 0, "b": {"c": (1, 2)}})
    text = "<< .a >> << .b.c >> << len .b.c >> << index .b.c 1 >>"
    assert gxo.render(text, scope) == "1 [1,2] 2 2"
    assert gxo.render("<< range $k, $v := . >><< $k >>=<< $v >>;<< end >>",
                      ChainMap({"z": 1}, {"y": 2})) == "y=2;z=1;"
    assert gxo.render("<< range .t >><< . >><< end >>", {"t": ("x", "y")}) == "xy"


def test_format_value():
    values = ("s", 3, 2.0, 1e6, True, None, [1, "é"], {"b": 1, "a": None})
    assert [gxo.format_value(v) for v in values] == \
        ["s", "3", "2", "1e+06", "true", "", '[1,"é"]', '{"b":1,"a":null}']


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("text, data, error, where, reason", [
    ("<< lenght .x >>", {}, gxo.TemplateSyntaxError, (1, 4),
     "unknown function 'lenght' (did you mean 'len'?)"),
    ("<< .hsots >>", {"hosts": []}, gxo.TemplateRenderError, (1, 4),
     "map has no key 'hsots' (did you mean 'hosts'?)"),
    ("a\nb << .a", {}, gxo.TemplateSyntaxError, (2, 3), "unclosed action (missing '>>')"),
    ("x\n  << end >>", {}, gxo.TemplateSyntaxError, (2, 6), "unexpected '<<end>>'"),
    ("<< .a.b >>", {"a": "s"}, gxo.TemplateRenderError, (1, 4),
     "can't evaluate field 'b' in a string"),
    ("line 1\nline 2\n<< if true >>\n  << index >>\n<< end >>", {}, gxo.TemplateRenderError,
     (4, 6), "wrong number of arguments for 'index': want at least 1, got 0"),
    ("<< $hsot := 1 >><< $host >>", {}, gxo.TemplateSyntaxError, (1, 20),
     "undefined variable '$host' (did you mean '$hsot'?)"),
    ("<< define \"x\" >><< end >>", {}, gxo.TemplateSyntaxError, (1, 4),
     "'define' is not supported: gxo templates have no named templates"),
    ("<< if .a >>x", {"a": 1}, gxo.TemplateSyntaxError, (1, 4), "'if' has no matching '<<end>>'"),
    ("<< $x = 1 >>", {}, gxo.TemplateRenderError, (1, 4),
     "variable '$x' is assigned before it is declared (declare it with '$x := ...')"),
    ("<< html .a >>", {}, gxo.TemplateSyntaxError, (1, 4), "unknown function 'html'"),
])
def test_error_messages(text, data, error, where, reason):
    with pytest.raises(error) as info:
        gxo.render(text, data)
    e = info.value
    assert isinstance(e, gxo.TemplateError)
    assert ((e.line, e.col), e.reason) == (where, reason)
    assert str(e) == f"{e.line}:{e.col}: {e.reason}"


@pytest.mark.parametrize("text, data", [
    (123, {}),
    ("<< .a >>", None),
    ("<< printf \"%d\" (index .l 5) >>", {"l": []}),
    ("<< range . >><< end >>", "text"),
    ("<< .a.b >>", {"a": [1]}),
])
def test_only_template_errors_escape(text, data):
    with pytest.raises(gxo.TemplateError):
        gxo.render(text, data)


def test_bad_delimiters():
    with pytest.raises(gxo.TemplateSyntaxError):
        gxo.compile_template("<< .a >>", ("", ">>"))
    with pytest.raises(gxo.TemplateSyntaxError):
        gxo.render("<< .a >>", {}, None)


def test_deep_nesting_is_a_template_error():
    text = "<< " + "(" * 5000 + "1" + ")" * 5000 + " >>"
    with pytest.raises(gxo.TemplateError):
        gxo.render(text, {})


# ---------------------------------------------------------------- cache, threads

def test_cache_returns_same_object():
    t = gxo.compile_template("<< .cached >>")
    assert gxo.compile_template("<< .cached >>") is t
    assert gxo.compile_template("<< .cached >>", ("<<", ">>")) is t
    assert gxo.compile_template("<< .cached >>", ["<<", ">>"]) is t
    assert gxo.compile_template("<< .cached >>", ("{{", "}}")) is not t


def test_rendering_is_thread_safe():
    t = gxo.compile_template("<< range $i, $e := .l >><< $e >><< $.sep >><< end >>")
    failures = []

    def work(n):
        data = {"l": list(range(n)), "sep": str(n)}
        want = "".join(f"{i}{n}" for i in range(n))
        for _ in range(300):
            if t.render(data) != want:
                failures.append(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 9)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not failures


# ---------------------------------------------------------------- random templates

DATA = {"a": 1, "b": {"c": "x"}, "l": [1, "two", None, [3]], "m": {"k": "v", "n": 2},
        "n": None, "f": 1.5, "s": "héllo"}
OPERANDS = st.sampled_from([
    ".a", ".b.c", ".l", ".m", ".n", ".f", ".s", ".zz", ".a.b", "$", "$.m.k", ".", "1", "-2.5",
    '"s"', '"%d %s"', "`r`", "'x'", "true", "nil", "0x1F", "017", "(len .l)", "(.b).c", "$v"])
FUNCS = st.sampled_from(["and", "or", "not", "len", "index", "slice", "print", "printf",
                         "println", "eq", "ne", "lt", "le", "gt", "ge", "env", "foo"])
COMMANDS = OPERANDS | st.builds(lambda f, args: " ".join([f, *args]), FUNCS,
                                st.lists(OPERANDS, max_size=3))
PIPELINES = st.lists(COMMANDS, min_size=1, max_size=3).map(" | ".join)
ACTIONS = (PIPELINES.map("<< {} >>".format)
           | PIPELINES.map("<<- $v := {} ->><< $v >>".format)
           | st.text(alphabet="<>-$.|()\"'` abc019:=,/*", max_size=20).map("<<{}>>".format)
           | st.sampled_from(["<< break >>", "<< continue >>", "<< end >>", "<< else >>", "x"]))
TEMPLATES = st.recursive(ACTIONS, lambda inner: st.one_of(
    st.builds("<< if {} >>{}<< else >>{}<< end >>".format, PIPELINES, inner, inner),
    st.builds("<< range $i, $e := {} >>{}<< end >>".format, PIPELINES, inner),
    st.builds("<< with {} >>{}<< else with {} >>{}<< end >>".format, PIPELINES, inner,
              PIPELINES, inner),
    st.lists(inner, max_size=4).map("".join)), max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(TEMPLATES, st.integers(min_value=0, max_value=40),
       st.sampled_from(["", "<<", ">>", "-", ")", "'"]))
def test_random_templates_raise_only_template_errors(text, cut, noise):
    for t in (text, text[:cut] + noise + text[cut:]):
        for call in (lambda: gxo.render(t, DATA), lambda: gxo.resolve(t, DATA),
                     lambda: gxo.template_variables(t)):
            try:
                call()
            except gxo.TemplateError as e:
                assert e.reason and e.line >= 1 and e.col >= 1


@settings(max_examples=200, deadline=None)
@given(st.text().filter(lambda s: "<<" not in s and not s.endswith("<")), st.text())
def test_text_without_delimiters_renders_to_itself(before, after):
    after = after.replace("<<", "")
    assert gxo.render(before, DATA) == before
    assert gxo.render(before + '<< "" >>' + after, DATA) == before + after
