"""Shared fixtures: run playbooks through the API and through the CLI."""

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gxo  # noqa: E402


class Run:
    """The result of gxo.run_playbook plus the log it wrote."""

    def __init__(self, result, log):
        self.result, self.log = result, log
        self.tasks, self.state, self.ok = result.tasks, result.state, result.ok

    def status(self, name):
        return self.tasks[name].status


@pytest.fixture
def run(tmp_path):
    """run(yaml_text, **run_playbook kwargs) -> Run; the text is dedented."""
    def run(text, **kwargs):
        path = tmp_path / "playbook.yml"
        path.write_text(textwrap.dedent(text))
        log = io.StringIO()
        kwargs.setdefault("log_level", "DEBUG")
        result = gxo.run_playbook(path, log_stream=log, **kwargs)
        return Run(result, log.getvalue())
    return run


@pytest.fixture
def load(tmp_path):
    """load(yaml_text, vars=None) -> Playbook; the text is dedented."""
    def load(text, vars=None, **kwargs):
        path = tmp_path / "playbook.yml"
        path.write_text(textwrap.dedent(text))
        return gxo.load_playbook(path, vars, **kwargs)
    return load


# The tests' environment, without the switches that colour the log.
_ENV = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}


@pytest.fixture
def cli(tmp_path):
    """cli(*args, playbook=None, timeout=60) -> CompletedProcess of `python gxo.py`."""
    def cli(*args, playbook=None, timeout=60, env=None):
        if playbook is not None:
            path = tmp_path / "playbook.yml"
            path.write_text(textwrap.dedent(playbook))
            args = ("-playbook", str(path)) + args
        return subprocess.run([sys.executable, str(ROOT / "gxo.py"), *args],
                              capture_output=True, text=True, timeout=timeout,
                              env={**_ENV, **(env or {})}, cwd=tmp_path)
    return cli


import mockmods  # noqa: E402,F401  (registers the fake, emit and sink modules)


@pytest.fixture(autouse=True)
def _reset_mocks():
    mockmods.reset()
    yield
