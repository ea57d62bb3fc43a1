"""Run one exec call as its own process group, with bounded output.

The one process runner of gxo: the local executor runs a call on the thread
that waits for its result, the Dask executor on a worker, and exec's streams
build on it.  It uses the standard library only and imports nothing from
gxo, because gxo_modules/_dask.py ships this file's code to the workers by
value: they need ``distributed``, not gxo.

A spec is a dict: ``argv`` (list of str), ``env`` (a dict added to the
environment of the machine that runs it, or None), ``cwd``, ``stdin`` (bytes,
text or None), ``timeout`` (seconds or None), ``grace`` (seconds from TERM to
KILL), ``limit`` (bytes kept of each stream: its head and its tail).

A result is {"host", "stdout", "stderr" (bytes), "exit_code", "truncated",
"printed" and "dropped" (bytes printed and dropped, per stream), "timed_out",
"stopped"}, or {"host", "oserror": (errno, strerror, filename)} if the
command could not start, or {"host", "stopped": True} if it was stopped
before it started.
"""

import os
import select
import signal
import subprocess
import threading
import time

LIMIT = 2 << 20                 # bytes kept per stream, half head, half tail
GRACE = 2.0                     # seconds from TERM to KILL
CHUNK = 1 << 16                 # bytes read from a pipe at once
POLL = 0.5                      # seconds between two looks at a remote stop signal


def run(spec, stop, kill):
    """Run ``spec`` to its end, or until told to stop; return its result.

    ``stop(t)`` and ``kill(t)`` wait up to t seconds and return True once the
    caller asks to stop (TERM the group, KILL it after the grace) or to kill
    (KILL it now): a Dask worker's view of Call.cancel.
    """
    if stop(0):
        return {"host": os.uname().nodename, "stopped": True}
    call = Call(spec)
    if call.proc is not None:
        threading.Thread(target=_watch, args=(call, stop, kill, spec.get("grace", GRACE)),
                         daemon=True).start()
    return call.result()


def _watch(call, stop, kill, grace):
    # A stop signal that cannot be read (the worker is closing) stops the command:
    # nothing is left running where nobody can stop it any more.
    for wait, seconds in ((stop, grace), (kill, 0)):
        try:
            while call.running and not wait(POLL):
                pass
        except Exception:
            pass
        if not call.running:
            return
        call.cancel(seconds)


