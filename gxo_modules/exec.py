"""exec: run a local command.

Params: ``command`` (required), ``args`` (list), ``working_dir``,
``environment`` (list of K=V, or a mapping; added to gxo's environment),
``shell`` (run ``command`` with /bin/sh -c; ``args`` become $1...),
``stdin`` (text).  Without ``shell`` nothing is parsed by a shell, so
templated values cannot inject commands.  A NUL byte, or text that cannot
be encoded as UTF-8, in any of them is an error naming the param.

``creates: PATH`` / ``removes: PATH`` (Ansible's meaning): the command is
not run when PATH exists / does not exist (a relative PATH is taken from
``working_dir`` if set).  The task is then Completed, says why in the log
and in its summary's ``skipped``; a dry run checks them too.

``max_output`` (bytes, or a size such as ``512KiB``, ``4MiB``, ``1GB``;
default 2MiB) bounds what is kept of each of stdout and stderr: past it the
first and the last half are kept, a line between them says how many bytes
were dropped, ``truncated`` is true and a warning is logged.  Memory stays
flat however much a command prints.

Summary: ``stdout``, ``stderr`` (trailing newline stripped),
``stdout_lines`` (stdout split into lines), ``exit_code``, ``truncated``,
``skipped`` ("" when the command ran).  A non-zero exit fails the task with
the exit status and the tail of stderr; the log shows the last 10 lines of
stdout and of stderr, and the failure carries the summary (for a failure
handler).  The command runs in its own process group; cancellation and
timeouts terminate the whole group (TERM, then KILL after a grace period)
and then stop waiting for output, even if a process that left the group
still holds the pipes.

Streams: with ``stream_input`` each record is written to stdin as one JSON
line (non-UTF-8 text as JSON escapes), or the text of ``input_field``
(surrogate-escaped text as the bytes it was read from; a record without
the field, or whose text cannot be encoded, is a record error).  When
other tasks stream from this one, each stdout line becomes a record as soon
as it is printed: ``{"line": text}``, or the JSON object on that line with
``output: json``; a line longer than ``max_output`` is a record error.
When every task reading the stream has stopped (``head``), the command is
terminated and the task is Completed, as ``yes | head`` in a shell.

On a remote executor (``-executor dask://...``) a call that does not stream
runs on a worker (``environment`` is added to the worker's environment) and
its summary says which ``host`` and ``worker`` ran it; streams run here.
"""

import itertools
import os
import re
import select
import threading
import time

import gxo

from . import _process

