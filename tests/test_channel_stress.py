"""Channel under stress: lost wake-ups, wake-ups on close/detach/abort, promptness.

Every test that could hang on a lost wake-up is guarded: a timer aborts the
channel, which wakes every sleeper, and the test fails instead of hanging.
The GIL switch interval is made tiny where it matters, so that the lock-free
fast paths interleave with the slow paths in as many ways as possible.
"""

import random
import sys
import threading
import time

import pytest

import gxo
from helpers import blocked

GUARD = 20      # seconds before a stuck test aborts its channel and fails


@pytest.fixture
def busy_gil():
    """Switch threads every microsecond: many more interleavings per second."""
    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(saved)


class Guard:
    """Aborts a channel after GUARD seconds; ``tripped`` says it had to."""

    def __init__(self, channel, seconds=GUARD):
        self.tripped = False

        def trip():
            self.tripped = True
            channel.abort("guard: a side slept through its wake-up")
        self.timer = threading.Timer(seconds, trip)
        self.timer.daemon = True

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        assert not self.tripped, "lost wake-up: the guard had to abort the channel"


def start(fn, *args):
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


# -- no lost wake-ups

def pump(ch, writers, per_writer, pause=None):
    """Writers put {"w": writer, "i": n} records; read them all, guarded, and return them."""
    got = []

    def write(w):
        for i in range(per_writer):
            ch.put({"w": w, "i": i})

    with Guard(ch):
        threads = [start(write, w) for w in range(writers)]
        try:
            for record in ch:
                got.append(record)
                if pause is not None:
                    pause()
                if len(got) == writers * per_writer:
                    break
        except gxo.Cancelled as e:
            pytest.fail(f"{e} after {len(got)} records")
        for t in threads:
            t.join(GUARD)
            assert not t.is_alive()
    return got


def assert_each_writer_in_order(got, writers, per_writer):
    assert len(got) == writers * per_writer
    for w in range(writers):
        assert [r["i"] for r in got if r["w"] == w] == list(range(per_writer))


@pytest.mark.parametrize("capacity,writers,slow_reader", [
    (1, 1, False), (1, 4, False), (2, 3, False), (3, 4, True), (1, 4, True),
])
def test_many_writers_small_capacity_every_record_once_in_order(busy_gil, capacity, writers,
                                                                  slow_reader):
    rounds, per_writer = (25, 200) if not slow_reader else (20, 100)
    rng = random.Random(capacity * 100 + writers)

    def pause():                        # let writers run (and sleep) mid-run
        if rng.random() < 0.05:
            time.sleep(0)

    for _ in range(rounds):
        got = pump(gxo.Channel(capacity), writers, per_writer, pause if slow_reader else None)
        assert_each_writer_in_order(got, writers, per_writer)


def test_single_writer_capacity_one_then_close(busy_gil):
    for _ in range(100):
        ch = gxo.Channel(1)
        with Guard(ch):
            def write():
                for i in range(200):
                    ch.put({"n": i})
                ch.close()
            t = start(write)
            try:
                assert [r["n"] for r in ch] == list(range(200))
            except gxo.Cancelled as e:
                pytest.fail(str(e))
            t.join(GUARD)


def test_writer_asleep_mid_run_is_woken_by_the_next_read():
    """A writer that sleeps while the reader is in the middle of a run.

    The reader pops runs of records without looking at the writers' flags;
    the next single read must still wake a writer that went to sleep after
    the run started.
    """
    ch = gxo.Channel(3)
    for i in range(3):
        ch.put({"n": i})
    it = iter(ch)
    assert next(it) == {"n": 0}          # a run of three started; two left in it
    done = threading.Event()

    def write():
        ch.put({"n": 3})                 # fills the channel again
        ch.put({"n": 4})                 # full: sleeps
        done.set()
    t = start(write)
    with Guard(ch, 10):
        assert not done.wait(0.1), "put on a full channel did not block"
        assert next(it) == {"n": 1}
        assert done.wait(5), "the read did not wake the writer"
        ch.close()
        assert [r["n"] for r in it] == [2, 3, 4]
    t.join(5)


