"""Run one exec call as its own process group, with bounded output.

The code both executors share: gxo's local executor runs it on a thread,
the Dask executor on a worker.  It uses the standard library only and
imports nothing from gxo, because gxo_modules/_dask.py ships this file's
code to the workers by value: they need ``distributed``, not gxo.

A spec is a dict: ``argv`` (list of str), ``env`` (a dict added to the
environment of the machine that runs it, or None), ``cwd``, ``stdin`` (bytes,
text or None), ``timeout`` (seconds or None), ``grace`` (seconds from TERM to
KILL), ``limit`` (bytes kept of each stream: its head and its tail).
"""

import os
import signal
import socket
import subprocess
import threading
import time

LIMIT = 4 << 20                 # bytes kept per stream, half head, half tail
POLL = 0.5                      # seconds between two looks at a remote stop signal


def run(spec, stop, kill):
    """Run ``spec`` to its end, or until told to stop.

    ``stop(t)`` and ``kill(t)`` wait up to t seconds and return True once the
    caller asks to stop (TERM the group, KILL it after the grace) or to kill
    (KILL it now).  Returns {"host", "stdout", "stderr" (bytes), "exit_code",
    "truncated", "timed_out", "stopped"}, or {"host", "oserror": (errno,
    strerror, filename)} if the command could not start, or {"host",
    "stopped": True} if it was stopped before it started.
    """
    host = socket.gethostname()
    if stop(0):
        return {"host": host, "stopped": True}
    env = spec.get("env")
    stdin = spec.get("stdin")
    try:
        proc = subprocess.Popen(
            spec["argv"], cwd=spec.get("cwd"), env={**os.environ, **env} if env else None,
            start_new_session=True,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        return {"host": host, "oserror": (e.errno, e.strerror, e.filename)}
    flags, wake = set(), threading.Event()

    def tell(flag):
        flags.add(flag)
        wake.set()

    captures = [_Capture(proc.stdout, spec.get("limit", LIMIT)),
                _Capture(proc.stderr, spec.get("limit", LIMIT))]
    readers = [threading.Thread(target=c.read, daemon=True) for c in captures]
    if stdin is not None:
        data = stdin if isinstance(stdin, bytes) else stdin.encode()
        readers.append(threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True))

    def reap():
        for t in readers:
            t.join()
        proc.wait()
        tell("done")

    def watch():
        # A stop signal that cannot be read (the worker is closing) stops the command:
        # nothing is left running where nobody can stop it any more.
        for flag, wait in (("stop", stop), ("kill", kill)):
            try:
                while "done" not in flags and not wait(POLL):
                    pass
            except Exception:
                pass
            if "done" in flags:
                return
            tell(flag)

    for t in readers + [threading.Thread(target=reap, daemon=True),
                        threading.Thread(target=watch, daemon=True)]:
        t.start()
    if not wake.wait(spec.get("timeout")):
        flags.add("timeout")
    if "done" not in flags:
        _signal(proc, signal.SIGTERM)
        _wait(wake, flags, {"done", "kill"}, spec.get("grace", 2.0))
    if "done" not in flags or proc.returncode:
        _signal(proc, signal.SIGKILL)       # leave nothing behind a stopped or failed command
        # A grandchild that left the group may hold the pipes: keep what was read.
        _wait(wake, flags, {"done"}, 1.0)
    out, err = captures
    return {"host": host, "stdout": out.value(), "stderr": err.value(),
            "exit_code": proc.wait(), "truncated": out.truncated or err.truncated,
            "timed_out": "timeout" in flags, "stopped": "stop" in flags or "kill" in flags}


def _wait(wake, flags, until, seconds):
    """Wait up to ``seconds`` for one of the flags ``until``."""
    end = time.monotonic() + seconds
    while not flags & until:
        wake.clear()
        left = end - time.monotonic()
        if flags & until or left <= 0:
            return
        wake.wait(left)


def _signal(proc, signum):
    try:
        os.killpg(proc.pid, signum)
    except OSError:
        pass                    # the group is gone already


def _feed(pipe, data):
    try:
        pipe.write(data)
    except BrokenPipeError:     # the command stopped reading: so be it
        pass
    finally:
        try:
            pipe.close()
        except BrokenPipeError:
            pass


class _Capture:
    """Reads a pipe to its end, keeping its first and last limit/2 bytes."""

    def __init__(self, pipe, limit):
        self.pipe, self.half = pipe, max(1, limit // 2)
        self.head, self.tail, self.dropped = b"", bytearray(), 0

    def read(self):
        fd = self.pipe.fileno()
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            if len(self.head) < self.half:
                room = self.half - len(self.head)
                self.head += chunk[:room]
                chunk = chunk[room:]
            self.tail += chunk
            if len(self.tail) > 2 * self.half:      # trim seldom: amortised O(1) a byte
                cut = len(self.tail) - self.half
                del self.tail[:cut]
                self.dropped += cut
        self.pipe.close()

    @property
    def truncated(self):
        return bool(self.dropped) or len(self.tail) > self.half

    def value(self):
        """What was kept; a line in the middle says how much was dropped."""
        tail = bytes(self.tail)
        cut = max(0, len(tail) - self.half)
        if not self.dropped + cut:
            return self.head + tail
        return self.head + b"\n[... %d bytes dropped ...]\n" % (self.dropped + cut) + tail[cut:]
