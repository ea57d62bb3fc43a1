"""Shared fixtures: run playbooks through the API and through the CLI."""

import io
import subprocess

import pytest

import gxo
import mockmods  # registers the test module types (fake, emit, sink, ...)
from helpers import ENV, gxo_command, write_playbook


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
        path = write_playbook(tmp_path, text)
        log = io.StringIO()
        kwargs.setdefault("log_level", "DEBUG")
        result = gxo.run_playbook(path, log_stream=log, **kwargs)
        return Run(result, log.getvalue())
    return run


@pytest.fixture
def load(tmp_path):
    """load(yaml_text, vars=None) -> Playbook; the text is dedented."""
    def load(text, vars=None, **kwargs):
        path = write_playbook(tmp_path, text)
        return gxo.load_playbook(path, vars, **kwargs)
    return load


@pytest.fixture
def cli(tmp_path):
    """cli(*args, playbook=None, timeout=60) -> CompletedProcess of `python gxo.py`."""
    def cli(*args, playbook=None, timeout=60, env=None):
        if playbook is not None:
            args = ("-playbook", str(write_playbook(tmp_path, playbook))) + args
        return subprocess.run(gxo_command(*args), capture_output=True, text=True,
                              timeout=timeout, env={**ENV, **(env or {})}, cwd=tmp_path)
    return cli


@pytest.fixture(autouse=True)
def _reset_mocks():
    mockmods.reset()
    yield
