"""gxo's benchmark: gxo against the bare-Python floor (and make, go-task, Ansible).

    python bench/run.py                 # the full table, about two minutes
    python bench/run.py --quick         # a smoke run: one run per row, no warm-up
    python bench/run.py --only W0,W4 --runs 15 --json /tmp/b.json

Every row times whole processes: gxo as an operator runs it
(``python gxo.py -playbook FILE``, logs at the default INFO level going to a
file) against the *floor*, a bare Python script that does the same work and
nothing else (parse the YAML with yaml.CSafeLoader, start each process with
its output captured).  After a warm-up the contenders run in rounds, A and B
interleaved (the order rotates each round); a row reports the median time of
each and the median of the per-round ratios gxo / floor -- on a noisy machine
the ratio measured within one round is what counts.

Standard library only (the floors and gxo need PyYAML, as gxo does).  make,
go-task (``task``) and Ansible (``ansible-playbook``) are run on the same
workloads when they are on PATH (bench/peers/generate.py writes their files).
Rows of bench/templates.py, bench/streaming.py and bench/output.py, when present,
join the table.

See bench/README.md for what each row means.
"""

import argparse
import datetime
import importlib.util
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
GXO = os.path.join(ROOT, "gxo.py")
MODULES = os.path.join(BENCH, "modules")
sys.path.insert(0, BENCH)

from peers import generate as peers  # noqa: E402

# ------------------------------------------------------------------ workloads

# What each workload does, for gxo's playbook, the floor and the peers alike.
WORKLOADS = {
    "W0": {"kind": "chain", "n": 1, "argv": ["true"],
           "what": "1 task running `true` (start-up)"},
    "W1": {"kind": "chain", "n": 100, "argv": ["true"],
           "what": "100 tasks `true`, each depends_on the previous"},
    "W2": {"kind": "independent", "n": 100, "argv": ["sleep", "0.05"], "parallel": 8,
           "what": "100 independent `sleep 0.05`, -concurrency 8"},
    "W3": {"kind": "loop", "n": 200, "argv": ["true"], "parallel": 8,
           "what": "1 task looping over 200 items `true`, parallel 8"},
    "W4": {"kind": "inprocess", "n": 10000,
           "what": "10,000 independent in-process tasks (noop module)"},
    "W5": {"kind": "registers", "n": 10000,
           "what": "load + validate 10,000 register-chained tasks"},
}

# The rows of the table: a workload, how gxo is run, and the goal.
#   env: "cache"   bytecode is cached (in a private PYTHONPYCACHEPREFIX, warmed
#                  by the warm-up round) -- what an operator gets from the
#                  second run on;
#        "nocache" PYTHONDONTWRITEBYTECODE=1 and no prefix: gxo's own modules
#                  (and the floor's, were any not precompiled) compile on
#                  every start, as in this project's sandbox.
#   goal: ("ratio", max) on gxo/floor, or ("per_task", max µs, max MiB).
#   runs_factor: cheap rows get more rounds (--runs times this).
CASES = [
    {"id": "W0", "workload": "W0", "env": "cache", "goal": ("ratio", 1.30), "runs_factor": 3},
    {"id": "W1", "workload": "W1", "env": "cache", "goal": ("ratio", 1.25)},
    {"id": "W2", "workload": "W2", "env": "cache", "goal": ("ratio", 1.05),
     "gxo_args": ["-concurrency", "8"]},
    {"id": "W3", "workload": "W3", "env": "cache", "goal": ("ratio", 1.25)},
    {"id": "W4", "workload": "W4", "env": "cache", "goal": ("per_task", 100.0, 200.0),
     "gxo_args": ["-modules-dir", MODULES]},
    # The same with `python -m gxo` (what the installed `gxo` command does): the kernel
    # is imported, so its bytecode is cached; `python gxo.py` compiles the whole
    # file on every start, because CPython never caches the main script's bytecode.
    {"id": "W0/-m", "workload": "W0", "env": "cache", "goal": ("ratio", 1.30), "runs_factor": 3,
     "launch": "module", "what": "W0 run as python -m gxo", "peers": False},
    {"id": "W1/-m", "workload": "W1", "env": "cache", "goal": ("ratio", 1.25),
     "launch": "module", "what": "W1 run as python -m gxo", "peers": False},
    {"id": "W2/-m", "workload": "W2", "env": "cache", "goal": ("ratio", 1.05),
     "gxo_args": ["-concurrency", "8"], "launch": "module", "what": "W2 run as python -m gxo",
     "peers": False},
    # The single file operators copy (scripts/build_pyz.py, built here from the same
    # tree as --gxo): bytecode and its own pure-Python PyYAML inside the zip.
    {"id": "W0/pyz", "workload": "W0", "env": "cache", "goal": ("ratio", 1.00), "runs_factor": 3,
     "launch": "pyz", "what": "W0 run as python gxo.pyz", "peers": False},
    # Informational rows: what the defaults above cost.
    {"id": "W0/nocache", "workload": "W0", "env": "nocache", "goal": None, "runs_factor": 3,
     "what": "W0 with PYTHONDONTWRITEBYTECODE=1 (both sides)"},
    {"id": "W1/quiet", "workload": "W1", "env": "cache", "goal": None,
     "gxo_args": ["-log-level", "WARN"], "what": "W1 with gxo at -log-level WARN", "peers": False},
    {"id": "W4/quiet", "workload": "W4", "env": "cache", "goal": None,
     "gxo_args": ["-modules-dir", MODULES, "-log-level", "WARN"],
     "what": "W4 with gxo at -log-level WARN", "peers": False},
    # The Dask executor: W3 on a scheduler and 2 workers on this machine, against the
    # same gxo with the local executor (its "floor" here); needs `distributed`.
    {"id": "W3/dask", "workload": "W3", "env": "cache", "goal": None, "dask_workers": 2,
     "what": "W3 on 2 local Dask workers vs local executor", "peers": False},
    # Loading alone (gxo.load_playbook): the loader must stay linear in the tasks.
    {"id": "W5/load", "workload": "W5", "env": "cache", "goal": ("seconds", 2.0),
     "launch": "load", "peers": False},
]


