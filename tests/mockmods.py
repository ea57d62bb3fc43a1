"""The test module types, in-process: no processes, fully controllable.  Every type a
test runs is registered here, once, as the conftest imports this file."""

import operator
import threading
import time
import weakref

import gxo

calls = []                      # (task, event, time) in call order, for ordering checks
_lock = threading.Lock()
_attempts = {}                  # task -> attempts so far (for fail_times)
alive_at_call = {}              # task -> summaries of "tracked" still alive at each call
_alive = weakref.WeakSet()
handoff = threading.Event()     # "handoff" waits for "mutate" to change the record


def reset():
    calls.clear()
    _attempts.clear()
    alive_at_call.clear()
    handoff.clear()


def _note(ctx, event):
    with _lock:
        calls.append((ctx.name, event, time.monotonic()))


@gxo.register("fake")
class Fake(gxo.Module):
    """Returns ``result``; may sleep (cancellably), fail (giving ``summary``), or fail
    the first N tries; starts its work once task ``after`` has started."""

    def parse_params(self, p):
        return {"result": p.any("result"), "fail": p.str("fail"), "sleep": p.any("sleep", 0),
                "fail_times": p.int("fail_times", 0), "item": p.any("item"),
                "summary": p.any("summary"), "after": p.str("after")}

    def perform(self, ctx, params, state, input, outputs, errors):
        _note(ctx, "start")
        try:
            while params["after"] and (params["after"], "start") not in [c[:2] for c in calls]:
                time.sleep(0.002)
            if params["sleep"] and ctx.wait(float(params["sleep"])):
                raise gxo.Cancelled(ctx.reason)
            with _lock:
                n = _attempts[ctx.name] = _attempts.get(ctx.name, 0) + 1
            if n <= params["fail_times"]:
                raise gxo.TaskError(f"flaky failure {n}")
            if params["fail"]:
                raise gxo.TaskError(params["fail"], summary=params["summary"])
            return params["result"]
        finally:
            _note(ctx, "end")


@gxo.register("watch")
class Watch(gxo.Module):
    """Waits until task ``task`` has status ``status``, then returns ``result``; raises
    Cancelled if it was cancelled meanwhile, unless ``ignore_cancel`` (a module that
    returns as a halt arrives)."""

    def parse_params(self, p):
        return {"task": p.str("task", required=True), "status": p.str("status", required=True),
                "result": p.any("result"), "ignore_cancel": p.bool("ignore_cancel")}

    def perform(self, ctx, params, state, input, outputs, errors):
        _note(ctx, "start")
        deadline = time.monotonic() + 30
        while state["_gxo"]["tasks"].get(params["task"], {}).get("status") != params["status"]:
            if time.monotonic() > deadline:
                raise gxo.TaskError(f"{params['task']} never became {params['status']}")
            time.sleep(0.002)
        if ctx.cancelled and not params["ignore_cancel"]:
            raise gxo.Cancelled(ctx.reason)
        return params["result"]


@gxo.register("emit")
class Emit(gxo.Module):
    """Producer: ``count`` records {"n": i}; may fail after ``fail_after``."""

    def parse_params(self, p):
        return {"count": p.int("count", 0), "fail_after": p.int("fail_after"),
                "bad_every": p.int("bad_every"), "start": p.int("start", 0)}

    def perform(self, ctx, params, state, input, outputs, errors):
        for i in range(params["start"], params["start"] + params["count"]):
            if params["fail_after"] is not None and i >= params["fail_after"]:
                raise gxo.TaskError(f"emit broke at {i}")
            if params["bad_every"] and i % params["bad_every"] == 0:
                errors.put(gxo.RecordProcessingError(ctx.name, i, "bad record"))
                continue
            record = {"n": i, "tags": ["x"]}
            for out in outputs:
                out.put(record)
        return {"emitted": params["count"]}


