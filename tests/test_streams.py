"""Streams: channels and the engine's stream wiring (with mock modules)."""

import threading
import time

import pytest

import gxo
from helpers import blocked


# -- Channel

def test_channel_delivers_in_order_then_ends():
    ch = gxo.Channel(3)
    got = []
    reader = threading.Thread(target=lambda: got.extend(ch))
    reader.start()
    for i in range(1000):
        ch.put({"n": i})
    ch.close()
    reader.join(5)
    assert [r["n"] for r in got] == list(range(1000))


def test_channel_put_blocks_when_full_until_read():
    ch = gxo.Channel(2)
    ch.put({"n": 0})
    ch.put({"n": 1})
    put_done = threading.Event()

    def put_third():
        ch.put({"n": 2})
        put_done.set()
    threading.Thread(target=put_third, daemon=True).start()
    assert not put_done.wait(0.1), "put on a full channel did not block"
    it = iter(ch)
    assert next(it) == {"n": 0}
    assert put_done.wait(5), "reading did not wake the blocked put"
    ch.close()
    assert [r["n"] for r in it] == [1, 2]


@pytest.mark.parametrize("side", ["put", "get"])
def test_channel_abort_wakes_a_blocked_side(side):
    ch = gxo.Channel(1)
    if side == "put":
        ch.put({"n": 0})
        action = lambda: ch.put({"n": 1})   # noqa: E731
    else:
        action = lambda: list(ch)           # noqa: E731
    raised = []

    def blocked_side():
        try:
            action()
        except gxo.Cancelled as e:
            raised.append(str(e))
    t = threading.Thread(target=blocked_side, daemon=True)
    t.start()
    assert blocked(t), f"{side} did not block"
    ch.abort("stream producer p failed")
    t.join(5)
    assert not t.is_alive() and raised == ["stream producer p failed"]


def test_channel_detach_drops_and_counts():
    ch = gxo.Channel(10)
    for i in range(3):
        ch.put({"n": i})
    ch.detach()
    for i in range(20):             # never blocks: nobody reads any more
        ch.put({"n": i})
    assert ch.undelivered == 23


def test_channel_queued_counts_what_the_reader_can_take_now():
    ch = gxo.Channel(10)
    for i in range(3):
        ch.put({"n": i})
    it = iter(ch)
    assert ch.queued == 3 and next(it) == {"n": 0} and ch.queued == 2


def test_channel_detach_tells_the_producer():
    ch, calls = gxo.Channel(10), []
    ch.on_detach = lambda: calls.append(ch.detached)
    assert not ch.detached
    ch.close()
    ch.detach("gone")
    assert calls == [True] and ch.detached


def test_channel_copy_isolates_consumers():
    a, b = gxo.Channel(5), gxo._CopyingChannel(5)
    record = {"n": 1, "tags": ["x"]}
    a.put(record)
    b.put(record)
    a.close()
    b.close()
    first, second = next(iter(a)), next(iter(b))
    first["tags"].append("changed")
    assert second == {"n": 1, "tags": ["x"]}


def test_fan_out_puts_on_every_output_in_order():
    copying, last = gxo._CopyingChannel(5), gxo.Channel(5)
    put = gxo.fan_out([copying, last])
    record = {"n": 1, "tags": ["x"]}
    put(record)
    record["tags"].append("changed by the last consumer")
    for ch in (copying, last):
        ch.close()
    assert list(copying) == [{"n": 1, "tags": ["x"]}] and list(last) == [record]
    one = gxo.Channel(5)
    assert gxo.fan_out([one]) == one.put        # one output: nothing in between
    gxo.fan_out([])({"n": 2})                   # none: the record goes nowhere


# -- engine wiring

def numbers(records):
    return [r["n"] for r in records]


@pytest.mark.parametrize("buffer", [1, 7, 100])
def test_every_record_once_in_order_under_back_pressure(run, buffer):
    r = run("""
        name: pipe
        tasks:
          - {name: src, type: emit, params: {count: 3000}}
          - {name: dst, type: sink, stream_input: src, register: got}
    """, channel_buffer_size=buffer)
    assert r.ok, r.log
    assert numbers(r.state["got"]) == list(range(3000))


def test_slow_consumer_gets_everything(run):
    r = run("""
        name: slow
        tasks:
          - {name: src, type: emit, params: {count: 200}}
          - {name: dst, type: sink, stream_input: src, params: {delay: 0.001}, register: got}
    """, channel_buffer_size=2)
    assert numbers(r.state["got"]) == list(range(200))


def test_fan_out_every_consumer_gets_its_own_records(run):
    r = run("""
        name: fan-out
        tasks:
          - {name: src, type: emit, params: {count: 500}}
          - {name: mutator, type: sink, stream_input: src, params: {mutate: true}, register: a}
          - {name: reader, type: sink, stream_input: src, register: b}
          - {name: third, type: sink, stream_input: src, register: c}
    """, channel_buffer_size=3)
    assert r.ok, r.log
    assert numbers(r.state["b"]) == list(range(500)) == numbers(r.state["c"])
    assert all(rec["tags"] == ["x"] for rec in r.state["b"] + r.state["c"])
    assert all(rec["n"] == -1 for rec in r.state["a"]) and len(r.state["a"]) == 500


