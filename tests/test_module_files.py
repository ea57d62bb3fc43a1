"""Module files: -modules-dir and $GXO_MODULES_PATH, finding gxo_modules, one kernel."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import gxo
from helpers import ROOT, write_files

TOOLS = """
import gxo

@gxo.register("hello")
class Hello(gxo.Module):
    def parse_params(self, p):
        return p.str("name", required=True)

    def perform(self, ctx, params, state, input, outputs, errors):
        ctx.log.info("hello " + params)
        return params

@gxo.register("bye")
class Bye(gxo.Module):
    def perform(self, ctx, params, state, input, outputs, errors):
        ctx.log.info("bye")
"""

USES_BOTH = """
    name: mods
    tasks:
      - {name: h, type: hello, params: {name: operator}}
      - {name: b, type: bye, depends_on: [h]}
"""


def test_a_file_registers_several_types_named_unlike_it(cli, tmp_path):
    mods = write_files(tmp_path / "mods", {"tools.py": TOOLS})
    r = cli("-modules-dir", str(mods), playbook=USES_BOTH)
    assert r.returncode == 0, r.stderr
    assert "[h] hello operator" in r.stderr and "[b] bye" in r.stderr


def test_name_py_is_imported_first_and_alone(cli, tmp_path):
    # hello.py is the fast path: broken.py is never imported while it is enough.
    mods = write_files(tmp_path / "mods", {"hello.py": TOOLS, "broken.py": "import gxo\ndef oops(:\n"})
    r = cli("-modules-dir", str(mods), playbook=USES_BOTH)
    assert r.returncode == 0, r.stderr
    r = cli("-modules-dir", str(mods), playbook="""
        name: mods
        tasks: [{name: x, type: other}]
    """)
    assert r.returncode == 2
    assert f"cannot load module file {mods / 'broken.py'}: SyntaxError" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_type_lists_type_names_not_file_names(cli, tmp_path):
    mods = write_files(tmp_path / "mods", {"tools.py": TOOLS})
    r = cli("-modules-dir", str(mods), playbook="""
        name: mods
        tasks: [{name: x, type: helo}]
    """)
    assert r.returncode == 2
    assert ("type: unknown module type 'helo' (did you mean 'hello'?); known types: bye, "
            "collect, exec, filter, hello, log, records, write_file\n") in r.stderr


def test_a_user_file_cannot_shadow_a_built_in_type(cli, tmp_path):
    mods = write_files(tmp_path / "mods", {"log.py": """
        import gxo

        @gxo.register("log")
        class MyLog(gxo.Module):
            def perform(self, ctx, params, state, input, outputs, errors):
                pass
    """})
    r = cli("-modules-dir", str(mods), playbook="""
        name: mods
        tasks: [{name: l, type: log, params: {message: hi}}]
    """)
    assert r.returncode == 2
    assert f"cannot load module file {mods / 'log.py'}: module type 'log' is built in (" in r.stderr
    assert "a module cannot replace it; pick another name" in r.stderr
    # Found by the full scan too (here: looking for an unknown type).
    r = cli(playbook="""
        name: mods
        tasks: [{name: l, type: mine}]
    """, env={"GXO_MODULES_PATH": str(mods)})
    assert r.returncode == 2 and "module type 'log' is built in" in r.stderr
    # A built-in not imported yet is recognised by its file name.
    write_files(mods, {"mine.py": """
        import gxo

        for name in ("mine", "write_file"):
            gxo.register(name, type(name, (gxo.Module,), {}))
    """})
    r = cli("-modules-dir", str(mods), playbook="""
        name: mods
        tasks: [{name: m, type: mine}]
    """)
    assert r.returncode == 2
    assert (f"cannot load module file {mods / 'mine.py'}: module type 'write_file' is built in "
            f"({ROOT / 'gxo_modules' / 'write_file.py'}): a module cannot replace it") in r.stderr


def test_two_files_registering_one_type(tmp_path, load):
    mods = write_files(tmp_path / "mods", {"a_twice.py": """
        import gxo

        @gxo.register("twice_registered")
        class A(gxo.Module):
            pass
    """, "b_twice.py": """
        import gxo

        @gxo.register("twice_registered")
        class B(gxo.Module):
            pass
    """})
    with pytest.raises(gxo.PlaybookError) as info:
        load("name: x\ntasks: [{type: twice_registered_x}]\n", modules_dirs=[mods])
    assert (f"cannot load module file {mods / 'b_twice.py'}: module type 'twice_registered' is "
            f"already registered by {mods / 'a_twice.py'}") in str(info.value)


def test_other_files_are_imported_once(tmp_path, load):
    marker = tmp_path / "imports"
    mods = write_files(tmp_path / "mods", {"counted_types.py": f"""
        import gxo
        with open({str(marker)!r}, "a") as f:
            f.write("imported\\n")

        for name in ("counted_one", "counted_two"):
            gxo.register(name, type(name, (gxo.Module,), {{}}))
    """})
    pb = load("name: x\ntasks: [{type: counted_one}, {type: counted_two}]\n", modules_dirs=[mods])
    assert [t.type for t in pb.tasks] == ["counted_one", "counted_two"]
    load("name: x\ntasks: [{type: counted_two}]\n", modules_dirs=[mods])
    assert marker.read_text() == "imported\n"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_missing_modules_folder_is_an_error(cli, tmp_path, how):
    missing = tmp_path / "no-such-dir"
    args, env = (("-modules-dir", str(missing)), None) if how == "flag" else \
        ((), {"GXO_MODULES_PATH": f"{tmp_path}:{missing}"})
    r = cli(*args, playbook="""
        name: mods
        tasks: [{name: t, type: exec, params: {command: "true"}}]
    """, env=env)
    assert r.returncode == 2
    source = "-modules-dir" if how == "flag" else "GXO_MODULES_PATH"
    assert f"gxo: {source} {missing}: no such folder\n" == r.stderr


BUILT_INS = """
name: builtins
tasks:
  - {name: say, type: log, params: {message: found the built-ins}}
  - {name: run, type: exec, params: {command: "true"}}
