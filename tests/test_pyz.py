"""gxo.pyz: built by scripts/build_pyz.py, run by a Python that has no PyYAML."""

import importlib.util
import subprocess
import sys
import zipfile

import pytest

from helpers import GREET, ROOT, write_files


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "gxo.pyz"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_pyz.py"), "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {out} (")
    return out


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A fresh venv's python: no PyYAML, nothing but the standard library."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    r = subprocess.run([str(python), "-I", "-c", "import yaml"], capture_output=True, text=True)
    assert "No module named 'yaml'" in r.stderr         # the premise of these tests
    return python


def test_contents(pyz):
    with zipfile.ZipFile(pyz) as z:
        names = set(z.namelist())
        magic = z.read("gxo.pyc")[:4]
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    for source in ["__main__.py", "gxo.py", "gxo_modules/__init__.py", "gxo_modules/exec.py",
                   "yaml/__init__.py", "yaml/scanner.py"]:
        assert source in names and source + "c" in names, source
    assert {"LICENSE", "yaml/LICENSE"} <= names
    assert magic == importlib.util.MAGIC_NUMBER                  # bytecode for this Python
    assert not [n for n in names if "_yaml" in n or "__pycache__" in n or n.endswith(".so")]


def test_runs_an_example_without_pyyaml_from_another_directory(pyz, bare_python, tmp_path):
    r = subprocess.run([str(bare_python), "-I", str(pyz), "-playbook",
                        str(ROOT / "playbooks" / "conditional-steps.yml"), "-var", "migrate=true"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "[warm_cache] warming caches after the migration" in r.stderr
    assert "Traceback" not in r.stderr


def test_user_modules_dir_with_the_pyz(pyz, bare_python, tmp_path):
    mods = write_files(tmp_path / "mods", {"greetings.py": GREET})   # not named for its type
    book = tmp_path / "p.yml"
    book.write_text("name: p\ntasks:\n  - {name: g, type: greet, params: {name: ops}}\n"
                    "  - {name: x, type: gretp}\n")
    r = subprocess.run([str(bare_python), "-I", str(pyz), "-playbook", str(book),
                        "-modules-dir", str(mods)], capture_output=True, text=True, cwd=tmp_path,
                       timeout=60)
    assert r.returncode == 2 and "unknown module type 'gretp' (did you mean 'greet'?)" in r.stderr
    book.write_text("name: p\ntasks:\n  - {name: g, type: greet, params: {name: ops}}\n")
    r = subprocess.run([str(bare_python), "-I", str(pyz), "-playbook", str(book),
                        "-modules-dir", str(mods)], capture_output=True, text=True, cwd=tmp_path,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"[g] hello ops from {pyz}/gxo.pyc\n" in r.stderr       # its bytecode ran


def test_gxo_py_without_pyyaml_says_how_to_get_it(bare_python, tmp_path):
    book = tmp_path / "p.yml"
    book.write_text("name: p\ntasks: [{type: log, params: {message: hi}}]\n")
    r = subprocess.run([str(bare_python), "-I", str(ROOT / "gxo.py"), "-playbook", str(book)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    assert r.stderr == (f"gxo: {book}: gxo needs PyYAML to read playbooks: apt install "
                        "python3-yaml, dnf install python3-pyyaml, python3 -m pip install "
                        "pyyaml, or use gxo.pyz (it brings its own)\n")