def _channel_code():
    codes = set()
    for cls in (gxo.Channel, *gxo.Channel.__subclasses__()):
        for value in vars(cls).values():
            value = getattr(value, "fget", value)
            if hasattr(value, "__code__"):
                codes.add(value.__code__)
    return codes


@pytest.fixture
def preempt_between_lines():
    """Let another thread run, now and then, between any two lines of Channel.

    CPython switches threads only at a few kinds of bytecode, so a window of
    a few lines in a fast path may never be preempted by chance; a lost
    wake-up hiding in such a window would then pass the tests above.  A trace
    function turns every line boundary in Channel's code into a switch point.
    """
    codes, rng = _channel_code(), random.Random(7)
    outer = sys.gettrace()              # coverage's tracer, under --cov: keep it for the rest

    def local(frame, event, arg):
        if event == "line" and rng.random() < 0.3:
            time.sleep(0)
        return local

    def trace(frame, event, arg):
        if frame.f_code in codes:
            return local
        return outer(frame, event, arg) if outer is not None else None
    threading.settrace(trace)
    sys.settrace(trace)
    yield
    sys.settrace(outer)
    threading.settrace(outer)


@pytest.mark.parametrize("capacity,writers", [(1, 1), (1, 3), (2, 2)])
def test_no_lost_wakeup_when_preempted_between_any_two_lines(preempt_between_lines,
                                                            capacity, writers):
    for _ in range(8):
        got = pump(gxo.Channel(capacity), writers, 150)
        assert_each_writer_in_order(got, writers, 150)


# -- close, detach and abort wake whoever sleeps

def _reader_asleep(ch):
    outcome = []

    def read():
        try:
            outcome.append(("records", [r["n"] for r in ch]))
        except gxo.Cancelled as e:
            outcome.append(("cancelled", str(e)))
    t = start(read)
    assert blocked(t), "reading an empty channel did not block"
    return t, outcome


def _writer_asleep(ch):
    ch.put({"n": 0})
    outcome = []

    def write():
        try:
            ch.put({"n": 1})
            outcome.append(("returned", None))
        except gxo.Cancelled as e:
            outcome.append(("cancelled", str(e)))
        except ValueError as e:
            outcome.append(("closed", str(e)))
    t = start(write)
    assert blocked(t), "put on a full channel did not block"
    return t, outcome


def _end(ch, how):
    """Close, detach or abort the channel, as ``how`` says."""
    {"close": lambda: ch.close(), "detach": lambda: ch.detach("consumer gone"),
     "abort": lambda: ch.abort("producer failed")}[how]()


@pytest.mark.parametrize("how,expected", [
    ("close", ("records", [])),
    ("detach", ("cancelled", "consumer gone")),
    ("abort", ("cancelled", "producer failed")),
])
def test_sleeping_reader_is_woken(how, expected):
    ch = gxo.Channel(2)
    t, outcome = _reader_asleep(ch)
    _end(ch, how)
    t.join(5)
    assert not t.is_alive() and outcome == [expected]


@pytest.mark.parametrize("how,expected", [
    ("close", "closed"),
    ("detach", "returned"),
    ("abort", "cancelled"),
])
def test_sleeping_writer_is_woken(how, expected):
    ch = gxo.Channel(1)
    t, outcome = _writer_asleep(ch)
    _end(ch, how)
    t.join(5)
    assert not t.is_alive() and [kind for kind, _ in outcome] == [expected]
    if how == "detach":
        assert ch.undelivered == 2      # the queued record and the dropped one


