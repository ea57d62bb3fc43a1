"""log: write a message to gxo's log, for operators to read.

Params: ``message`` (required; templates are rendered like any param) and
``level`` (debug, info, warn or error; default info).  Summary: the message.
"""

import gxo

_LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40}


@gxo.register("log")
class Log(gxo.Module):

    supports_dry_run = True

    def parse_params(self, p):
        return {"message": p.str("message", required=True),
                "level": p.str("level", "info", choices=tuple(_LEVELS))}

    def perform(self, ctx, params, state, input, outputs, errors):
        ctx.log.log(_LEVELS[params["level"]], params["message"])
        return params["message"]
