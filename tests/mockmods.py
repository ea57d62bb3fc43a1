"""In-process modules for engine tests: no processes, fully controllable."""

import threading
import time
import weakref

import gxo

calls = []                      # (task, event, time) in call order, for ordering checks
_lock = threading.Lock()
_attempts = {}                  # task -> attempts so far (for fail_times)
alive_at_call = {}              # task -> summaries of "tracked" still alive at each call
_alive = weakref.WeakSet()


def reset():
    calls.clear()
    _attempts.clear()
    alive_at_call.clear()


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