GRACE = _process.GRACE          # seconds from TERM to KILL
MAX_OUTPUT = _process.LIMIT     # bytes kept of each stream, by default
TAIL_LINES = 10                 # lines of stdout and stderr logged when a command fails
_UNITS = {"b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


@gxo.register("exec")
class Exec(gxo.Module):

    supports_dry_run = True         # logs the command, runs nothing

    def parse_params(self, p):
        params = {
            "command": _os_text(p, "command", p.str("command", required=True)),
            "args": _args(p),
            "working_dir": _os_text(p, "working_dir", p.str("working_dir")),
            "environment": _environment(p),
            "shell": p.bool("shell"),
            "stdin": p.str("stdin"),
            "input_field": p.str("input_field"),
            "output": p.str("output", "lines", choices=("lines", "json")),
            "creates": _os_text(p, "creates", p.str("creates")),
            "removes": _os_text(p, "removes", p.str("removes")),
            "max_output": _size(p, "max_output"),
        }
        command = params["command"]
        if isinstance(command, str) and not command.strip():
            raise gxo.ParamError("command", "is empty")
        if params["stdin"] is not None and not p.unrendered(params["stdin"]):
            params["stdin"] = _encode("stdin", params["stdin"])
        return params

    def perform(self, ctx, params, state, input, outputs, errors):
        command, args = params["command"], params["args"]
        if params["stdin"] is not None and input is not None:
            raise gxo.ParamError("stdin", "cannot be used with stream_input: both feed stdin")
        skipped = _skip_reason(params)
        if skipped:
            ctx.log.info(f"{'[Dry Run] ' if ctx.dry_run else ''}not running "
                         f"{_show(command, args, params['shell'])}: {skipped}")
            return _summary("", "", 0, skipped=skipped)
        if ctx.dry_run:
            ctx.log.info(f"[Dry Run] Would execute command: {_show(command, args, params['shell'])}")
            if input is not None:
                for _ in input:             # drain, so the producer is not reported short
                    pass
            return {"dry_run": True, "command": command, "args": args, **_summary("", "", 0)}
        spec = {"argv": ["/bin/sh", "-c", command, "sh", *args] if params["shell"]
                else [command, *args],
                "env": params["environment"] or None, "cwd": params["working_dir"],
                "stdin": params["stdin"], "grace": GRACE, "limit": params["max_output"],
                "task": ctx.name}
        return _run(ctx, params, spec, input, outputs, errors)


def _summary(out, err, code, truncated=False, skipped=""):
    return {"stdout": out, "stderr": err, "stdout_lines": out.splitlines(), "exit_code": code,
            "truncated": bool(truncated), "skipped": skipped}


def _args(p):
    args = p.list_of_str("args")
    return args if isinstance(args, str) else [_os_text(p, f"args[{i}]", a)
                                                for i, a in enumerate(args)]


def _os_text(p, name, value):
    """A value the OS gets as a C string: no NUL, and encodable (checked at load if static)."""
    if isinstance(value, str) and not p.unrendered(value):
        if "\0" in value:
            raise gxo.ParamError(name, f"contains a NUL byte (at character {value.index(chr(0))}),"
                                       " which no command, argument, path or variable can hold")
        _encode(name, value)
    return value


def _encode(name, text):
    """Text as bytes: UTF-8, lone surrogates from undecodable input as the bytes they were."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as e:
        raise gxo.ParamError(name, f"is not valid UTF-8 text: {text[e.start]!r} at character "
                                   f"{e.start} is a lone surrogate") from None


def _run(ctx, params, spec, input, outputs, errors):
    """Run the command: a call that streams here, any other on the task's executor
    (on a remote one the summary adds host and worker)."""
    streams = input is not None or bool(outputs)
    remote = not streams and ctx.executor.remote
    if streams:
        call = _Run(spec, ctx, params, input, outputs, errors)
    else:
        if remote and ctx.deadline is not None:
            # Here the engine's timer stops a call; a worker stops it too, should
            # the cancel not reach it.
            spec["timeout"] = max(0.0, ctx.deadline - time.monotonic())
        call = ctx.executor.submit(spec)
    undo = ctx.on_cancel(lambda hard: call.cancel(0 if hard else GRACE))
    try:
        result = call.result()
    finally:
        undo()
    if ctx.cancelled:
        raise gxo.Cancelled(ctx.reason)
    where = f" (on {result['host']})" if remote else ""
    if "oserror" in result:
        raise _not_started(result["oserror"], params, where)
    if streams and call.failure is not None:
        _process.kill(call.proc)
        raise call.failure
    summary = _summary(*_texts(ctx.log, result, params["max_output"]), result["exit_code"],
                       result["truncated"])
    if streams:
        summary["records_in"] = call.records_in if input is not None else 0
        summary["records_out"] = call.records_out
    if remote:
        summary["host"] = result["host"]
        if "worker" in result:
            summary["worker"] = result["worker"]
        ctx.log.debug(f"ran on {result['host']} ({result.get('worker', 'no worker')}): "
                      f"exit code {result['exit_code']}")
    if result["timed_out"]:
        raise gxo.TaskError(f"timed out{where}", summary=summary)
    if streams and call.unread:
        ctx.log.info("every task reading its output has stopped reading: the command "
                     "was stopped, as a pipe stops it")
    elif result["exit_code"]:
        _log_tails(ctx.log, summary)
        raise gxo.TaskError(_failure(result["exit_code"], summary["stderr"]) + where,
                            summary=summary)
    return summary


def _not_started(oserror, params, where=""):
    """The TaskError for a command that could not start ((errno, strerror, filename))."""
    command, wd = params["command"], params["working_dir"]
    error = OSError(*oserror)
    if not isinstance(error, (FileNotFoundError, PermissionError)):
        return gxo.TaskError(f"{error.strerror}: {error.filename}{where}")
    if isinstance(error, PermissionError):
        return gxo.TaskError(f"permission denied: {command}{where}")
    if wd and error.filename == wd:
        return gxo.TaskError(f"working_dir does not exist: {wd}{where}")
    hint = (" (to pass arguments use 'args', or set 'shell: true')"
            if " " in command.strip() and not params["shell"] else "")
    return gxo.TaskError(f"command not found: {command}{where}{hint}")


def _environment(p):
    """The environment param as a dict: a list of K=V strings or a mapping."""
    value = p.any("environment")
    if value is None or p.unrendered(value):
        return value
    if isinstance(value, (list, tuple)):
        env = {}
        for i, item in enumerate(value):
            if p.unrendered(item):
                continue
            item = p.text(f"environment[{i}]", item)
            if "=" not in item or item.startswith("="):
                raise gxo.ParamError(f"environment[{i}]", f"expected KEY=value, got {item!r}")
            key, _, val = _os_text(p, f"environment[{i}]", item).partition("=")
            env[key] = val
        return env
    if isinstance(value, dict):
        env = {}
        for key, val in value.items():
            # Values are text as a template prints it: DEBUG: "<< .debug >>" is "true".
            key, val = gxo.format_value(key), p.text(f"environment.{key}", val)
            if not key or "=" in key:
                raise gxo.ParamError(f"environment.{key}", "a variable name cannot be empty "
                                                           "or hold '='")
            env[_os_text(p, f"environment.{key}", key)] = _os_text(p, f"environment.{key}", val)
        return env
    raise gxo.ParamError("environment", "expected a list of KEY=value or a mapping")


def _size(p, name):
    """A byte count: an integer or text like 512KiB, 4MiB, 1GB."""
    value = p.any(name)
    if value is None:
        return MAX_OUTPUT
    if p.unrendered(value):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", value) if isinstance(value, str) else None
    if m and (not m.group(2) or m.group(2).lower() in _UNITS):
        return int(m.group(1)) * _UNITS.get(m.group(2).lower(), 1)
    raise gxo.ParamError(name, f"expected a size in bytes, such as 1048576, 512KiB, 4MiB or "
                               f"1GB, got {gxo._describe(value)}")


def _skip_reason(params):
    """Why creates/removes say the command need not run ("" if it must)."""
    for name, want in (("creates", True), ("removes", False)):
        path = params[name]
        if path is not None:
            full = os.path.join(params["working_dir"] or "", os.path.expanduser(path))
            if os.path.lexists(full) == want:
                return f"{name}: {path} {'exists' if want else 'does not exist'}"
    return ""


def _texts(log, result, limit):
    """The stdout and stderr of a result as text; logs a warning for each that was cut."""
    for name, size, dropped in zip(("stdout", "stderr"), result["printed"], result["dropped"]):
        if dropped:
            log.warn(f"{name} was {size:,} bytes, over max_output ({_process.size_text(limit)}): "
                     f"kept its first and last lines, {size - dropped:,} bytes")
    return _text(result["stdout"]), _text(result["stderr"])


class _Run(_process.Call):
    """A call that streams: its stdout lines become records as they come (on the
    poll loop of the task's thread), records are fed to its stdin by a thread
    of its own (it blocks on input)."""

    def __init__(self, spec, ctx, params, input, outputs, errors):
        self.ctx, self.params = ctx, params
        self.input, self.outputs, self.errors = input, outputs, errors
        self.records_in = self.records_out = 0
        self.failure = None             # what broke the feeder: fails the task
        self.unread = False             # every consumer stopped reading, so we stopped
        self._feeder = None
        super().__init__(spec, pipe_stdin=input is not None)
        if self.proc is None:
            return
        if outputs:
            self._put = gxo.fan_out(outputs)
            self._pending, self._skipping, self._line = bytearray(), False, 0
            if params["output"] == "json":
                import json
                self._loads = json.loads
            self.on_stdout = self.on_lines
            for channel in outputs:
                channel.on_detach = self.reader_left
            self.reader_left()          # a consumer may be gone already
        if input is not None:
            self._feeder = threading.Thread(target=self.feed, args=(self.records(),),
                                            daemon=True, name=f"gxo-feed-{ctx.name}")
            self._feeder.start()

    def reader_left(self):
        """A consumer detached: once none is left, stop the command, as a pipe does."""
        if all(o.detached for o in self.outputs) and self.proc.poll() is None:
            self.unread = True
            self.cancel(GRACE)

    def _pump(self, end):
        ended = super()._pump(end)
        if self.outputs and self._pending and not self._skipping:
            self.emit(bytes(self._pending).decode("utf-8", "replace").rstrip("\r"))
        return ended

    def on_lines(self, data):
        """Turn the complete lines of a chunk of stdout into records."""
        if self._skipping:                  # the rest of a line over max_output
            end = data.find(b"\n")
            if end < 0:
                return
            self._skipping, data = False, data[end + 1:]
        pending = self._pending
        pending += data
        end = pending.rfind(b"\n")
        if end < 0:
            if len(pending) > self.params["max_output"]:
                self.emit(bytes(pending[:100]).decode("utf-8", "replace"), too_long=True)
                pending.clear()
                self._skipping = True
            return
        text = pending[:end].decode("utf-8", "replace")
        del pending[:end + 1]
        emit = self.emit
        if "\r" in text:
            for line in text.split("\n"):
                emit(line.rstrip("\r"))
        else:
            for line in text.split("\n"):
                emit(line)

    def emit(self, line, too_long=False):
        self._line += 1
        limit = self.params["max_output"]
        if too_long or len(line) > limit:
            self.errors.put(gxo.RecordProcessingError(
                self.ctx.name, f"line {self._line}",
                f"longer than max_output ({_process.size_text(limit)}), dropped: {line[:80]}..."))
            return
        if self.params["output"] == "json":
            try:
                record = self._loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                self.errors.put(gxo.RecordProcessingError(self.ctx.name, f"line {self._line}",
                                                          f"{e}: {line[:80]}"))
                return
        else:
            record = {"line": line}
        self._put(record)
        self.records_out += 1

    def records(self):
        """The input records as lines for stdin, in batches: what is queued, about
        _process.CHUNK bytes at most (a write per record would cost a system call each)."""
        import json
        field, name, errors, input = self.params["input_field"], self.ctx.name, self.errors, self.input
        dumps = json.JSONEncoder(ensure_ascii=False, default=str).encode
        batch, size = [], 0
        for record in input:
            if field is None:
                try:
                    line = (dumps(record) + "\n").encode()
                except UnicodeEncodeError:      # lone surrogates: JSON escapes them
                    line = (json.dumps(record, default=str) + "\n").encode()
            else:
                try:
                    value = record[field]
                except (KeyError, TypeError):
                    errors.put(gxo.RecordProcessingError(name, _excerpt(record),
                                                         f"no field '{field}' to write to stdin"))
                    continue
                text = value if isinstance(value, str) else dumps(value)
                try:
                    line = (text + "\n").encode("utf-8", "surrogateescape")
                except UnicodeEncodeError as e:
                    errors.put(gxo.RecordProcessingError(
                        name, _excerpt(record), f"'{field}' is not valid UTF-8 text: "
                        f"{text[e.start]!r} at character {e.start} is a lone surrogate"))
                    continue
            batch.append(line)
            size += len(line)
            if size >= _process.CHUNK or not input.queued:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    def feed(self, batches):
        """Write batches of lines to stdin, counting the lines written whole; stop if
        the command stops reading or the call is being stopped."""
        stdin = self.proc.stdin
        fd = stdin.fileno()
        os.set_blocking(fd, False)      # so that a stop is seen even when the pipe is full
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        poll.register(self._wake_r, select.POLLIN)
        try:
            for lines in batches:
                data, sent = memoryview(b"".join(lines)), 0
                try:
                    while sent < len(data):
                        try:
                            sent += os.write(fd, data[sent:])
                        except BlockingIOError:
                            if any(f == self._wake_r for f, _ in poll.poll()):
                                return
                finally:
                    self.records_in += len(lines) if sent == len(data) else _whole(lines, sent)
        except (BrokenPipeError, gxo.Cancelled):
            pass                        # the command stopped reading, or the run stops
        except BaseException as e:      # never a record lost silently
            self.failure = e
        finally:
            stdin.close()               # its buffer is empty: this cannot fail on a pipe

    def _release(self):
        """Let go of the feeder, then of the pipes (after the command ended)."""
        for channel in self.outputs:
            channel.on_detach = None
        if self._feeder is not None:
            self._wake()
            self.input.detach("the command stopped reading")
            self._feeder.join()
        super()._release()


def _whole(lines, sent):
    """How many of ``lines`` the first ``sent`` bytes of their join hold whole."""
    import bisect
    return bisect.bisect_right(list(itertools.accumulate(map(len, lines))), sent)


def _text(data):
    text = data.decode("utf-8", "replace")
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    return text


def _failure(code, stderr):
    what = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    if lines:
        tail = " | ".join(lines[-3:])
        what += ": " + (tail if len(tail) <= 300 else "..." + tail[-297:])
    return what


def _log_tails(log, summary):
    """Log the last lines of stdout and stderr of a failed command (each line bounded)."""
    for name in ("stdout", "stderr"):
        lines = summary["stdout_lines"] if name == "stdout" else summary[name].splitlines()
        if lines:
            shown = lines[-TAIL_LINES:]
            what = (f"last {len(shown)} of {len(lines)} lines" if len(lines) > len(shown)
                    else f"{len(lines)} line" + ("s" if len(lines) > 1 else ""))
            log.error(f"{name} ({what}):\n" + "\n".join(
                "  | " + (x if len(x) <= 300 else x[:300] + f"... ({len(x):,} characters)")
                for x in shown))


def _excerpt(record):
    text = gxo.format_value(record)
    return text if len(text) <= 80 else text[:77] + "..."


def _show(command, args, shell):
    import shlex
    if shell:
        return command + ("".join(" " + shlex.quote(a) for a in args))
    return " ".join(shlex.quote(x) for x in [command, *args])
