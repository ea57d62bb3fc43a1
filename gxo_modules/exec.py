"""exec: run a local command.

Params: ``command`` (required), ``args`` (list), ``working_dir``,
``environment`` (list of K=V, or a mapping; added to gxo's environment),
``shell`` (run ``command`` with /bin/sh -c; ``args`` become $1...),
``stdin`` (text).  Without ``shell`` nothing is parsed by a shell, so
templated values cannot inject commands.

Summary: ``stdout``, ``stderr`` (trailing newline stripped), ``exit_code``.
A non-zero exit fails the task.  The command runs in its own process group;
cancellation and timeouts terminate the whole group (TERM, then KILL).

Streams: with ``stream_input`` each record is written to stdin as one JSON
line (or the text of ``input_field``); when other tasks stream from this one,
each stdout line becomes a record as soon as it is printed: ``{"line": text}``,
or the JSON object on that line with ``output: json``.
"""

import os
import signal
import subprocess
import threading

import gxo

GRACE = 2.0                     # seconds from TERM to KILL


@gxo.register("exec")
class Exec(gxo.Module):

    def parse_params(self, p):
        params = {
            "command": p.str("command", required=True),
            "args": p.list_of_str("args"),
            "working_dir": p.str("working_dir"),
            "environment": _environment(p),
            "shell": p.bool("shell"),
            "stdin": p.str("stdin"),
            "input_field": p.str("input_field"),
            "output": p.str("output", "lines", choices=("lines", "json")),
        }
        command = params["command"]
        if isinstance(command, str) and not command.strip():
            raise gxo.ParamError("command", "is empty")
        return params

    def perform(self, ctx, params, state, input, outputs, errors):
        command, args = params["command"], params["args"]
        if params["stdin"] is not None and input is not None:
            raise gxo.ParamError("stdin", "cannot be used with stream_input: both feed stdin")
        if ctx.dry_run:
            ctx.log.info(f"[Dry Run] Would execute command: {_show(command, args, params['shell'])}")
            if input is not None:
                for _ in input:             # drain, so the producer is not reported short
                    pass
            return {"dry_run": True, "command": command, "args": args,
                    "stdout": "", "stderr": "", "exit_code": 0}
        argv = ["/bin/sh", "-c", command, "sh", *args] if params["shell"] else [command, *args]
        env = params["environment"]
        if env:
            env = {**os.environ, **env}
        streaming = input is not None or bool(outputs)
        try:
            proc = subprocess.Popen(
                argv, cwd=params["working_dir"], env=env or None, start_new_session=True,
                stdin=subprocess.PIPE if input is not None or params["stdin"] is not None
                else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except FileNotFoundError:
            wd = params["working_dir"]
            if wd and not os.path.isdir(wd):
                raise gxo.TaskError(f"working_dir does not exist: {wd}") from None
            hint = (" (to pass arguments use 'args', or set 'shell: true')"
                    if " " in command.strip() and not params["shell"] else "")
            raise gxo.TaskError(f"command not found: {command}{hint}") from None
        except PermissionError:
            raise gxo.TaskError(f"permission denied: {command}") from None
        undo = ctx.on_cancel(lambda hard: _terminate(proc, hard))
        try:
            if streaming:
                out, err, counts = _stream(proc, ctx, params, input, outputs, errors)
            else:
                data = params["stdin"]
                out, err = proc.communicate(data.encode() if data is not None else None)
                counts = None
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        finally:
            undo()
        if ctx.cancelled:
            _kill_group(proc)
            raise gxo.Cancelled(ctx.reason)
        summary = {"stdout": _text(out), "stderr": _text(err), "exit_code": proc.returncode}
        if counts:
            summary.update(counts)
        if proc.returncode:
            _kill_group(proc)               # leave nothing behind a failed command
            raise gxo.TaskError(_failure(proc.returncode, summary["stderr"]))
        return summary


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
            if not isinstance(item, str) or "=" not in item or item.startswith("="):
                raise gxo.ParamError(f"environment[{i}]", f"expected KEY=value, got {item!r}")
            key, _, val = item.partition("=")
            env[key] = val
        return env
    if isinstance(value, dict):
        env = {}
        for key, val in value.items():
            if isinstance(val, bool):
                val = "true" if val else "false"
            if not isinstance(val, (str, int, float)):
                raise gxo.ParamError(f"environment.{key}",
                                     f"expected a string, got {gxo._describe(val)}")
            env[str(key)] = str(val)
        return env
    raise gxo.ParamError("environment", "expected a list of KEY=value or a mapping")


def _stream(proc, ctx, params, input, outputs, errors):
    """Feed stdin from ``input`` and turn stdout lines into records."""
    import json
    counts = {"records_in": 0, "records_out": 0}
    threads, err_chunks, out_chunks = [], [], []

    def drain(stream, into):
        into.append(stream.read())

    def feed():
        field, stdin = params["input_field"], proc.stdin
        try:
            for record in input:
                if field is None:
                    line = json.dumps(record, ensure_ascii=False, default=str)
                else:
                    value = record.get(field, "") if isinstance(record, dict) else record
                    line = value if isinstance(value, str) else json.dumps(value, default=str)
                stdin.write(line.encode() + b"\n")
                counts["records_in"] += 1
        except (BrokenPipeError, gxo.Cancelled):
            pass                            # the command stopped reading, or the run stops
        finally:
            try:
                stdin.close()
            except BrokenPipeError:
                pass

    threads.append(threading.Thread(target=drain, args=(proc.stderr, err_chunks), daemon=True))
    if input is not None:
        threads.append(threading.Thread(target=feed, daemon=True))
    elif params["stdin"] is not None:
        proc.stdin.write(params["stdin"].encode())
        proc.stdin.close()
    for t in threads:
        t.start()
    if outputs:
        as_json = params["output"] == "json"
        for n, raw in enumerate(proc.stdout, 1):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if as_json:
                try:
                    record = json.loads(line)
                    if not isinstance(record, dict):
                        raise ValueError("not a JSON object")
                except ValueError as e:
                    errors.put(gxo.RecordProcessingError(ctx.name, f"line {n}", f"{e}: {line[:80]}"))
                    continue
            else:
                record = {"line": line}
            for channel in outputs:
                channel.put(record)
            counts["records_out"] += 1
    else:
        drain(proc.stdout, out_chunks)
    proc.stdout.close()
    for t in threads:
        t.join()
    proc.wait()
    return b"".join(out_chunks), b"".join(err_chunks), counts


def _terminate(proc, hard):
    """Cancel: TERM the process group, KILL it after GRACE (or now if hard)."""
    if hard:
        _kill_group(proc)
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except OSError:
        return
    timer = threading.Timer(GRACE, lambda: proc.returncode is None and _kill_group(proc))
    timer.daemon = True
    timer.start()


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


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


def _show(command, args, shell):
    import shlex
    if shell:
        return command + ("".join(" " + shlex.quote(a) for a in args))
    return " ".join(shlex.quote(x) for x in [command, *args])