class Call:
    """One command in its own process group, started at once.

    Its stdout and stderr (and stdin, if the spec gives it) are served by one
    poll loop on the thread that waits in ``result``; ``cancel`` may come from
    any thread.  Once stopped, the call ends when the command exits, even if
    a process that left the group still holds the pipes.  This is a handle of
    gxo's executor protocol (``result(timeout)``, ``cancel(grace)``); a result
    that timed out may be waited for again.  ``pipe_stdin``: the caller
    writes ``proc.stdin`` itself.
    """

    def __init__(self, spec, pipe_stdin=False):
        limit = spec.get("limit", LIMIT)
        self.out, self.err = _Capture(limit), _Capture(limit)
        self.on_stdout = self.out.add
        self.running, self.stopping = True, False
        self.timed_out = self.stopped = False
        self._outcome = None
        data, env = spec.get("stdin"), spec.get("env")
        try:
            self.proc = proc = subprocess.Popen(
                spec["argv"], cwd=spec.get("cwd"), env={**os.environ, **env} if env else None,
                start_new_session=True,
                stdin=subprocess.PIPE if pipe_stdin or data is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            self.proc, self.running = None, False
            self._outcome = {"host": os.uname().nodename,
                             "oserror": (e.errno, e.strerror, e.filename)}
            return
        timeout = spec.get("timeout")
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._grace = spec.get("grace", GRACE)
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._poll = poll = select.poll()
        self._stdout = proc.stdout.fileno()
        self._open = {self._stdout, proc.stderr.fileno()}
        self._pipes = [proc.stdout, proc.stderr]
        self._ending = None             # once a stopped command exited: when to give up
        for fd in self._open:
            poll.register(fd, select.POLLIN)
        poll.register(self._wake_r, select.POLLIN)
        self._stdin_fd = -1             # while the loop writes stdin: its fd
        if pipe_stdin or data is not None:
            self._pipes.append(proc.stdin)
        if data is not None:
            self._stdin = memoryview(data if isinstance(data, bytes) else data.encode())
            self._stdin_fd = fd = proc.stdin.fileno()
            os.set_blocking(fd, False)  # a full pipe must not stop the loop
            self._open.add(fd)
            poll.register(fd, select.POLLOUT)
            self._write()               # most often it all fits at once

    def cancel(self, grace):
        """TERM the group now and KILL it after ``grace`` seconds (at once if 0)."""
        self.stopped = True
        self._stop(grace)

    def _stop(self, grace):
        if self.proc is not None:
            terminate(self.proc, grace)
            self._wake()

    def _wake(self):
        """Stop waiting for the pipes to close (the command is being stopped)."""
        with self._lock:
            if not self.stopping and self.running:
                self.stopping = True
                os.write(self._wake_w, b"!")

    def result(self, timeout=None):
        """Wait for the end of the call (TimeoutError after ``timeout`` seconds)."""
        if self._outcome is None:
            end = None if timeout is None else time.monotonic() + timeout
            try:
                ended = self._pump(end) and self._reap(end)
            except BaseException:
                kill(self.proc)
                self.proc.wait()
                self._release()
                raise
            if not ended:
                raise TimeoutError(f"no result after {timeout}s")
            proc, out, err = self.proc, self.out, self.err
            if self.stopping or proc.returncode:
                kill(proc)              # leave nothing behind a stopped or failed command
            self._outcome = {
                "host": os.uname().nodename, "stdout": out.value(), "stderr": err.value(),
                "exit_code": proc.returncode, "truncated": bool(out.dropped or err.dropped),
                "printed": (out.size, err.size), "dropped": (out.dropped, err.dropped),
                "timed_out": self.timed_out, "stopped": self.stopped}
            self._release()
        return self._outcome

    def _pump(self, end):
        """Serve the pipes until they close, or a stop and the command's exit;
        False if time.monotonic() passed ``end`` first."""
        proc, poll, open_, wake_r = self.proc, self._poll, self._open, self._wake_r
        while open_:
            events = poll.poll(50 if self.stopping else _millis(end, self._deadline))
            for fd, _ in events:
                if fd == wake_r:
                    poll.unregister(fd)
                elif fd == self._stdin_fd:
                    self._write()
                else:
                    data = os.read(fd, CHUNK)
                    if data:
                        (self.on_stdout if fd == self._stdout else self.err.add)(data)
                    else:
                        poll.unregister(fd)
                        open_.discard(fd)
            if self.stopping:
                # What is still in the pipes comes at once; a process that left
                # the group may hold them open forever: do not wait for it.
                if self._ending is None and proc.poll() is not None:
                    kill(proc)
                    self._ending = time.monotonic() + 0.1
                elif self._ending is not None and (not events or time.monotonic() > self._ending):
                    break
            elif self._deadline is not None and time.monotonic() >= self._deadline:
                self.timed_out = True
                self._stop(self._grace)
            if end is not None and time.monotonic() >= end:
                return False
        return True

    def _write(self):
        """Write what the pipe takes of stdin; close it once all is written."""
        data, fd = self._stdin, self._stdin_fd
        try:
            sent = os.write(fd, data) if data else 0
        except BlockingIOError:
            return
        except BrokenPipeError:         # the command stopped reading: so be it
            sent = len(data)
        self._stdin = data = data[sent:]
        if not data:
            self._poll.unregister(fd)
            self._open.discard(fd)
            self._stdin_fd = -1
            self.proc.stdin.close()     # its buffer is empty: this cannot fail on a pipe

    def _reap(self, end):
        """Wait for the command's exit; False if time.monotonic() passed ``end`` first."""
        while True:
            try:
                wait = _millis(end, None if self.stopping else self._deadline)
                self.proc.wait() if wait is None else self.proc.wait(wait / 1000)
                return True
            except subprocess.TimeoutExpired:
                if end is not None and time.monotonic() >= end:
                    return False
                self.timed_out = True
                self._stop(self._grace)

    def _release(self):
        """Close the pipes (the command ended)."""
        with self._lock:
            self.running = False
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        for pipe in self._pipes:
            pipe.close()


def _millis(*ends):
    """Milliseconds until the first of the time.monotonic() values ``ends`` (None: no end)."""
    ends = [t for t in ends if t is not None]
    return None if not ends else max(0.0, (min(ends) - time.monotonic()) * 1000)


def terminate(proc, grace):
    """TERM the process group of ``proc``, KILL it after ``grace`` seconds (at once if 0)."""
    if grace <= 0:
        kill(proc)
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except OSError:
        return                  # the group is gone already
    timer = threading.Timer(grace, lambda: proc.returncode is None and kill(proc))
    timer.daemon = True
    timer.start()


def kill(proc):
    """KILL the process group of ``proc``."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass                    # the group is gone already


def size_text(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n:,} bytes"


class _Capture:
    """The head and the tail of a stream, at most ``limit`` bytes in all."""

    def __init__(self, limit):
        self.limit, self.size, self.dropped = limit, 0, 0
        self.head_max = limit // 2
        self.head, self.tail = bytearray(), bytearray()

    def add(self, data):
        self.size += len(data)
        room = self.head_max - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            tail = self.tail
            tail += data
            extra = len(tail) - (self.limit - self.head_max)
            if extra > 0:
                del tail[:extra]            # cheap: a bytearray drops its front in place

    def value(self):
        """The bytes kept; if some were dropped, whole lines on both sides of a
        line that says how many (``dropped`` counts them then)."""
        head, tail = memoryview(self.head), memoryview(self.tail)    # no copies but the result's
        if self.size == len(head) + len(tail):
            return b"".join((head, tail))
        cut = self.head.rfind(b"\n") + 1   # whole lines on both sides of the gap
        if cut:
            head = head[:cut]
        cut = self.tail.find(b"\n") + 1
        if 0 < cut < len(tail):
            tail = tail[cut:]
        self.dropped = self.size - len(head) - len(tail)
        gap = (f"[... {self.dropped:,} bytes dropped: the output is over max_output "
               f"({size_text(self.limit)}) ...]")
        return b"".join((head, b"\n" if head and head[-1] != 10 else b"", gap.encode(), b"\n",
                         tail))
