"""records: produce a stream of records from a list, a range or a file.

Params (exactly one of ``items``, ``range``, ``file``):

``items``   a list; a mapping item is sent as is, any other item as
            ``{"value": item}``.
``range``   ``N`` (0 .. N-1) or ``{start, stop, step}``; each number is sent
            as ``{"value": n}``.
``file``    a path, read lazily line by line (``.gz`` files are decompressed).
``format``  with ``file``: ``lines`` (default) sends ``{"line": text,
            "number": n}`` per line, newline stripped; ``json`` parses each
            line as one JSON object (blank lines are skipped; a line that is
            not a JSON object is a record error, not a failure).

Summary: ``{"count": records sent}``.  Every consumer (``stream_input``)
gets every record.  Reading has no side effects, so a dry run streams too.
"""

import json

import gxo

_SOURCES = ("items", "range", "file")


@gxo.register("records")
class Records(gxo.Module):

    supports_dry_run = True

    def parse_params(self, p):
        params = {
            "items": p.list("items"),
            "range": _range(p),
            "file": p.str("file"),
            "format": p.str("format", choices=("lines", "json")),
        }
        p.finish()                  # a misspelt param first: "did you mean 'items'?"
        given = [name for name in _SOURCES if params[name] is not None]
        if not given:
            raise gxo.ParamError(None, "give one of 'items' (a list), 'range' (a count) "
                                       "or 'file' (a path) to say where the records come from")
        if len(given) > 1:
            raise gxo.ParamError(given[1], f"cannot be used with '{given[0]}': give only one "
                                           "of items, range, file")
        if params["format"] is not None and params["file"] is None:
            raise gxo.ParamError("format", f"only applies to 'file' (records from "
                                           f"'{given[0]}' need no format)")
        if params["format"] is None:
            params["format"] = "lines"
        if isinstance(params["file"], str) and not params["file"].strip():
            raise gxo.ParamError("file", "is empty")
        return params

    def perform(self, ctx, params, state, input, outputs, errors):
        if input is not None:
            raise gxo.TaskError("records is a producer: it takes no stream_input "
                                "(use filter, collect or write_file to consume a stream)")
        if not outputs:
            ctx.log.warn(f"no task has 'stream_input: {ctx.name}': the records are "
                         "counted and dropped")
        if params["items"] is not None:
            source = [gxo.copy_record(v) if isinstance(v, dict) else {"value": gxo.copy_record(v)}
                      for v in params["items"]]
            return {"count": _send(source, outputs)}
        if params["range"] is not None:
            return {"count": _send_range(params["range"], outputs)}
        return {"count": _send_file(ctx, params["file"], params["format"], outputs, errors)}


def _range(p):
    """The range param as a range object (or the raw value if still a template)."""
    value = p.any("range")
    if value is None or p.unrendered(value):
        return value
    if isinstance(value, dict):
        for key in value:
            if key not in ("start", "stop", "step"):
                raise gxo.ParamError(f"range.{key}", "unknown key; a range has start, stop "
                                                     "and step")
        if "stop" not in value:
            raise gxo.ParamError("range.stop", "is required (the range ends before it)")
        bounds = {}
        for key, default in (("start", 0), ("stop", None), ("step", 1)):
            v = value.get(key, default)
            if p.unrendered(v):
                return value
            bounds[key] = _int(f"range.{key}", v)
        if bounds["step"] == 0:
            raise gxo.ParamError("range.step", "must not be 0")
        return range(bounds["start"], bounds["stop"], bounds["step"])
    n = _int("range", value, "an integer or a mapping with start, stop, step")
    if n < 0:
        raise gxo.ParamError("range", f"must be at least 0, got {n}")
    return range(n)


def _int(name, value, what="an integer"):
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        shown = "a mapping" if isinstance(value, dict) else "a list" if isinstance(
            value, (list, tuple)) else repr(value)
        raise gxo.ParamError(name, f"expected {what}, got {shown}")
    return value


def _send(records, outputs):
    """Put every record on every output; return how many were sent."""
    if outputs:
        put = gxo.fan_out(outputs)
        for record in records:
            put(record)
    return len(records)


def _send_range(numbers, outputs):
    # The hot path of every benchmark: one dict and one put per number.
    if outputs:
        put = gxo.fan_out(outputs)
        for n in numbers:
            put({"value": n})
    return len(numbers)


def _open(path):
    if path.endswith(".gz"):
        import gzip
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _send_file(ctx, path, format, outputs, errors):
    try:
        f = _open(path)
    except IsADirectoryError:
        raise gxo.TaskError(f"file: {path} is a directory") from None
    except OSError as e:
        raise gxo.TaskError(f"file: cannot read {path}: {e.strerror or e}") from None
    put = gxo.fan_out(outputs)
    count = 0
    try:
        with f:
            if format == "lines":
                for count, line in enumerate(f, 1):
                    put({"line": line.rstrip("\r\n"), "number": count})
                return count
            loads, sent = json.loads, 0
            for count, line in enumerate(f, 1):
                try:
                    record = loads(line.strip())
                except ValueError as e:
                    if line.strip():
                        errors.put(gxo.RecordProcessingError(
                            ctx.name, f"{path}:{count}", f"invalid JSON ({e}): {_excerpt(line)}"))
                    continue
                if record.__class__ is not dict:
                    errors.put(gxo.RecordProcessingError(
                        ctx.name, f"{path}:{count}",
                        f"expected a JSON object, got {type(record).__name__}: {_excerpt(line)}"))
                    continue
                put(record)
                sent += 1
            return sent
    except (OSError, EOFError) as e:                # e.g. a truncated .gz file
        raise gxo.TaskError(f"file: error reading {path} after line {count}: {e}") from None


def _excerpt(line):
    line = line.strip()
    return line if len(line) <= 80 else line[:77] + "..."
