"""log: write a message to gxo's log, for operators to read.

Params: ``message`` (required; templates are rendered like any param) and
``level`` (debug, info, warn or error; default info).  Summary: the message.
"""

import gxo


@gxo.register("log")
class Log(gxo.Module):

    supports_dry_run = True

    def parse_params(self, p):
        return {"message": p.str("message", required=True),
                "level": p.str("level", "info", choices=tuple(n.lower() for n in gxo.LEVELS))}

    def perform(self, ctx, params, state, input, outputs, errors):
        ctx.log.log(gxo.LEVELS[params["level"].upper()], params["message"])
        return params["message"]
