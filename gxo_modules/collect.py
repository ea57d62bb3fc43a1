"""collect: gather the records of a stream into the task's summary.

With ``register``, this turns a stream into state that later tasks read in
templates (``<< .errors.count >>``, ``<< range .errors.records >>``).

Params:

``limit``   the most records to keep (default 1000; 0 keeps none and only
            counts).  Records past the limit are still counted, never kept,
            so memory stays bounded however long the stream.

Summary: ``{"records": [...], "count": n, "truncated": bool}`` where
``count`` is every record read and ``truncated`` says some were not kept.
Tasks that stream from a collect task get every record, unchanged.
"""

from itertools import islice

import gxo

DEFAULT_LIMIT = 1000


@gxo.register("collect")
class Collect(gxo.Module):

    supports_dry_run = True

    def parse_params(self, p):
        return {"limit": p.int("limit", DEFAULT_LIMIT, min=0)}

    def perform(self, ctx, params, state, input, outputs, errors):
        if input is None:
            raise gxo.TaskError("collect needs stream_input: the name of the task whose "
                                "records it collects")
        limit = params["limit"]
        count = 0
        if not outputs:
            # Keep the first `limit` records (islice runs in C), then count the rest.
            stream = iter(input)
            records = list(islice(stream, limit)) if limit else []
            count = len(records)
            if count == limit:
                for count, _ in enumerate(stream, count + 1):
                    pass
        else:
            # Keep copies: a consumer downstream may change the records it gets.
            records = []

            keep, put = records.append, gxo.fan_out(outputs)
            for count, record in enumerate(input, 1):
                if count <= limit:
                    keep(gxo.copy_record(record))
                put(record)
        return {"records": records, "count": count, "truncated": count > len(records)}