"""


@pytest.mark.parametrize("python, env", [
    (["-I"], {}),
    ([], {"PYTHONSAFEPATH": "1"}),
])
def test_gxo_modules_found_next_to_gxo_py(tmp_path, python, env):
    book = tmp_path / "p.yml"
    book.write_text(BUILT_INS)
    r = subprocess.run([sys.executable, *python, str(ROOT / "gxo.py"), "-playbook", str(book)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60,
                       env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    assert "[say] found the built-ins" in r.stderr


def copy_kernel(dest):
    dest.mkdir(parents=True)
    shutil.copy(ROOT / "gxo.py", dest)
    shutil.copytree(ROOT / "gxo_modules", dest / "gxo_modules",
                    ignore=shutil.ignore_patterns("__pycache__"))


def test_vendored_copy_and_its_modules_share_one_kernel(tmp_path):
    app = tmp_path / "app"
    copy_kernel(app / "vendor")
    (app / "vendor" / "__init__.py").write_text("")
    mods = write_files(tmp_path / "mods", {"tools.py": TOOLS})
    (app / "main.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.append({str(ROOT)!r})
        import gxo as top                   # another copy, imported first
        from vendor import gxo
        result = gxo.run_playbook({USES_BOTH!r}.replace("bye, depends_on: [h]",
                                  "exec, params: {{command: 'true'}}"),
                                  modules_dirs=[{str(mods)!r}])
        print(result.ok, top._MODULES)
        print(gxo._MODULES["exec"].__module__, gxo._MODULES["hello"].__module__)
    """))
    r = subprocess.run([sys.executable, "main.py"], capture_output=True, text=True, cwd=app,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["True {}",
                                     "vendor.gxo_modules.exec gxo_user_modules.tools"]
    assert "[h] hello operator" in r.stderr


def test_vendored_alone_makes_import_gxo_the_kernel(tmp_path):
    app = tmp_path / "app"
    copy_kernel(app / "vendor")
    (app / "vendor" / "__init__.py").write_text("")
    (app / "main.py").write_text(textwrap.dedent(f"""
        import sys
        from vendor import gxo
        result = gxo.run_playbook({BUILT_INS!r})
        print(result.ok, sys.modules["gxo"] is gxo)
    """))
    r = subprocess.run([sys.executable, "main.py"], capture_output=True, text=True, cwd=app,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "True True\n"


def test_gxo_py_alone_says_where_it_looked(tmp_path):
    shutil.copy(ROOT / "gxo.py", tmp_path)
    book = tmp_path / "p.yml"
    book.write_text(BUILT_INS)
    # As if gxo were not installed either (CI installs it): run gxo.py as a script, with
    # the installed package out of reach.
    hide = ("import runpy, sys; sys.modules['gxo_modules'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    r = subprocess.run([sys.executable, "-I", "-c", hide, str(tmp_path / "gxo.py"), "-playbook",
                        str(book)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    assert ("task 'say' (#1): type: cannot find the gxo_modules package: keep the gxo_modules/ "
            f"folder next to gxo.py (looked in {tmp_path}) or install gxo with pip") in r.stderr


def test_missing_package_in_process(monkeypatch, load):
    monkeypatch.setattr(gxo, "_PACKAGE", "no_such_package_here")
    monkeypatch.setitem(sys.modules, "gxo_modules", None)         # nor an installed one
    with pytest.raises(gxo.PlaybookError, match="cannot find the gxo_modules package"):
        load("name: x\ntasks: [{type: not_loaded_yet}]\n")


def test_dry_run_never_calls_a_module_that_does_not_support_it(cli, tmp_path):
    marker = tmp_path / "launched"
    mods = write_files(tmp_path / "mods", {"rocket.py": f"""
        import gxo

        @gxo.register("rocket")
        class Rocket(gxo.Module):
            def perform(self, ctx, params, state, input, outputs, errors):
                open({str(marker)!r}, "w").write(params["target"])
    """})
    pb = """
        name: launch
        vars: {where: moon}
        tasks: [{name: go, type: rocket, params: {target: "the << .where >>"}}]
    """
    r = cli("-dry-run", "-modules-dir", str(mods), playbook=pb)
    assert r.returncode == 0, r.stderr
    assert "[go] [Dry Run] Would run module 'rocket' with params {\"target\":\"the moon\"}" \
        in r.stderr
    assert not marker.exists()
    r = cli("-modules-dir", str(mods), playbook=pb)
    assert r.returncode == 0 and marker.read_text() == "the moon"