def test_abort_wakes_several_sleeping_writers_and_the_next_reads_raise():
    ch = gxo.Channel(1)
    ch.put({"n": 0})
    raised = []

    def write():
        try:
            ch.put({"n": 1})
        except gxo.Cancelled as e:
            raised.append(str(e))
    threads = [start(write) for _ in range(4)]
    assert all(blocked(t) for t in threads)
    ch.abort("stop")
    for t in threads:
        t.join(5)
    assert raised == ["stop"] * 4
    with pytest.raises(gxo.Cancelled, match="stop"):
        ch.put({"n": 2})


def test_detach_while_writers_race_counts_every_record(busy_gil):
    for _ in range(30):
        ch = gxo.Channel(2)
        delivered = []
        per_writer, writers = 500, 3

        def write():
            for i in range(per_writer):
                ch.put({"i": i})

        with Guard(ch):
            threads = [start(write) for _ in range(writers)]
            try:
                for record in ch:
                    delivered.append(record)
                    if len(delivered) == 200:
                        ch.detach("enough")
            except gxo.Cancelled as e:
                assert str(e) == "enough"
            for t in threads:
                t.join(GUARD)
                assert not t.is_alive()
        assert len(delivered) + ch.undelivered == writers * per_writer


# -- promptness: a record never waits for the producer's next put

def test_record_reaches_a_sleeping_reader_while_the_producer_stalls():
    ch, stall = gxo.Channel(100), threading.Event()

    def produce():
        ch.put({"n": 0})
        stall.wait(30)                  # e.g. exec waiting for a slow command's next line
    it = iter(ch)
    t = start(produce)
    with Guard(ch, 10):
        assert next(it) == {"n": 0}
    stall.set()
    t.join(5)


def test_record_put_during_a_run_reaches_the_reader_while_the_producer_stalls():
    ch, stall = gxo.Channel(100), threading.Event()
    for i in range(3):
        ch.put({"n": i})
    it = iter(ch)
    assert next(it) == {"n": 0}          # a run of three started

    def produce():
        ch.put({"n": 3})                 # after the run started, then nothing more
        stall.wait(30)
    t = start(produce)
    t.join(0.05)
    with Guard(ch, 10):
        assert [next(it)["n"] for _ in range(3)] == [1, 2, 3]
    stall.set()
    t.join(5)


# -- the rest of the contract

def test_idle_sides_use_no_cpu():
    full, empty = gxo.Channel(1), gxo.Channel(1)
    full.put({"n": 0})
    writer = start(full.put, {"n": 1})
    reader = start(lambda: list(empty))
    assert blocked(writer) and blocked(reader)
    cpu = time.process_time()
    time.sleep(0.5)
    assert time.process_time() - cpu < 0.1, "a blocked side is busy waiting"
    full.detach()
    empty.close()
    writer.join(5)
    reader.join(5)
    assert not writer.is_alive() and not reader.is_alive()


def test_used_says_whether_anything_streamed():
    ch = gxo.Channel(2)
    assert not ch.used
    ch.put({"n": 0})
    assert ch.used                      # queued
    assert next(iter(ch)) == {"n": 0}
    assert ch.used                      # taken
    ch = gxo.Channel(2)
    ch.close()
    assert list(ch) == [] and not ch.used    # read to the end, but nothing streamed
    ch = gxo.Channel(2)
    ch.detach()
    ch.put({"n": 0})                    # dropped: still, the producer sent it
    assert ch.used and ch.undelivered == 1


def test_two_iterators_in_turn_share_the_records():
    ch = gxo.Channel(10)
    for i in range(6):
        ch.put({"n": i})
    first, second = iter(ch), iter(ch)
    got = [next(first), next(second), next(first), next(second)]
    ch.close()
    got += list(first) + list(second)
    assert sorted(r["n"] for r in got) == list(range(6))


def test_copying_channel_is_a_channel_and_copies():
    ch = gxo._CopyingChannel(2)
    assert isinstance(ch, gxo.Channel) and ch.capacity == 2
    record = {"tags": ["x"]}
    ch.put(record)
    ch.close()
    [got] = list(ch)
    assert got == record and got is not record and got["tags"] is not record["tags"]
