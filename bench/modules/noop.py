"""noop: a module that does nothing, for measuring gxo's per-task overhead (bench W4).

Load it with ``-modules-dir bench/modules``.  Takes no params; returns None.
"""

import gxo


@gxo.register("noop")
class Noop(gxo.Module):

    def parse_params(self, p):
        return None

    def perform(self, ctx, params, state, input, outputs, errors):
        return None
