"""Plain helpers shared by the test files (fixtures are in conftest.py, test module types
in mockmods.py): the gxo command, files to run it on, processes, waiting, threads."""

import json
import os
import sys
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The tests' environment, without the switches that colour the log.
ENV = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}


def gxo_command(*args):
    """The argv of `python gxo.py ARGS`, with this checkout's gxo.py."""
    return [sys.executable, str(ROOT / "gxo.py"), *args]


# -- files to run gxo on

def write_files(folder, files):
    """Write {name: text}, each dedented, into ``folder`` (made if need be); return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def write_playbook(folder, text, name="playbook.yml"):
    """Write ``text``, dedented, to folder/name; return its path."""
    return write_files(folder, {name: text}) / name


def busy_script(pids):
    """A shell script that appends its pid and its child's to ``pids``, then waits 60 s."""
    return f"echo $$ >> {pids}; sleep 60 & echo $! >> {pids}; wait"


# A module file for -modules-dir: type 'greet' logs "hello NAME from <its gxo>".
GREET = """
    import gxo

    @gxo.register("greet")
    class Greet(gxo.Module):
        def parse_params(self, p):
            return p.str("name", required=True)

        def perform(self, ctx, params, state, input, outputs, errors):
            ctx.log.info(f"hello {params} from {gxo.__file__}")
            return params
"""

APP_LOG = ROOT / "playbooks" / "data" / "app.jsonl"


def expected_errors():
    """The ERROR records of the stream-logs example's log, as that playbook should find them."""
    found = []
    with open(APP_LOG) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("level") == "ERROR":
                found.append(record)
    return found


# -- processes and waiting

def alive(pid):
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def gone(pid, timeout=10):
    """Whether process ``pid`` is gone, or goes within ``timeout`` seconds (a KILLed
    process dies when it is next scheduled)."""
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not alive(pid)


def wait_until(condition, failure, timeout=10):
    """Poll ``condition`` until it is true; after ``timeout`` seconds fail, saying ``failure``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(failure)
        time.sleep(0.01)


def wait_for_lines(path, n, timeout=10):
    """The numbers in ``path`` (a pid file) once it has ``n`` or more."""
    wait_until(lambda: path.exists() and len(path.read_text().split()) >= n,
               f"{path} never got {n} lines", timeout)
    return [int(x) for x in path.read_text().split()]


def blocked(thread, seconds=0.1):
    """The thread is still running after a short wait (blocked, we assume)."""
    thread.join(seconds)
    return thread.is_alive()


class Background(threading.Thread):
    """Calls fn(*args, **kwargs) in a daemon thread and keeps what it returned or raised,
    for the main thread to assert on: a failed assert in a thread only warns."""

    def __init__(self, fn, *args, **kwargs):
        super().__init__(daemon=True)
        self._call = lambda: fn(*args, **kwargs)
        self._outcome = None

    def run(self):
        try:
            self._outcome = (self._call(), None)
        except BaseException as e:          # handed to result(): nothing is lost here
            self._outcome = (None, e)

    def result(self, timeout=30):
        """What the call returned, once it has; raises here what it raised there."""
        self.join(timeout)
        assert not self.is_alive(), f"the call in the background still runs after {timeout}s"
        value, error = self._outcome
        if error is not None:
            raise error
        return value


def in_background(fn, *args, **kwargs):
    """A started Background thread calling fn(*args, **kwargs)."""
    thread = Background(fn, *args, **kwargs)
    thread.start()
    return thread


# A "billion laughs": ten anchors, each repeating the one before nine times.
LAUGHS = ['&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]'] + [
    f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
