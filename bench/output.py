"""Memory of a command's output: peak RSS of gxo running a command that prints 1 GiB.

    python bench/output.py                  # 3 rounds of each row
    python bench/output.py --quick --gxo /tmp/old/gxo.py

gxo runs one exec task, ``python gxo.py -playbook FILE`` as an operator runs it
(log to a file), and its peak RSS is taken from ``os.wait4`` (the largest of
gxo and the processes it waited for).  The floor is bare Python that starts
the same command and reads its stdout to the end, keeping nothing: the least
any runner that watches the output can cost.  Rows:

  O1  ``yes | head -c 1G``: 512 Mi two-byte lines, no ``register``
  O2  the same with ``register`` (the summary is kept in the state)
  O3  ``head -c 1G /dev/zero | tr '\\0' x``: one line of 1 GiB, with ``register``
  O4  ``yes ab | head -c 1G`` with ``register``: the worst case, as many distinct
      short strings in ``stdout_lines`` as the kept output allows

Goal: gxo's peak RSS under 100 MiB in every row (exec keeps the head and tail
of each stream, ``max_output``, 2 MiB by default).  Times are informational.
``run(**options) -> list[dict]`` gives the rows to bench/run.py.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
GOAL_MIB = 100

ROWS = [
    ("O1", "yes | head -c 1G", False, "1 GiB of 2-byte lines, no register"),
    ("O2", "yes | head -c 1G", True, "1 GiB of 2-byte lines, register"),
    ("O3", "head -c 1G /dev/zero | tr '\\0' x", True, "one 1 GiB line, register"),
    ("O4", "yes ab | head -c 1G", True, "1 GiB of 3-byte lines, register"),
]

FLOOR = """\
import subprocess, sys
p = subprocess.Popen(sys.argv[1], shell=True, stdout=subprocess.PIPE)
while p.stdout.read1(1 << 16):
    pass
sys.exit(p.wait())
"""


def playbook(command, register):
    return ("name: output-bench\ntasks:\n  - name: big\n    type: exec\n"
            + ("    register: out\n" if register else "")
            + f"    params: {{command: {json.dumps(command)}, shell: true}}\n")


def _run(argv, cwd):
    """(seconds, peak RSS KiB, exit code) of one whole process."""
    with open(os.path.join(cwd, "log"), "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss, proc.returncode


def bench(command, register, runs, python, gxo, work, progress=None):
    book = os.path.join(work, "playbook.yml")
    with open(book, "w") as f:
        f.write(playbook(command, register))
    floor_py = os.path.join(work, "floor.py")
    with open(floor_py, "w") as f:
        f.write(FLOOR)
    results = {"gxo": [], "floor": []}
    for i in range(runs):
        for name, argv in (("gxo", [python, gxo, "-playbook", book]),
                           ("floor", [python, floor_py, command])):
            if progress:
                progress(f"{command!r} register={register} {name} round {i + 1}/{runs}")
            seconds, rss, code = _run(argv, work)
            if code != 0:
                with open(os.path.join(work, "log")) as f:
                    tail = f.read().strip().splitlines()[-3:]
                raise RuntimeError(f"{name} exited {code}: {' | '.join(tail)}")
            results[name].append((seconds, rss))
    med = {name: (statistics.median(s for s, _ in r), statistics.median(k for _, k in r) / 1024)
           for name, r in results.items()}
    return {"runs": runs, "gxo_s": med["gxo"][0], "floor_s": med["floor"][0],
            "ratio": med["gxo"][0] / med["floor"][0],
            "gxo_rss_mib": med["gxo"][1], "floor_rss_mib": med["floor"][1],
            "gxo_rss_max_mib": max(k for _, k in results["gxo"]) / 1024}


def run(runs=3, quick=False, python=None, gxo=None, verbose=False):
    """Rows for bench/run.py (and this script's own table)."""
    python = python or sys.executable
    gxo = os.path.abspath(gxo or os.path.join(ROOT, "gxo.py"))
    runs = 1 if quick else max(1, min(int(runs), 3))    # each run moves 1 GiB: cap the rounds
    progress = (lambda text: print(f"  output: {text}", file=sys.stderr, flush=True)) \
        if verbose else None
    rows = []
    for rid, command, register, what in ROWS:
        row = {"id": rid, "what": what, "command": command, "goal": f"peak RSS < {GOAL_MIB} MiB"}
        with tempfile.TemporaryDirectory(prefix="gxo-output-bench-") as work:
            try:
                row.update(bench(command, register, runs, python, gxo, work, progress))
                row["met"] = row["gxo_rss_max_mib"] < GOAL_MIB
            except Exception as e:
                row.update({"error": str(e), "met": False})
        rows.append(row)
    return rows


def table(rows):
    head = (f"{'row':<4} {'workload':<38} {'gxo':>8} {'floor':>8} {'gxo RSS':>9}"
            f" {'floor RSS':>9}  goal")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['id']:<4} FAILED: {r['error'][:200]}")
            continue
        lines.append(f"{r['id']:<4} {r['what']:<38} {r['gxo_s']:>7.2f}s {r['floor_s']:>7.2f}s"
                     f" {r['gxo_rss_mib']:>6.1f}MiB {r['floor_rss_mib']:>6.1f}MiB"
                     f"  {'met' if r['met'] else 'NOT met'} (< {GOAL_MIB} MiB)")
    lines.append(f"medians of {rows[0].get('runs', '?')} interleaved runs; RSS from os.wait4.")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="rounds per row (default 3)")
    p.add_argument("--quick", action="store_true", help="one round per row")
    p.add_argument("--gxo", help="the gxo.py to measure (default: this repo's)")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    rows = run(runs=args.runs, quick=args.quick, gxo=args.gxo, verbose=True)
    print(table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