@gxo.register("sink")
class Sink(gxo.Module):
    """Consumer: returns the records it read; may stop early, be slow, mutate, or pass on."""

    def parse_params(self, p):
        return {"stop_after": p.int("stop_after"), "delay": p.any("delay", 0),
                "mutate": p.bool("mutate"), "fail": p.str("fail")}

    def perform(self, ctx, params, state, input, outputs, errors):
        got = []
        for record in input:
            if params["mutate"]:
                record["n"] = -1
                record["tags"].append("mutated")
            got.append(record)
            for out in outputs:
                out.put(record)
            if params["delay"]:
                time.sleep(float(params["delay"]))
            if params["stop_after"] is not None and len(got) >= params["stop_after"]:
                break
        if params["fail"]:
            raise gxo.TaskError(params["fail"])
        return got


class _Summary(dict):
    """A summary that can be counted while alive."""

    __hash__ = object.__hash__


@gxo.register("tracked")
class Tracked(gxo.Module):
    """Returns a fresh summary, noting how many of its task's earlier ones are alive."""

    def perform(self, ctx, params, state, input, outputs, errors):
        alive_at_call.setdefault(ctx.name, []).append(
            sum(1 for s in list(_alive) if s["task"] == ctx.name))
        summary = _Summary(task=ctx.name)
        _alive.add(summary)
        return summary


@gxo.register("dry_probe")
class DryProbe(gxo.Module):
    """Supports dry runs: returns whether it was called in one."""

    supports_dry_run = True

    def perform(self, ctx, params, state, input, outputs, errors):
        return {"dry": ctx.dry_run}


@gxo.register("change_state")
class ChangeState(gxo.Module):
    """Tries to change the ``shared`` var of the state it was given; returns what each try
    raised ("TypeError" or what else) and a copy of ``shared``, changed."""

    def perform(self, ctx, params, state, input, outputs, errors):
        tries = {"append to a list": lambda: state["shared"]["list"].append(1),
                 "set a key": lambda: operator.setitem(state["shared"], "key", 2),
                 "add a var": lambda: operator.setitem(state, "new", 1)}
        raised = {}
        for what, change in tries.items():
            try:
                change()
                raised[what] = "nothing"
            except TypeError:
                raised[what] = "TypeError"
            except Exception as e:
                raised[what] = repr(e)
        copy = dict(state["shared"])
        copy["key"] = 3                         # a copy is free to change
        return {"raised": raised, "copy": copy}


@gxo.register("mutate")
class Mutate(gxo.Module):
    """Consumer that changes every record it gets, then returns them."""

    def parse_params(self, p):
        return None

    def perform(self, ctx, params, state, input, outputs, errors):
        got = []
        for record in input:
            record["seen"] = True
            if "tags" in record:
                record["tags"].append("changed")        # nested values are mutable too
            if record.get("value") == "original":
                record["value"] = "changed by consumer 1"
                handoff.set()
            got.append(record)
        return got


@gxo.register("handoff")
class Handoff(gxo.Module):
    """Producer: puts one record on output 1, waits until it was changed, then on the rest."""

    def parse_params(self, p):
        return None

    def perform(self, ctx, params, state, input, outputs, errors):
        record = {"value": "original"}
        outputs[0].put(record)
        handoff.wait(5)
        for out in outputs[1:]:
            out.put(record)
        return None


@gxo.register("emit_then_fail")
class EmitThenFail(gxo.Module):
    """Producer that sends ``count`` records and then fails."""

    def parse_params(self, p):
        return {"count": p.int("count", 1)}

    def perform(self, ctx, params, state, input, outputs, errors):
        for i in range(params["count"]):
            for out in outputs:
                out.put({"line": f"line {i}"})
        raise gxo.TaskError("broke after streaming")


@gxo.register("signal_own_thread")
class SignalOwnThread(gxo.Module):
    """Sends SIGINT to the worker thread it runs on (as the kernel may pick any
    thread for a process's signal), then waits to be cancelled."""

    def perform(self, ctx, params, state, input, outputs, errors):
        import linecache
        import signal
        import sys
        main = threading.main_thread().ident
        while True:                 # until the main thread sleeps, waiting for events
            frame = sys._current_frames().get(main)
            if frame and "_events.get" in linecache.getline(frame.f_code.co_filename,
                                                             frame.f_lineno):
                break
            time.sleep(0.005)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        if ctx.wait(10):
            raise gxo.Cancelled(ctx.reason)
        return "never cancelled"