def _yaml_str(s):
    return json.dumps(s)        # a JSON string is a YAML double-quoted scalar


def playbook_text(wid, w):
    """The workload as a gxo playbook (written by hand: no PyYAML needed here)."""
    lines = [f"name: {wid}", "tasks:"]
    kind, n = w["kind"], w["n"]

    def params():
        argv = w["argv"]
        out = f"    params: {{command: {_yaml_str(argv[0])}"
        if len(argv) > 1:
            out += ", args: [" + ", ".join(_yaml_str(a) for a in argv[1:]) + "]"
        return out + "}"

    if kind in ("chain", "independent"):
        for i in range(n):
            lines += [f"  - name: t{i}", "    type: exec"]
            if kind == "chain" and i:
                lines.append(f"    depends_on: t{i - 1}")
            lines.append(params())
    elif kind == "loop":
        lines += ["  - name: loop", "    type: exec",
                  "    loop: [" + ", ".join(str(i) for i in range(n)) + "]",
                  f"    loop_control: {{parallel: {w['parallel']}}}", params()]
    elif kind == "inprocess":
        for i in range(n):
            lines += [f"  - name: t{i}", "    type: noop"]
    elif kind == "registers":
        for i in range(n):
            arg = f"<< .r{i - 1}.stdout >>" if i else "first"
            lines += [f"  - name: t{i}", "    type: exec", f"    register: r{i}",
                      f"    params: {{command: echo, args: [{_yaml_str(arg)}]}}"]
    return "\n".join(lines) + "\n"


# The floors: bare Python doing the same work.  Each loads the same YAML.
_FLOOR_HEAD = """\
import subprocess, sys, yaml
doc = yaml.load(open(sys.argv[1], encoding="utf-8"), Loader=yaml.CSafeLoader)
"""