def test_pipeline_longer_than_concurrency_does_not_deadlock(run):
    stages = "\n".join(f"  - {{name: s{i}, type: sink, stream_input: s{i - 1}}}" for i in range(1, 6))
    r = run("name: long\ntasks:\n  - {name: s0, type: emit, params: {count: 1000}}\n"
            + stages + "\n  - {name: last, type: sink, stream_input: s5, register: got}",
            concurrency=1, channel_buffer_size=1)
    assert r.ok, r.log
    assert numbers(r.state["got"]) == list(range(1000))


def test_producer_failure_fails_its_consumer(run):
    r = run("""
        name: broken
        tasks:
          - {name: src, type: emit, ignore_errors: true, params: {count: 1000, fail_after: 50}}
          - {name: dst, type: sink, stream_input: src, register: got}
          - {name: after, type: fake, depends_on: [dst]}
    """, channel_buffer_size=5)
    assert r.status("src") == "Failed"
    assert r.status("dst") == "Failed"
    assert r.tasks["dst"].reason == "stream producer src failed"
    assert "got" not in r.state
    assert r.status("after") == "Skipped"


def test_consumer_that_stops_early_never_blocks_producer(run):
    r = run("""
        name: early
        tasks:
          - {name: src, type: emit, params: {count: 5000}}
          - {name: head, type: sink, stream_input: src, params: {stop_after: 5}, register: got}
    """, channel_buffer_size=10)
    assert r.ok, r.log
    assert numbers(r.state["got"]) == [0, 1, 2, 3, 4]
    assert "4995 records not delivered to head" in r.log


def test_skipped_consumer_does_not_block_producer(run):
    r = run("""
        name: skipped-consumer
        tasks:
          - {name: src, type: emit, params: {count: 500}}
          - {name: dst, type: sink, stream_input: src, when: "false"}
    """, channel_buffer_size=10)
    assert r.status("src") == "Completed" and r.status("dst") == "Skipped"
    assert "500 records not delivered to dst" in r.log


def test_skipped_producer_gives_an_empty_stream(run):
    r = run("""
        name: skipped-producer
        tasks:
          - {name: src, type: emit, when: "false", params: {count: 5}}
          - {name: dst, type: sink, stream_input: src, register: got}
    """)
    assert r.status("src") == "Skipped" and r.status("dst") == "Completed"
    assert r.state["got"] == []


def test_record_errors_are_logged_and_counted_not_fatal(run):
    r = run("""
        name: record-errors
        tasks:
          - {name: src, type: emit, params: {count: 100, bad_every: 10}}
          - {name: dst, type: sink, stream_input: src, register: got}
    """)
    assert r.ok
    assert r.tasks["src"].record_errors == 10
    assert len(r.state["got"]) == 90
    assert r.log.count("[RECORD_ERROR] task=src") == 10
    assert "10 record errors" in r.log


def test_cancellation_mid_stream_ends_every_stage(run):
    begin = time.monotonic()
    r = run("""
        name: cancel-stream
        tasks:
          - {name: src, type: emit, params: {count: 100000000}}
          - {name: mid, type: sink, stream_input: src, params: {delay: 0.0005}}
          - {name: dst, type: sink, stream_input: mid}
          - {name: boom, type: fake, params: {sleep: 0.2, fail: stop}}
    """, channel_buffer_size=4)
    assert time.monotonic() - begin < 10
    assert r.result.exit_code == 1
    for name in ("src", "mid", "dst"):
        assert r.status(name) == "Failed", name


def test_streaming_producer_is_not_retried_after_emitting(run):
    r = run("""
        name: no-dup
        tasks:
          - {name: src, type: emit, retry: {attempts: 3, delay: 1ms}, ignore_errors: true,
             params: {count: 100, fail_after: 5}}
          - {name: dst, type: sink, stream_input: src, ignore_errors: true}
    """)
    assert r.tasks["src"].attempts == 1
    assert "not retrying: records were already streamed" in r.log


def test_stream_consumer_cannot_loop(load):
    with pytest.raises(gxo.PlaybookError, match="cannot loop"):
        load("""
            name: x
            tasks:
              - {name: src, type: emit}
              - {name: dst, type: sink, stream_input: src, loop: [1, 2]}
        """)


def test_waiting_for_a_task_in_the_same_pipeline_is_a_cycle(load):
    with pytest.raises(gxo.PlaybookError, match="cycle: dst -> src"):
        load("""
            name: x
            tasks:
              - {name: src, type: emit, register: out}
              - {name: dst, type: sink, stream_input: src, params: {stop_after: "<< .out.emitted >>"}}
        """)


def test_streaming_producer_is_retried_before_its_first_record(run):
    r = run("""
        name: retry-early
        tasks:
          - {name: src, type: emit, retry: {attempts: 3, delay: 1ms}, ignore_errors: true,
             params: {count: 10, fail_after: 0}}
          - {name: dst, type: sink, stream_input: src, ignore_errors: true}
    """)
    assert r.tasks["src"].attempts == 3
    assert r.status("dst") == "Failed" and r.tasks["dst"].reason == "stream producer src failed"
