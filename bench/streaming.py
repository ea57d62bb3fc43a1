"""Streaming throughput: records -> filter -> collect through gxo vs bare threads.

    python bench/streaming.py                # N = 100,000 and 1,000,000, 3 runs each
    python bench/streaming.py --runs 5 --quick

gxo runs a three-task in-process pipeline, ``records (range N) -> filter
(keeps everything) -> collect (limit 0)``, with ``gxo.run_playbook`` on YAML
text at log level ERROR.  The floor is the same work in bare Python: three
threads joined by ``queue.Queue(maxsize=100)``.  Every measurement runs in a
fresh subprocess, so peak RSS (``ru_maxrss``) is per run; the time is taken
inside the child around the pipeline only (interpreter start-up excluded for
both).  Runs are interleaved (gxo, floor, gxo, ...); medians are reported.

Rows: S1 (filter ``where: true``, a constant: no template per record) is the
goal row, >= 1,000,000 records/s; S2 (``where`` is a real template,
``<< ge .value 0 >>``, rendered per record) is informational.

``run(**options) -> list[dict]`` gives the rows to bench/run.py.
Standard library only (gxo itself needs PyYAML).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
GOAL = 1_000_000                # records per second through gxo
SIZES = (100_000, 1_000_000)
TEMPLATE_WHERE = "<< ge .value 0 >>"

PLAYBOOK = """\
name: streaming-bench
tasks:
  - name: produce
    type: records
    params: {{range: {n}}}
  - name: keep
    type: filter
    stream_input: produce
    params: {{where: '{where}'}}
  - name: count
    type: collect
    stream_input: keep
    params: {{limit: 0}}
"""


# ------------------------------------------------------------------ children

def _child_gxo(n, where):
    import time
    sys.path.insert(0, ROOT)
    import gxo
    text = PLAYBOOK.format(n=n, where=where)
    start = time.perf_counter()
    result = gxo.run_playbook(text, log_level="ERROR")
    seconds = time.perf_counter() - start
    if not result.ok:
        bad = [f"{r.name}: {r.reason}" for r in result.tasks.values() if r.reason]
        raise SystemExit("gxo pipeline failed: " + "; ".join(bad))
    count = result.tasks["count"].summary["count"]
    errors = sum(r.record_errors for r in result.tasks.values())
    return {"seconds": seconds, "count": count, "record_errors": errors}


def _child_floor(n):
    """Three threads and two queue.Queue(maxsize=100): the bare-Python pipeline."""
    import queue
    import threading
    import time
    end = object()
    q1, q2 = queue.Queue(maxsize=100), queue.Queue(maxsize=100)
    out = {}

    def produce():
        put = q1.put
        for i in range(n):
            put({"value": i})
        put(end)

    def keep():
        get, put = q1.get, q2.put
        while True:
            record = get()
            if record is end:
                break
            put(record)
        put(end)

    def count():
        get, c = q2.get, 0
        while get() is not end:
            c += 1
        out["count"] = c

    threads = [threading.Thread(target=f) for f in (produce, keep, count)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"seconds": time.perf_counter() - start, "count": out["count"], "record_errors": 0}


def _child(argv):
    kind, n = argv[0], int(argv[1])
    report = _child_gxo(n, argv[2]) if kind == "gxo" else _child_floor(n)
    import resource
    report["rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(report))


# ------------------------------------------------------------------ measuring

def _measure(python, kind, n, where=None):
    argv = [python, os.path.abspath(__file__), "--child", kind, str(n)]
    if where is not None:
        argv.append(where)
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{kind} N={n} failed: {' | '.join(tail)}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if report["count"] != n:
        raise RuntimeError(f"{kind} N={n}: counted {report['count']} records, expected {n}"
                           f" ({report['record_errors']} record errors)")
    return report


def _median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def bench(n, runs, python, where="true", progress=None):
    """One row: gxo and the floor, interleaved, ``runs`` times each."""
    gxo_runs, floor_runs = [], []
    for i in range(runs):
        if progress:
            progress(f"N={n:,} where={where!r} round {i + 1}/{runs}")
        gxo_runs.append(_measure(python, "gxo", n, where))
        floor_runs.append(_measure(python, "floor", n))
    g, f = _median_of(gxo_runs, "seconds"), _median_of(floor_runs, "seconds")
    return {
        "n": n, "where": where, "runs": runs,
        "gxo_s": g, "floor_s": f,
        "gxo_records_per_s": n / g, "floor_records_per_s": n / f,
        "throughput_ratio": f / g,              # gxo's records/s over the floor's
        "gxo_rss_mib": _median_of(gxo_runs, "rss_kib") / 1024,
        "floor_rss_mib": _median_of(floor_runs, "rss_kib") / 1024,
    }


def _label(n):
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def run(runs=3, quick=False, python=None, verbose=False, sizes=SIZES, template_row=True):
    """Rows for bench/run.py (and this script's own table)."""
    python = python or sys.executable
    runs = 1 if quick else max(1, min(int(runs), 3))   # a 1M run takes seconds: cap the rounds
    progress = (lambda text: print(f"  streaming: {text}", file=sys.stderr, flush=True)) \
        if verbose else None
    cases = [("S1", n, "true", True) for n in sizes]
    if template_row:
        cases.append(("S2", sizes[0], TEMPLATE_WHERE, False))
    rows = []
    for sid, n, where, goal in cases:
        what = (f"records(range {n:,}) -> filter(where: {where}) -> collect(limit 0)")
        row = {"id": f"{sid}/{_label(n)}", "what": what,
               "goal": f">= {GOAL / 1e6:g}M records/s" if goal else None}
        try:
            row.update(bench(n, runs, python, where, progress))
        except Exception as e:      # e.g. a template engine without 'ge': report, go on
            row.update({"error": str(e), "met": False if goal else None})
            rows.append(row)
            continue
        row["ratio"] = row["gxo_s"] / row["floor_s"]      # bench/run.py's ratio: gxo / floor time
        row["met"] = row["gxo_records_per_s"] >= GOAL if goal else None
        rows.append(row)
    return rows


def table(rows):
    head = (f"{'row':<8} {'N':>9} {'where':<20} {'gxo rec/s':>11} {'floor rec/s':>12}"
            f" {'gxo/floor':>9} {'gxo RSS':>8} {'floor RSS':>9}  goal")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['id']:<8} FAILED: {r['error'][:200]}")
            continue
        goal = "-" if r["met"] is None else (
            f"{'met' if r['met'] else 'NOT met'} (>= {GOAL / 1e6:g}M/s)")
        lines.append(
            f"{r['id']:<8} {r['n']:>9,} {r['where'][:20]:<20} {r['gxo_records_per_s'] / 1e6:>9.3f}M"
            f" {r['floor_records_per_s'] / 1e6:>10.3f}M {r['throughput_ratio']:>8.2f}x"
            f" {r['gxo_rss_mib']:>6.1f}Mi {r['floor_rss_mib']:>7.1f}Mi  {goal}")
    lines.append("gxo/floor: gxo's records/s over the bare threads+queue.Queue(100) pipeline's;"
                 f" medians of {rows[0].get('runs', '?')} interleaved runs, each in a fresh process.")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="interleaved runs per row (default 3)")
    p.add_argument("--quick", action="store_true", help="one run per row")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)),
                   help="comma-separated record counts (default 100000,1000000)")
    p.add_argument("--no-template", action="store_true", help="skip the templated-where row")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    rows = run(runs=args.runs, quick=args.quick, verbose=True, sizes=sizes,
               template_row=not args.no_template)
    print(table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