FLOORS = {
    "chain": _FLOOR_HEAD + """\
for t in doc["tasks"]:
    p = t["params"]
    subprocess.run([p["command"], *p.get("args", ())], capture_output=True, check=True)
""",
    "independent": _FLOOR_HEAD + """\
import threading
tasks, lock = iter(doc["tasks"]), threading.Lock()
def lane():
    while True:
        with lock:
            t = next(tasks, None)
        if t is None:
            return
        p = t["params"]
        subprocess.run([p["command"], *p.get("args", ())], capture_output=True, check=True)
lanes = [threading.Thread(target=lane) for _ in range(int(sys.argv[2]))]
for t in lanes:
    t.start()
for t in lanes:
    t.join()
""",
    "loop": _FLOOR_HEAD + """\
import threading
task = doc["tasks"][0]
p = task["params"]
argv = [p["command"], *p.get("args", ())]
items, lock = iter(task["loop"]), threading.Lock()
def lane():
    while True:
        with lock:
            item = next(items, None)
        if item is None:
            return
        subprocess.run(argv, capture_output=True, check=True)
lanes = [threading.Thread(target=lane) for _ in range(task["loop_control"]["parallel"])]
for t in lanes:
    t.start()
for t in lanes:
    t.join()
""",
    "registers": """\
import sys, yaml
yaml.load(open(sys.argv[1], encoding="utf-8"), Loader=yaml.CSafeLoader)
""",
    "inprocess": """\
import sys, yaml
doc = yaml.load(open(sys.argv[1], encoding="utf-8"), Loader=yaml.CSafeLoader)
def noop(task):
    return None
for t in doc["tasks"]:
    noop(t)
""",
}


# ------------------------------------------------------------------ measuring

class Contender:
    """One command to time: a name, its argv and environment."""

    def __init__(self, name, argv, env=None, cwd=None):
        self.name, self.argv, self.env, self.cwd = name, list(argv), env, cwd
        self.times, self.rss = {}, {}       # round -> seconds, round -> peak RSS (KiB)
        self.error = None                   # why it stopped being timed
        self.slow = False                   # slower than --slow: timed once only

    def summary(self):
        times = list(self.times.values())
        return {"argv": self.argv, "runs_s": [round(t, 6) for t in times],
                "median_s": statistics.median(times) if times else None,
                "min_s": min(times) if times else None,
                "peak_rss_kib": max(self.rss.values()) if self.rss else None,
                "error": self.error, "timed_once_as_slow": self.slow}


def run_once(argv, env=None, cwd=None, log=None):
    """Run argv to its end; (seconds, peak RSS in KiB, exit code).

    stdin is /dev/null; stdout and stderr go to ``log`` (a path; /dev/null
    if None), as when an operator sends them to a file.
    """
    out = open(log or os.devnull, "wb")
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
    finally:
        out.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_maxrss, proc.returncode


def _tail(path, lines=8):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return ""


def measure(contenders, runs, warmup=1, slow=5.0, logdir=None, progress=None):
    """Time the contenders in interleaved rounds (the order rotates each round).

    Round -1..-warmup are warm-ups (not recorded).  A contender whose warm-up
    took longer than ``slow`` seconds is run no more: that run is its time.  A contender
    that exits non-zero is dropped, with the tail of its output in ``error``.
    """
    logdir = logdir or tempfile.gettempdir()
    k = len(contenders)
    for r in range(-warmup, runs):
        order = contenders[r % k:] + contenders[:r % k]
        for c in order:
            if c.error or (c.slow and r >= 0 and c.times):
                continue
            log = os.path.join(logdir, f"{c.name.replace('/', '_')}.log")
            t, rss, rc = run_once(c.argv, c.env, c.cwd, log)
            if progress:
                progress(c, r, t)
            if rc != 0:
                c.error = f"exit code {rc}: {_tail(log)}"
                continue
            if r >= 0 or t > slow:
                c.times[r], c.rss[r] = t, rss
            if r < 0 and t > slow:
                c.slow = True       # warm-up effects are lost in its seconds: that run counts
    return contenders


def ratios(a, b):
    """Per-round ratios a/b over the rounds where both ran.

    A round where only ``a`` ran (a slow peer's single run) is set against
    b's median.
    """
    if not b.times:
        return []
    b_median = statistics.median(b.times.values())
    return [a.times[r] / b.times.get(r, b_median) for r in sorted(a.times)]


def differences(a, b):
    return [a.times[r] - b.times[r] for r in sorted(a.times) if r in b.times]


def _median(values):
    return statistics.median(values) if values else None


# ------------------------------------------------------------------ environment

