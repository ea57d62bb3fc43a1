"""write_file: write the records of a stream to a file, one per line.

Params:

``path``    the file to write (required).  Relative paths are relative to
            the directory gxo runs in.  The directory must exist.
``format``  ``lines`` (default) writes the text of one field per record;
            ``json`` writes each record as one line of JSON (JSON Lines).
``field``   with ``lines``: the field to write (default ``line``).  A record
            without it is a record error; numbers and other values are
            written as templates print them.  Text that was read with
            surrogateescape is written as the bytes it was read from;
            other text that is not UTF-8 is a record error (``json``
            writes it as JSON escapes).
``append``  add to the end of the file instead of replacing it (default
            false).  Without ``append`` the file is replaced only when the
            stream has ended well: the records go to a temporary file next to
            it, renamed over ``path`` at the end, so a failed or cancelled run
            never leaves a half-written file behind.

Without ``append``, ``path`` must be a regular file or not exist yet: a
symlink, directory, FIFO or device is refused before anything is read,
never replaced by a regular file.  ``append`` opens ``path`` as it is
(following a symlink, writing into a device or FIFO).

Summary: ``{"path": path, "count": records written}``.  Dry run: writes
nothing, reads the stream to its end and reports what it would have written.
Tasks that stream from a write_file task get every record, unchanged (tee).
"""

import json
import os

import gxo


@gxo.register("write_file")
class WriteFile(gxo.Module):

    supports_dry_run = True         # reads its input, writes nothing

    def parse_params(self, p):
        params = {
            "path": p.str("path"),
            "format": p.str("format", "lines", choices=("lines", "json")),
            "field": p.str("field"),
            "append": p.bool("append"),
        }
        p.finish()                  # a misspelt param first: "did you mean 'path'?"
        if params["path"] is None:
            raise gxo.ParamError("path", "is required (the file to write)")
        if isinstance(params["path"], str) and not params["path"].strip():
            raise gxo.ParamError("path", "is empty")
        if isinstance(params["path"], str) and "\0" in params["path"]:
            raise gxo.ParamError("path", "contains a NUL byte, which no path can hold")
        if params["field"] is not None and params["format"] == "json":
            raise gxo.ParamError("field", "only applies to format: lines (json writes whole "
                                          "records)")
        if params["field"] is None:
            params["field"] = "line"
        return params

    def perform(self, ctx, params, state, input, outputs, errors):
        if input is None:
            raise gxo.TaskError("write_file needs stream_input: the name of the task whose "
                                "records it writes")
        path = params["path"]
        put = gxo.fan_out(outputs) if outputs else None      # tee: what streams from us
        if ctx.dry_run:
            count = 0
            for count, record in enumerate(input, 1):
                if put is not None:
                    put(record)
            how = "append" if params["append"] else "write"
            ctx.log.info(f"[Dry Run] Would {how} {count} records to {path}")
            return {"path": path, "count": count, "dry_run": True}
        if params["append"]:
            target = path
        else:
            _check_regular(path)
            target = os.path.join(os.path.dirname(path) or ".",
                                  f".{os.path.basename(path)}.gxo-{os.getpid()}-{id(self)}.tmp")
        try:
            # Lines: text read with surrogateescape goes back as the bytes it was read from.
            f = open(target, "a" if params["append"] else "w", encoding="utf-8",
                     errors="strict" if params["format"] == "json" else "surrogateescape",
                     buffering=1 << 16)
        except OSError as e:
            raise gxo.TaskError(f"cannot write {path}: {e.strerror or e}") from None
        done = False
        try:
            with f:
                if params["format"] == "json":
                    count = _write_json(f.write, input, put)
                else:
                    count = _write_lines(f.write, input, put, params["field"], ctx.name, errors)
            if not params["append"]:
                _keep_mode(path, target)
                os.replace(target, path)
            done = True
        except OSError as e:
            raise gxo.TaskError(f"cannot write {path}: {e.strerror or e}") from None
        finally:
            if not done and not params["append"]:
                try:
                    os.unlink(target)
                except OSError:
                    pass
        return {"path": path, "count": count}


def _write_json(write, input, put):
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
    count = 0
    for count, record in enumerate(input, 1):
        try:
            write(encode(record) + "\n")
        except UnicodeEncodeError:  # lone surrogates (undecodable input): as JSON escapes
            write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        if put is not None:
            put(record)
    return count


def _write_lines(write, input, put, field, name, errors):
    text, written = gxo.format_value, 0
    for record in input:
        try:
            value = record[field]
        except (KeyError, TypeError, IndexError):
            errors.put(gxo.RecordProcessingError(name, _short(record), f"no field '{field}' to write"))
        else:
            line = value if value.__class__ is str else text(value)
            try:
                write(line + "\n")
                written += 1
            except UnicodeEncodeError as e:
                errors.put(gxo.RecordProcessingError(
                    name, _short(record), f"'{field}' is not valid UTF-8 text: "
                    f"{line[e.start]!r} at character {e.start} is a lone surrogate"))
        if put is not None:         # written first: a consumer may change the record
            put(record)
    return written


def _check_regular(path):
    """Refuse to replace anything but a regular file (a symlink is not followed)."""
    import stat
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return                      # no such file yet: it will be created
    if not stat.S_ISREG(mode):
        kind = ("a symlink" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode)
                else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device")
        raise gxo.TaskError(f"cannot write {path}: it is {kind}, not a regular file; "
                            "write_file replaces only regular files (or use append: true)")


def _keep_mode(path, target):
    """Give the new file the mode of the one it replaces (if any)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    import stat
    os.chmod(target, stat.S_IMODE(mode))


def _short(record):
    text = gxo.format_value(record)
    return text if len(text) <= 80 else text[:77] + "..."
