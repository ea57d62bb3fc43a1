"""Tests of gxo's template language (README.md, A playbook: Templates).

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

# Cases where Go (without Sprig) knows no such function, and gxo has Sprig's.
OUR_FUNCTIONS = {"parse_unknown_function_in_pipeline": "X"}


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
    if case["id"] in OUR_FUNCTIONS:
        assert gxo.render(case["template"], data) == OUR_FUNCTIONS[case["id"]]
    elif expect["ok"]:
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


def test_index_with_string_keys_is_a_path():
    text = '<< index ._gxo.tasks "a.b" "status" >><< (index .m "x.y").z >><< index .l 0 >>'
    assert gxo.compile_template(text).paths == {
        ("_gxo", "tasks"), ("_gxo", "tasks", "a.b", "status"),
        ("m",), ("m", "x.y"), ("m", "x.y", "z"), ("l",)}
    assert gxo.template_variables(text) == {
        "_gxo.tasks", "_gxo.tasks.a.b.status", "m", "m.x.y", "m.x.y.z", "l"}


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


# ---------------------------------------------------------------- functions

FUNC_DATA = {"l": ["a", None, 1, 2.5, [1]], "m": {"b": 1, "a": "<x>"}, "e": "", "z": 0,
             "s": " \t hi \n", "f": 1e6, "inf": float("inf"), "obj": object(),
             "j": '{"a": [1, 2.5, null, true], "n": 12345678}'}


@pytest.mark.parametrize("text, out", [
    # Go's builtins
    ('<< html "<a href=\\"x\\">Tom & Jerry\'s</a>" >>',
     "&lt;a href=&#34;x&#34;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;"),
    ("<< html 1 2 >><< html >>", "1 2"),
    ("<< .m.a | html >>", "&lt;x&gt;"),
    ('<< js "a\\"b\'c\\\\<>&=\\n\\u2028é" >>',
     "a\\\"b\\'c\\\\\\u003C\\u003E\\u0026\\u003D\\u000A\\u2028é"),
    ('<< urlquery "a b&c=d/é~._-" >>', "a+b%26c%3Dd%2F%C3%A9~._-"),
    ('<< urlquery "q" 1 >>', "q1"),
    ('<< printf "%T|%T|%T|%T|%T|%T|%T" 1 "s" 1.5 true .l .m nil >>',
     "int|string|float64|bool|[]interface {}|map[string]interface {}|<nil>"),
    ('<< printf "[%8T]" 1 >>', "[     int]"),
    # Sprig's: default treats nil, "", 0, false and empty lists and maps as unset
    ('<< .e | default "x" >>|<< .z | default 5 >>|<< default "x" .s >>|<< default "x" >>',
     "x|5| \t hi \n|x"),
    ('<< default "d" .l >>|<< default "d" (slice .l 0 0) >>|<< default "d" false >>',
     '["a",null,1,2.5,[1]]|d|d'),
    ('<< default "d" nil >>', "d"),
    ('<< splitList "," "a,b,,c" >>|<< splitList "," "" >>|<< splitList "" "ab" >>',
     '["a","b","","c"]|[""]|["a","b"]'),
    ('<< "a:b:c" | splitList ":" | join "-" >>', "a-b-c"),
    ('<< join ", " .l >>|<< join "," "one" >>|<< join "," nil >>', "a, 1, 2.5, [1]|one|"),
    ("[<< trim .s >>]", "[hi]"),
    ('[<< trim "\\x1f x\\u00a0" >>]', "[\x1f x]"),          # Go's spaces, not Python's
    ('<< upper "straße" >> << lower "ΣΑΣ İ" >> << "MiXed" | lower >>',
     "STRAßE σασ i mixed"),
    ('<< replace "a" "o" "banana" >>|<< "a-b" | replace "-" "" >>', "bonono|ab"),
    ('<< contains "cat" "concat" >> << "catch" | contains "dog" >> << hasPrefix "ca" "cat" >> '
     '<< "cat" | hasSuffix "at" >> << hasSuffix "x" "cat" >>', "true false true true false"),
    ("<< toJson .m >>", '{"a":"\\u003cx\\u003e","b":1}'),
    ("<< toJson .f >> << toJson 3.0 >> << toJson 1e-7 >> << toJson 1e21 >> << toJson -0.5 >> "
     "<< toJson 1.5e20 >> << toJson 1e-5 >>",
     "1000000 3 1e-7 1e+21 -0.5 150000000000000000000 0.00001"),
    ("<< toJson .l >> << toJson nil >> << toJson true >> << .e | toJson >>",
     '["a",null,1,2.5,[1]] null true ""'),
    ("<< $d := fromJson .j >><< $d.n >> << index $d.a 1 >> << len $d.a >> << toJson $d >>",
     '12345678 2.5 4 {"a":[1,2.5,null,true],"n":12345678}'),
    ('<< add >> << add 1 >> << add 1 2 "3" 4.9 true nil >> << 5 | add 1 >>', "0 1 11 6"),
    ('<< add "0x10" "017" "1_000" "2.00" -3 >>', "1030"),
    ('<< sub 10 3 >> << 3 | sub 10 >> << sub 1.9 "5" >>', "7 7 -4"),
    ("<< add 9223372036854775807 1 >>", "-9223372036854775808"),       # int64 wraps
    ("<< if gt (add .z 1) 0 >>yes<< end >>", "yes"),
])
def test_functions(text, out):
    assert gxo.render(text, FUNC_DATA) == out


@pytest.mark.parametrize("text, where, reason", [
    ("<< upper 1 >>", (1, 4), "upper: the argument must be a string, not an int"),
    ("<< .z | trim >>", (1, 9), "trim: the argument must be a string, not an int"),
    ('<< join 1 .l >>', (1, 4), "join: the argument must be a string, not an int"),
    ('<< contains "a" .l >>', (1, 4), "contains: the argument must be a string, not a list"),
    ('<< add 1 "abc" >>', (1, 4), "add: expected a number, got the string 'abc'"),
    ("<< sub .l 1 >>", (1, 4), "sub: expected a number, got a list"),
    ('<< add "3." >>', (1, 4), "add: expected a number, got the string '3.'"),
    ('<< add "08" >>', (1, 4), "add: expected a number, got the string '08'"),
    ("<< toJson .obj >>", (1, 4), "toJson: can't encode a object as JSON"),
    ('<< fromJson "{bad" >>', (1, 4), "fromJson: invalid JSON: Expecting property name "
     "enclosed in double quotes: line 1 column 2 (char 1)"),
    ('<< fromJson "NaN" >>', (1, 4), "fromJson: invalid JSON: NaN is not JSON"),
    ("<< .e >>\n  << toJson .inf >>", (2, 6), "toJson: can't encode +Inf as JSON"),
    ("<< sub 1 >>", (1, 4), "wrong number of arguments for 'sub': want 2, got 1"),
    ("<< default >>", (1, 4), "wrong number of arguments for 'default': want at least 1, got 0"),
    ("<< splitList nil \"a\" >>", (1, 14), "'splitList' can't take nil as an argument"),
])
def test_function_errors(text, where, reason):
    with pytest.raises(gxo.TemplateRenderError) as info:
        gxo.render(text, FUNC_DATA)
    assert ((info.value.line, info.value.col), info.value.reason) == (where, reason)


EXEC, PARSE = gxo.TemplateRenderError, gxo.TemplateSyntaxError


@pytest.mark.parametrize("text, error, reason", [
    # Go: a map's key must have the map's key type (index of a missing key is nil).
    ("<< index .m 1 >>", EXEC, "index: can't use an int as a key of a map of strings"),
    ("<< index .m .n >>", EXEC, "index: can't use nil as a key of a map of strings"),
    ("<< index .e true >>", EXEC, "index: can't use a bool as a key of a map of strings"),
    # Go: an int beyond uint64 (or below int64) does not parse; one beyond int64 fails when run.
    ("<< 99999999999999999999 >>", PARSE, "integer overflow: 99999999999999999999"),
    ("<< -9223372036854775809 >>", PARSE, "integer overflow: -9223372036854775809"),
    ("<< 0x1FFFFFFFFFFFFFFFF >>", PARSE, "integer overflow: 0x1FFFFFFFFFFFFFFFF"),
    ("<< +9223372036854775808 >>", PARSE, "integer overflow: +9223372036854775808"),
    ("<< 9223372036854775808 >>", EXEC, "9223372036854775808 overflows int"),
    ("<< len 18446744073709551615 >>", EXEC, "18446744073709551615 overflows int"),
    ("<< 1e400 >>", PARSE, "bad number syntax: '1e400'"),
    ("<< 0x1p2000 >>", PARSE, "bad number syntax: '0x1p2000'"),
])
def test_go_parity_index_key_type_and_int_overflow(text, error, reason):
    with pytest.raises(error) as info:
        gxo.render(text, {"m": {"a": 1}, "e": {}, "n": None})
    assert type(info.value) is error and info.value.reason == reason


def test_index_keeps_other_key_types_and_limits():
    data = {"k": {1: "one", "x": "ex"}, "m": {"a": 1}, "l": [1]}
    assert gxo.render('<< index .k 1 >> << index .k "x" >> << index .m "zz" >>', data) == "one ex "
    with pytest.raises(gxo.TemplateRenderError, match="index: can't use a list as a map key"):
        gxo.render("<< index .k .l >>", data)
    assert gxo.render("<< 9223372036854775807 >> << -9223372036854775808 >>", {}) == \
        "9223372036854775807 -9223372036854775808"


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
    ("<< .a | uper >>", {}, gxo.TemplateSyntaxError, (1, 9),
     "unknown function 'uper' (did you mean 'upper'?)"),
    ("a << else >>", {}, gxo.TemplateSyntaxError, (1, 6), "unexpected '<<else>>'"),
    ("<< if 1 >>a<< else >>b<< else >>c<< end >>", {}, gxo.TemplateSyntaxError, (1, 26),
     "unexpected second '<<else>>' in 'if'"),
    ("<< with 1 >>a<< else if 2 >>b<< end >>", {}, gxo.TemplateSyntaxError, (1, 22),
     "'else if' needs an 'if' before it, not 'with'"),
    ("<< range $a, $b, $c := .x >><< end >>", {}, gxo.TemplateSyntaxError, (1, 16),
     "too many variables declared in 'range'"),
    ("<< range $a, 1 >><< end >>", {}, gxo.TemplateSyntaxError, (1, 12),
     "range can only declare variables"),
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
FUNCS = st.sampled_from(sorted(gxo._TPL_FUNCS) + ["foo"])
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
