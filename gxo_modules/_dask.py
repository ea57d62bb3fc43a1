"""The Dask executor: exec calls run on the workers of a Dask cluster.

Imported only when a run asks for it (``-executor dask://...``); it needs
``distributed`` (``pip install 'gxo[dask]'``).  Only the launch of a process
goes remote: its argv, env additions, cwd, stdin and timeout; back come its
bounded stdout and stderr, exit code, host and worker.  Everything else
(DAG, state, templates, retries, timeouts, streams) stays in gxo.

Workers need ``distributed`` only, not gxo: the worker-side code is compiled
again under a module name no worker can import, so that Dask's serialiser
(plain pickle first, which would send a reference by name) falls back to
cloudpickle and sends it by value.  A cancel or timeout sets a
``distributed.Event`` that the worker-side code waits on, and it kills the
process group (Future.cancel() cannot stop a running task).
"""

import inspect
import logging
import re
import threading
import time
import uuid
from collections import Counter

import distributed

import gxo

from . import _process
from ._process import run

CONNECT_TIMEOUT = 10.0          # seconds to reach a scheduler
SETTLE = 3.0                    # seconds a stopped call has to report back after KILL
_LOOPBACK = "127.0.0.1:0"


def _on_worker(spec, key):
    """Run a spec on a Dask worker; the client's events KEY-stop / KEY-kill stop it."""
    from distributed import Event, get_worker
    result = run(spec, Event(key + "-stop").wait, Event(key + "-kill").wait)
    result["worker"] = get_worker().address
    return result


def _by_value():
    """_on_worker, with _process.run, compiled under a module name no one can import."""
    namespace = {"__name__": "gxo_shipped"}
    for source in (_process, _on_worker):
        lines, first = inspect.getsourcelines(source)
        # Blank lines in front keep line numbers (tracebacks, coverage) right.
        code = compile("\n" * max(0, first - 1) + "".join(lines), inspect.getsourcefile(source),
                       "exec")
        exec(code, namespace)
    return namespace["_on_worker"]


class DaskExecutor(gxo.Executor):
    """Runs exec calls on a Dask cluster (see gxo.Executor for the protocol).

    ``target``: a scheduler address "tcp://HOST:PORT", ("local", workers,
    threads) for a LocalCluster in this process, or a distributed.Client
    (which stays open: whoever made it closes it).
    """

    remote = True

    def __init__(self, target, log):
        self.log, self._owned = log, []
        if isinstance(target, distributed.Client):
            client = target
            self.name = f"dask ({client.scheduler.address})"
        elif isinstance(target, tuple):
            _, workers, threads = target
            self.name = f"dask://local?workers={workers}&threads={threads}"
            # Worker threads in this process: nothing to install, and a signal to gxo
            # reaches the commands through their stop events.  Their HTTP servers
            # (Dask starts them even without a dashboard) listen on loopback only.
            cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=threads, processes=False,
                dashboard_address=_LOOPBACK, worker_dashboard_address=_LOOPBACK,
                silence_logs=logging.ERROR)
            self._owned.append(cluster)
            client = distributed.Client(cluster, set_as_default=False)
            self._owned.append(client)
        elif isinstance(target, str):
            self.name = "dask://" + target.partition("://")[2]
            try:
                client = distributed.Client(target, timeout=CONNECT_TIMEOUT, set_as_default=False)
            except (OSError, TimeoutError) as e:
                raise gxo.GxoError(f"cannot reach the Dask scheduler {self.name}: {e}") from None
            self._owned.append(client)
        else:
            raise TypeError(f"executor must be {gxo._EXECUTORS}, a distributed.Client or a "
                            f"gxo.Executor, not {type(target).__name__}")
        self.client = client
        self._run = _by_value()
        self._lock, self._ran = threading.Lock(), Counter()
        workers = client.nthreads()
        log.info(f"executor {self.name}: {len(workers)} workers, {sum(workers.values())} threads"
                 + ("" if workers else " (exec calls wait until a worker joins)"))

    def submit(self, spec):
        label = re.sub(r"[^A-Za-z0-9_.]+", "_", str(spec.get("task", "exec")))[:40]
        key = f"gxo-{label}-{uuid.uuid4().hex}"
        future = self.client.submit(self._run, spec, key, key=key, pure=False)
        return _DaskCall(self, future, key, spec.get("task"))

    def _tally(self, task, result):
        with self._lock:
            self._ran[task, result.get("host"), result.get("worker")] += 1

    def close(self):
        """Log which workers ran which task's calls; close what this executor opened."""
        if self._ran:
            by_task = {}
            for (task, host, worker), n in sorted(self._ran.items(), key=lambda kv: -kv[1]):
                by_task.setdefault(task, []).append(f"{n} on {host} ({worker})")
            self.log.info(f"{self.name}: exec calls by worker:\n" + "\n".join(
                f"  {task}: {', '.join(where)}" for task, where in by_task.items()))
        # The cluster first (closing the client first logs tracebacks), and quietly:
        # a closing scheduler logs the stop-event waits of workers as errors, and
        # its comms log tracebacks from their threads even after close returns, so
        # the quiet stays (only a cluster of ours is closed here).
        if self._owned:
            for name in ["distributed", *logging.root.manager.loggerDict]:
                if name.startswith("distributed"):
                    logging.getLogger(name).setLevel(logging.CRITICAL)
        for thing in self._owned:
            thing.close()


class _DaskCall:
    """One exec call on the cluster: a future and the names of its stop events."""

    def __init__(self, executor, future, key, task):
        self._executor, self._future, self._key, self._task = executor, future, key, task
        self._wake, self._grace, self._sent = threading.Event(), None, []
        future.add_done_callback(lambda _: self._wake.set())

    def cancel(self, grace):
        self._grace = grace if self._grace is None else min(grace, self._grace)
        self._wake.set()

    def result(self, timeout=None):
        if not self._wake.wait(timeout):
            raise TimeoutError(f"no result after {timeout}s")
        future = self._future
        try:
            if not future.done():
                self._stop()
            result = future.result()
        finally:
            if future.done():           # the worker is done with the events: drop them
                for name in self._sent:
                    distributed.Event(name, self._executor.client).clear()
        self._executor._tally(self._task, result)
        return result

    def _stop(self):
        """TERM the remote group, KILL it after the grace; wait for the worker to confirm."""
        self._send("stop")
        begin = time.monotonic()
        if self._wait(lambda: begin + self._grace):
            return
        self._send("kill")
        end = time.monotonic() + SETTLE
        if not self._wait(lambda: end):
            # Not started (the cluster is busy) or its worker is lost: drop it.  The
            # events stay set, so that it stops at once if it starts after all.
            self._future.cancel()
            raise gxo.Cancelled("cancelled before the cluster answered")

    def _wait(self, end):
        """Wait until the call is done (True) or time.monotonic() passes end() (False)."""
        while True:
            self._wake.clear()
            if self._future.done():
                return True
            left = end() - time.monotonic()
            if left <= 0:
                return False
            self._wake.wait(left)

    def _send(self, what):
        name = f"{self._key}-{what}"
        distributed.Event(name, self._executor.client).set()
        self._sent.append(name)
