"""filter: pass on the records of a stream that meet a condition.

Params (at least one of ``where``, ``match``; with both, a record must meet both):

``where``   a condition rendered once per record, e.g.
            ``'<< eq .level "ERROR" >>'``.  The record is the dot: ``.level``
            is the record's ``level``; a name the record does not have comes
            from the playbook's vars and registered values (``.threshold``).
            A record is kept when the result is true in the sense of
            ``when``: not false/no/off/0/empty.  A record the condition cannot
            be rendered for (a missing field, say) is a record error and is
            dropped.  A condition without template actions (``true``) is
            decided once, not per record.
``match``   a regular expression (Python syntax) searched for in ``field``;
            e.g. ``match: "ERROR|FATAL"``.
``field``   the field ``match`` looks at (default ``line``, what records
            and exec produce from text).

Summary: ``{"count": kept, "dropped": n, "seen": n}``; without any consumer
the filter just counts, so ``register`` gives the number of matches.
"""

import gxo


@gxo.register("filter")
class Filter(gxo.Module):

    supports_dry_run = True
    raw_params = ("where",)         # rendered here, once per record

    def parse_params(self, p):
        where = p.any("where")
        if isinstance(where, (dict, list, tuple)):
            raise gxo.ParamError("where", "expected a condition such as "
                                          "'<< eq .level \"ERROR\" >>', got a "
                                          + ("mapping" if isinstance(where, dict) else "list"))
        match, field = p.str("match"), p.str("field")
        if match is not None and not p.unrendered(match):
            import re
            try:
                match = re.compile(match)
            except re.error as e:
                raise gxo.ParamError("match", f"invalid regular expression {match!r}: {e}") from None
        p.finish()                  # a misspelt param first: "did you mean 'where'?"
        if field is not None and match is None:
            raise gxo.ParamError("field", "only applies to 'match' (in 'where', name fields "
                                          "directly: .field)")
        if where is None and match is None:
            raise gxo.ParamError("where", "is required: a condition per record, like "
                                          "'<< eq .level \"ERROR\" >>' (or give 'match', a "
                                          "regular expression)")
        return {"where": where, "match": match, "field": field or "line"}

    def perform(self, ctx, params, state, input, outputs, errors):
        if input is None:
            raise gxo.TaskError("filter needs stream_input: the name of the task whose "
                                "records it filters")
        put = gxo.fan_out(outputs) if outputs else None
        where, search = params["where"], params["match"]
        search = search.search if search is not None else None
        template = needed = None
        if where is not None:
            delimiters = ctx.delimiters
            if isinstance(where, str) and delimiters[0] in where:
                compiled = gxo.compile_template(where, delimiters)    # once per task
                template = compiled.resolve
                needed = _state_read(compiled, state)
            elif not gxo.truthy(where):
                # Constant false: keep nothing, but read the stream to its end.
                seen = 0
                for seen, _ in enumerate(input, 1):
                    pass
                return {"count": 0, "dropped": seen, "seen": seen}
        field, name = params["field"], ctx.name
        seen = kept = 0
        if template is None and search is None:
            # No condition left (where: true): pass everything through.
            if put is None:
                for seen, _ in enumerate(input, 1):
                    pass
            else:
                for seen, record in enumerate(input, 1):
                    put(record)
            return {"count": seen, "dropped": 0, "seen": seen}
        dropped = 0
        truthy, TemplateError = gxo.truthy, gxo.TemplateError
        for seen, record in enumerate(input, 1):
            if search is not None:
                try:
                    value = record[field]
                except (KeyError, TypeError, IndexError):
                    errors.put(gxo.RecordProcessingError(name, _short(record),
                                                         f"no field '{field}' to match"))
                    continue
                if (search(value) if value.__class__ is str else search(_text(value))) is None:
                    dropped += 1
                    continue
            if template is not None:
                try:
                    value = template(record if needed is None else {**needed, **record})
                except TemplateError as e:
                    errors.put(gxo.RecordProcessingError(name, _short(record), f"where: {e}"))
                    continue
                if value is not True and (value is False or not truthy(value)):
                    dropped += 1
                    continue
            kept += 1
            if put is not None:
                put(record)
        return {"count": kept, "dropped": dropped, "seen": seen}


def _state_read(compiled, state):
    """The vars and registered values the condition reads, or None for none.

    The record is the template's dot; a field it does not have comes from
    state.  Rather than a ChainMap per record (slow lookups, and the template
    engine's fast path is for plain dicts), the few state values the condition
    names are looked up once and merged under each record; a condition that
    reads only record fields gets the record itself: no copy at all.
    """
    roots = {path.split(".", 1)[0] for path in compiled.variables}
    needed = {name: state[name] for name in roots if name in state}
    return needed or None


def _text(value):
    return value if isinstance(value, str) else gxo.format_value(value)


def _short(record):
    """A record, shortened for a log line."""
    text = _text(record)
    return text if len(text) <= 80 else text[:77] + "..."