def child_env(mode, cache_dir):
    """The environment of every timed process (the same for gxo, floor and peers).

    Python's defaults, whatever the caller's shell says: output buffering as
    Python chooses (PYTHONUNBUFFERED unset) and bytecode as ``mode`` says.
    """
    env = dict(os.environ)
    for name in ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
                 "PYTHONPROFILEIMPORTTIME", "PYTHONTRACEMALLOC", "PYTHONDEVMODE"):
        env.pop(name, None)
    if mode == "cache":
        env["PYTHONPYCACHEPREFIX"] = cache_dir      # never writes into the repo
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def machine_facts():
    facts = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    facts["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        probe = subprocess.run([sys.executable, "-c",
                                "import yaml; print(yaml.__version__, yaml.__with_libyaml__)"],
                               capture_output=True, text=True, check=True)
        version, libyaml = probe.stdout.split()
        facts["pyyaml"], facts["libyaml"] = version, libyaml == "True"
    except (subprocess.CalledProcessError, ValueError):
        facts["pyyaml"] = None
    try:
        with open(GXO, encoding="utf-8") as f:
            for line in f:
                if line.startswith("__version__"):
                    facts["gxo_version"] = line.split("=", 1)[1].strip().strip("\"'")
                    break
    except OSError:
        pass
    for tool in ("make", "task", "ansible-playbook"):
        facts[f"peer_{tool}"] = shutil.which(tool)
    return facts


# ------------------------------------------------------------------ one row

def bench_case(case, args, work, cache_dir, peer_names):
    w = WORKLOADS[case["workload"]]
    d = os.path.join(work, case["id"].replace("/", "_"))
    os.makedirs(d, exist_ok=True)
    book = os.path.join(d, "playbook.yml")
    with open(book, "w", encoding="utf-8") as f:
        f.write(playbook_text(case["workload"], w))
    floor_py = os.path.join(d, "floor.py")
    with open(floor_py, "w", encoding="utf-8") as f:
        f.write(FLOORS[w["kind"]])
    env = child_env(case["env"], cache_dir)
    floor_argv = [sys.executable, floor_py, book]
    if w["kind"] == "independent":
        floor_argv.append(str(w["parallel"]))
    floor = Contender("floor", floor_argv, env, d)
    launch = [args.gxo]
    if case.get("launch") in ("module", "load"):
        launch = ["-m", os.path.splitext(os.path.basename(args.gxo))[0]]
        env = {**env, "PYTHONPATH": os.path.dirname(args.gxo)}
    elif case.get("launch") == "pyz":
        launch = [os.path.join(work, "gxo.pyz")]
    argv = [*launch, "-playbook", book, *case.get("gxo_args", ())]
    if case.get("launch") == "load":
        argv = ["-c", f"import sys, {launch[1]}; {launch[1]}.load_playbook(sys.argv[1])", book]
    gxo = Contender("gxo", [sys.executable, *argv], env, d)
    if case.get("launch") == "pyz":
        gxo.error = build_pyz(args.gxo, launch[0])
    contenders = [floor, gxo]
    if case.get("peers", True):
        for name in peer_names:
            pd = os.path.join(d, name)
            os.makedirs(pd, exist_ok=True)
            argv = peers.PEERS[name](w, pd)
            if argv is not None:
                penv = peers.ENV.get(name, lambda e: e)(env)
                contenders.append(Contender(name, argv, penv, pd))

    def progress(c, r, t):
        if args.verbose:
            print(f"  {case['id']:<10} {c.name:<8} {'warm-up' if r < 0 else f'run {r + 1}':<8}"
                  f" {fmt_time(t)}", file=sys.stderr, flush=True)

    runs = args.runs * case.get("runs_factor", 1)
    if w["n"] >= 10000:
        runs = max(1, min(runs, args.runs_w4))
    measure(contenders, runs, args.warmup, args.slow, d, progress)

    row = {"id": case["id"], "workload": case["workload"],
           "what": case.get("what", w["what"]), "env": case["env"],
           "gxo_args": case.get("gxo_args", []), "n": w["n"],
           "floor": floor.summary(), "gxo": gxo.summary(), "peers": {}}
    r = ratios(gxo, floor)
    row["ratio_pairs"] = [round(x, 4) for x in r]
    row["ratio"] = _median(r)
    row["ratio_of_medians"] = (gxo.summary()["median_s"] / floor.summary()["median_s"]
                               if r else None)
    for c in contenders[2:]:
        pr = ratios(c, floor)
        row["peers"][c.name] = {**c.summary(), "ratio": _median(pr),
                                "ratio_pairs": [round(x, 4) for x in pr]}
    if w["kind"] == "inprocess" and r:
        n = w["n"]
        row["engine_us_per_task"] = (gxo.summary()["median_s"] - floor.summary()["median_s"]) / n * 1e6
        row["engine_us_per_task_pairs"] = _median(differences(gxo, floor)) / n * 1e6
    row["goal"], row["met"] = judge(case["goal"], row)
    return row


def build_pyz(gxo, target):
    """Build gxo.pyz from the tree of ``gxo`` (once); None, or why it could not."""
    if os.path.exists(target):
        return None
    script = os.path.join(os.path.dirname(gxo), "scripts", "build_pyz.py")
    if not os.path.exists(script):
        return f"cannot build gxo.pyz: no {script}"
    r = subprocess.run([sys.executable, script, "-o", target], capture_output=True, text=True)
    return f"cannot build gxo.pyz: {r.stderr.strip()[-300:]}" if r.returncode else None


def bench_dask_case(case, args, work, cache_dir):
    """W3 with -executor dask://... against the local executor, both gxo.

    A scheduler and ``dask_workers`` workers (parallel / workers threads each)
    run on 127.0.0.1 for the row.  W0 on both executors is timed too, to tell
    the fixed cost (importing distributed, connecting) from the cost per task.
    """
    w = WORKLOADS[case["workload"]]
    row = {"id": case["id"], "workload": case["workload"], "what": case["what"],
           "env": case["env"], "gxo_args": ["-executor", "dask://..."], "n": w["n"],
           "parallel": w["parallel"], "peers": {}}
    if importlib.util.find_spec("distributed") is None:
        empty = Contender("-", []).summary()
        return {**row, "floor": empty, "gxo": {**empty, "error": "distributed is not installed "
                "(pip install 'gxo[dask]')"}, "ratio": None, "goal": None, "met": None}
    d = os.path.join(work, case["id"].replace("/", "_"))
    os.makedirs(d, exist_ok=True)
    env = child_env(case["env"], cache_dir)
    books = {}
    for wid in ("W0", case["workload"]):
        books[wid] = os.path.join(d, f"{wid}.yml")
        with open(books[wid], "w", encoding="utf-8") as f:
            f.write(playbook_text(wid, WORKLOADS[wid]))
    with _dask_cluster(case["dask_workers"], w["parallel"] // case["dask_workers"], d) as address:
        dask = ["-executor", address.replace("tcp://", "dask://")]
        gxo = [sys.executable, args.gxo, "-playbook"]
        local, remote = (Contender("floor", gxo + [books["W3"]], env, d),
                         Contender("gxo", gxo + [books["W3"]] + dask, env, d))
        local0, remote0 = (Contender("W0-local", gxo + [books["W0"]], env, d),
                           Contender("W0-dask", gxo + [books["W0"]] + dask, env, d))
        # No --slow cut here: the warm-up compiles distributed's bytecode into the cache.
        measure([local, remote, local0, remote0], args.runs, args.warmup, float("inf"), d,
                lambda c, r, t: args.verbose and print(
                    f"  {case['id']:<10} {c.name:<8} {'warm-up' if r < 0 else f'run {r + 1}':<8}"
                    f" {fmt_time(t)}", file=sys.stderr, flush=True))
    row.update(floor=local.summary(), gxo=remote.summary(),
               startup={"local": local0.summary(), "dask": remote0.summary()})
    r = ratios(remote, local)
    row["ratio_pairs"], row["ratio"] = [round(x, 4) for x in r], _median(r)
    row["goal"], row["met"] = None, None
    if r and local0.times and remote0.times:
        med = {c.name: statistics.median(c.times.values()) for c in (local, remote, local0, remote0)}
        row["dask_startup_s"] = med["W0-dask"] - med["W0-local"]
        extra = (med["gxo"] - med["W0-dask"]) - (med["floor"] - med["W0-local"])
        row["dask_ms_per_task"] = extra / (w["n"] - 1) * 1000
        row["dask_call_latency_ms"] = row["dask_ms_per_task"] * w["parallel"]
    return row


class _dask_cluster:
    """A Dask scheduler and workers on 127.0.0.1, for one row; the address while it lives."""

    def __init__(self, workers, threads, d):
        self.workers, self.threads, self.d, self.procs = workers, threads, d, []

    def _spawn(self, module, *argv):
        log = open(os.path.join(self.d, "cluster.log"), "ab")
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", f"distributed.cli.{module}", *argv, "--no-dashboard",
             "--dashboard-address", "127.0.0.1:0"], cwd=self.d, stdin=subprocess.DEVNULL,
            stdout=log, stderr=log))
        log.close()

    def __enter__(self):
        info = os.path.join(self.d, "scheduler.json")
        self._spawn("dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", info)
        for i in range(self.workers):
            self._spawn("dask_worker", "--scheduler-file", info, "--nthreads", str(self.threads),
                        "--no-nanny", "--host", "127.0.0.1", "--name", f"w{i}")
        import distributed
        deadline, address = time.monotonic() + 60, None
        while address is None and time.monotonic() < deadline:
            try:                    # the scheduler writes its file in place: wait until whole
                with open(info) as f:
                    address = json.load(f)["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        with distributed.Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(self.workers, timeout=60)
        return address

    def __exit__(self, *exc):
        _stop_all(self.procs[1:])     # workers first: a scheduler closing under them can hang them
        _stop_all(self.procs[:1])


def _stop_all(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def judge(goal, row):
    """(goal as text, met: True/False/None)."""
    if goal is None:
        return None, None
    if row["gxo"]["error"] or row["floor"]["error"] or row["ratio"] is None:
        return _goal_text(goal), False
    if goal[0] == "ratio":
        return _goal_text(goal), row["ratio"] <= goal[1]
    if goal[0] == "seconds":
        return _goal_text(goal), row["gxo"]["median_s"] <= goal[1]
    us, mib = goal[1], goal[2]
    rss = (row["gxo"]["peak_rss_kib"] or 0) / 1024
    return _goal_text(goal), row["engine_us_per_task"] <= us and rss < mib


def _goal_text(goal):
    if goal[0] == "ratio":
        return f"<= {goal[1]:.2f}"
    if goal[0] == "seconds":
        return f"gxo <= {goal[1]:g}s"
    return f"<= {goal[1]:g} us/task, < {goal[2]:g} MiB"


# ------------------------------------------------------------------ other benches

EXTRAS = ("templates", "streaming", "output")  # bench/NAME.py: run(**options) -> rows

def extra_rows(name, args):
    """Rows from bench/NAME.py's run(), if that file exists."""
    path = os.path.join(BENCH, name + ".py")
    if not os.path.exists(path):
        return [], f"bench/{name}.py not present: skipped"
    try:
        spec = importlib.util.spec_from_file_location(f"gxo_bench_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        offered = {"runs": args.runs, "quick": args.quick, "warmup": args.warmup,
                   "gxo": args.gxo, "python": sys.executable, "verbose": args.verbose}
        params = inspect.signature(module.run).parameters
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            kwargs = offered
        else:
            kwargs = {k: v for k, v in offered.items() if k in params}
        rows = list(module.run(**kwargs))
    except Exception as e:      # another helper's bench must not sink this one
        return [], f"bench/{name}.py failed: {type(e).__name__}: {e}"
    for row in rows:
        if isinstance(row, dict):
            row.setdefault("source", name)
    return [r for r in rows if isinstance(r, dict)], None


# ------------------------------------------------------------------ output

def fmt_time(s):
    if s is None:
        return "-"
    if s < 0.001:
        return f"{s * 1e6:.1f}us"
    if s < 1:
        return f"{s * 1000:.1f}ms"
    return f"{s:.2f}s"


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}"


def _pick(row, *keys):
    for k in keys:
        if row.get(k) is not None:
            return row[k]
    return None


def _seconds_of(value):
    """A time from another bench's row: seconds, or a {'median_s': ...} summary."""
    if isinstance(value, dict):
        value = _pick(value, "median_s", "median", "seconds")
    return value if isinstance(value, (int, float)) else None


def table(report):
    m = report["machine"]
    s = report["settings"]
    out = [f"gxo bench  {m['date_utc']} UTC  {m['cpu_count']} CPUs ({m.get('cpu_model', '?')})"
           f"  {m['implementation']} {m['python']}  {m['platform']}",
           f"PyYAML {m.get('pyyaml')} (libyaml {'yes' if m.get('libyaml') else 'no'}); "
           f"{s['runs']} runs after {s['warmup']} warm-up (W4, W5: {s['runs_w4']}), interleaved; "
           f"medians; ratio = median of per-round gxo/floor; load avg "
           f"{' '.join(f'{x:.2f}' for x in m['loadavg_start'])} -> "
           f"{' '.join(f'{x:.2f}' for x in m['loadavg_end'])}",
           ""]
    head = (f"{'row':<11} {'workload':<50} {'floor':>9} {'gxo':>9} {'ratio':>6}"
            f"  {'goal':<26} {'met':<4} {'gxo RSS':>8}")
    out += [head, "-" * len(head)]
    for row in report["rows"]:
        if row.get("source"):
            out.append(_extra_line(row))
            continue
        g, f = row["gxo"], row["floor"]
        rss = f"{g['peak_rss_kib'] / 1024:.0f}MiB" if g["peak_rss_kib"] else "-"
        met = "-" if row["met"] is None else ("yes" if row["met"] else "NO")
        goal = row["goal"] or ""
        line = (f"{row['id']:<11} {row['what'][:50]:<50} {fmt_time(f['median_s']):>9}"
                f" {fmt_time(g['median_s']):>9} {fmt_ratio(row['ratio']):>6}  {goal:<26} {met:<4} {rss:>8}")
        out.append(line)
        if "dask_ms_per_task" in row:
            out.append(f"{'':<11}   dask: start-up +{fmt_time(row['dask_startup_s'])} (import, "
                       f"connect); +{row['dask_ms_per_task']:.2f} ms wall per task at parallel {row['parallel']}, "
                       f"i.e. ~{row['dask_call_latency_ms']:.1f} ms more latency per call")
        if "engine_us_per_task" in row:
            out.append(f"{'':<11}   engine time {row['engine_us_per_task']:.0f} us/task "
                       f"(median of per-round differences: {row['engine_us_per_task_pairs']:.0f});"
                       f" floor RSS {f['peak_rss_kib'] / 1024:.0f}MiB")
        for who in (g, f):
            if who["error"]:
                name = "gxo" if who is g else "floor"
                out.append(f"{'':<11}   {name} FAILED: {who['error'][:300]}")
        for name, p in row["peers"].items():
            label = "  " + name
            if p["error"]:
                out.append(f"{label:<11} {'':<50} {'':>9} {'FAILED':>9}   {p['error'][:120]}")
                continue
            once = ", run once: slow" if p["timed_once_as_slow"] else ""
            how = " ".join(os.path.basename(a) if a.startswith("/") else a for a in p["argv"])
            out.append(f"{label:<11} {how[:50]:<50} {'':>9} {fmt_time(p['median_s']):>9}"
                       f" {fmt_ratio(p['ratio']):>6}  {name} / floor{once}")
    for note in report["notes"]:
        out.append(f"note: {note}")
    return "\n".join(out)


def _short_value(v):
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return v


def _extra_line(row):
    rid = str(_pick(row, "id", "row", "name") or "?")
    what = str(_pick(row, "what", "workload", "description", "desc") or "")
    floor = _seconds_of(_pick(row, "floor_s", "floor", "floor_median_s"))
    gxo = _seconds_of(_pick(row, "gxo_s", "gxo", "gxo_median_s"))
    if gxo is None and isinstance(row.get("gxo_us"), (int, float)):
        gxo = row["gxo_us"] / 1e6
    ratio = _pick(row, "ratio", "ratio_median")
    met = row.get("met")
    met = "-" if met is None else ("yes" if met else "NO")
    goal = str(row.get("goal") or "")
    line = (f"{rid[:11]:<11} {what[:50]:<50} {fmt_time(floor):>9} {fmt_time(gxo):>9}"
            f" {fmt_ratio(ratio) if isinstance(ratio, (int, float)) else '-':>6}  {goal[:26]:<26} {met:<4}")
    shown = {"id", "row", "name", "what", "workload", "description", "desc", "floor_s", "floor",
             "floor_median_s", "gxo_s", "gxo", "gxo_median_s", "ratio", "ratio_median", "met",
             "goal", "source", "gxo_us"}
    rest = [f"{k}={_short_value(v)}" for k, v in row.items()
            if k not in shown and k != "error" and isinstance(v, (int, float, str))]
    if row.get("error"):
        rest.insert(0, f"FAILED: {row['error']}")
    if rest:
        line += "\n" + f"{'':<11}   " + ", ".join(x if len(x) < 60 else x[:57] + "..." for x in rest)[:200]
    return line


# ------------------------------------------------------------------ main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7, help="timed rounds per row (default 7)")
    p.add_argument("--runs-w4", type=int, default=5,
                   help="timed rounds for the 10,000-task rows (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds (default 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, no warm-up")
    p.add_argument("--only", help="comma-separated row ids (e.g. W0,W4,W4/quiet,streaming)")
    p.add_argument("--peers", default="auto",
                   help="auto (those on PATH), none, or a list like make,task,ansible")
    p.add_argument("--slow", type=float, default=5.0,
                   help="a contender whose warm-up takes longer is timed once (default 5s)")
    p.add_argument("--no-extra", action="store_true",
                   help="skip bench/templates.py, streaming.py and output.py")
    p.add_argument("--json", default=os.path.join(BENCH, "results.json"),
                   help="where to write the figures (default bench/results.json)")
    p.add_argument("--gxo", default=GXO, help="the gxo.py to time (default: this repo's)")
    p.add_argument("-v", "--verbose", action="store_true", help="print each run to stderr")
    args = p.parse_args(argv)
    args.gxo = os.path.abspath(args.gxo)     # the timed processes run in temp dirs
    if args.quick:
        args.runs, args.runs_w4, args.warmup = 1, 1, 0
    if args.runs < 1 or args.warmup < 0:
        p.error("--runs must be at least 1 and --warmup at least 0")
    return args


def preflight(gxo, env, work):
    """gxo must run at all: a broken checkout fails here, once, with its message."""
    d = os.path.join(work, "preflight")
    os.makedirs(d, exist_ok=True)
    book = os.path.join(d, "playbook.yml")
    with open(book, "w") as f:
        f.write(playbook_text("preflight", WORKLOADS["W0"]))
    log = os.path.join(d, "gxo.log")
    _, _, rc = run_once([sys.executable, gxo, "-playbook", book], env, d, log)
    if rc != 0:
        sys.exit(f"bench: gxo does not run (exit code {rc}):\n{_tail(log, 20)}")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cases, extras = CASES, [] if args.no_extra else list(EXTRAS)
    if args.only:
        wanted = [x.strip() for x in args.only.split(",") if x.strip()]
        unknown = [x for x in wanted if x not in {c["id"] for c in CASES} | set(EXTRAS)]
        if unknown:
            sys.exit(f"bench: unknown row {', '.join(unknown)}; rows: "
                     + ", ".join([c["id"] for c in CASES] + list(EXTRAS)))
        cases = [c for c in CASES if c["id"] in wanted]
        extras = [x for x in extras if x in wanted]
    if args.peers == "auto":
        peer_names = peers.available()
    elif args.peers == "none":
        peer_names = []
    else:
        peer_names = [x.strip() for x in args.peers.split(",") if x.strip()]
        missing = [x for x in peer_names if x not in peers.PEERS or
                   not shutil.which(peers.TOOLS[x])]
        if missing:
            sys.exit(f"bench: peer not available: {', '.join(missing)}")

    report = {"machine": machine_facts(),
              "settings": {"runs": args.runs, "runs_w4": min(args.runs, args.runs_w4),
                           "warmup": args.warmup, "slow_s": args.slow, "peers": peer_names,
                           "gxo": os.path.abspath(args.gxo),
                           "gxo_log": "INFO unless the row says otherwise, to a file",
                           "bytecode": "rows with env=cache: PYTHONPYCACHEPREFIX in a temp dir, "
                                       "PYTHONDONTWRITEBYTECODE unset; env=nocache: "
                                       "PYTHONDONTWRITEBYTECODE=1",
                           "env": "PYTHONUNBUFFERED unset for every timed process"},
              "rows": [], "notes": []}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gxo-bench-") as work:
        cache_dir = os.path.join(work, "pycache")
        preflight(args.gxo, child_env("cache", cache_dir), work)
        for case in cases:
            print(f"bench: {case['id']} ...", file=sys.stderr, flush=True)
            if case.get("dask_workers"):
                report["rows"].append(bench_dask_case(case, args, work, cache_dir))
            else:
                report["rows"].append(bench_case(case, args, work, cache_dir, peer_names))
    for name in extras:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        rows, note = extra_rows(name, args)
        report["rows"] += rows
        if note:
            report["notes"].append(note)
    report["machine"]["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    report["settings"]["wall_s"] = round(time.monotonic() - started, 1)
    goals = [r for r in report["rows"] if r.get("met") is not None]
    report["goals_met"] = sum(1 for r in goals if r["met"])
    report["goals_total"] = len(goals)
    print(table(report))
    print(f"\n{report['goals_met']} of {report['goals_total']} goals met; "
          f"bench took {report['settings']['wall_s']}s; figures in {args.json}")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, default=str)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
