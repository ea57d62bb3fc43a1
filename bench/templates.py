"""Template render speed: gxo against Jinja2 on the same two templates.

    python bench/templates.py           # prints a small table
    python bench/templates.py --quick

Each template is parsed once (gxo's compile_template, Jinja2's
Environment.from_string); the rows time render(data) alone, in microseconds
per render: the best of several rounds, gxo and Jinja2 interleaved.
ratio = gxo / jinja2 (below 1: gxo is faster). Jinja2 is optional: without it
the rows carry gxo's time only. bench/run.py shows these rows via run().
"""

import argparse
import importlib.util
import os
import sys
import timeit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HOSTS = [{"name": f"web{i:02d}", "enabled": i % 3 != 0, "port": 8000 + i} for i in range(20)]
TEMPLATES = [
    # name, what, gxo template, Jinja2 template, data
    ("T1/sentence", "four fields in a sentence",
     "Deploying << .app >> v<< .version >> to << .env >> as << .user >>",
     "Deploying {{ app }} v{{ version }} to {{ env }} as {{ user }}",
     {"app": "shop", "version": "1.4.2", "env": "prod", "user": "deploy"}),
    ("T2/range-if", "range over 20 hosts: name, and port if enabled",
     "<< range .hosts >><< .name >><< if .enabled >>:<< .port >><< end >>\n<< end >>",
     "{% for h in hosts %}{{ h.name }}{% if h.enabled %}:{{ h.port }}{% endif %}\n{% endfor %}",
     {"hosts": HOSTS}),
]


def _load_gxo(path=None):
    """gxo from path (bench/run.py's --gxo), else the repository's gxo.py."""
    if path:
        spec = importlib.util.spec_from_file_location("gxo_under_bench", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module         # gxo looks itself up there as it starts
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
        spec.loader.exec_module(module)
        return module
    sys.path.insert(0, ROOT)
    import gxo
    return gxo


def _us_per_call(fn, seconds):
    """Microseconds per call of fn, timing about `seconds` in one round."""
    number, _ = timeit.Timer(fn).autorange()
    number = max(1, int(number * seconds / 0.2))
    return timeit.Timer(fn).timeit(number) / number * 1e6


def run(runs=5, quick=False, gxo=None):
    """Rows (name, what, gxo_us, jinja_us, ratio) for bench/run.py."""
    module = _load_gxo(gxo)
    try:
        import jinja2
        env = jinja2.Environment()
    except ImportError:
        env = None
    rounds, seconds = (1, 0.05) if quick else (max(1, min(int(runs), 7)), 0.2)
    rows = []
    for name, what, ours, theirs, data in TEMPLATES:
        template = module.compile_template(ours)
        jtemplate = env.from_string(theirs) if env else None
        if jtemplate is not None:
            assert template.render(data) == jtemplate.render(data), name
        gxo_times, jinja_times = [], []
        for _ in range(rounds):
            gxo_times.append(_us_per_call(lambda: template.render(data), seconds))
            if jtemplate is not None:
                jinja_times.append(_us_per_call(lambda: jtemplate.render(data), seconds))
        row = {"name": name, "what": what, "gxo_us": min(gxo_times),
               "jinja_us": min(jinja_times) if jinja_times else None}
        row["ratio"] = row["gxo_us"] / row["jinja_us"] if row["jinja_us"] else None
        row["goal"] = "gxo <= jinja2"
        row["met"] = None if row["ratio"] is None else row["ratio"] <= 1
        if jtemplate is None:
            row["note"] = "jinja2 not installed"
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="rounds per template (default 5)")
    p.add_argument("--quick", action="store_true", help="one short round")
    p.add_argument("--gxo", help="path of the gxo.py to time (default: this repository's)")
    args = p.parse_args(argv)
    rows = run(args.runs, args.quick, args.gxo)
    print(f"{'template':<13} {'gxo us':>8} {'jinja2 us':>10} {'gxo/jinja2':>10}  what")
    for r in rows:
        jinja = "-" if r["jinja_us"] is None else f"{r['jinja_us']:.2f}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['name']:<13} {r['gxo_us']:>8.2f} {jinja:>10} {ratio:>10}  {r['what']}")


if __name__ == "__main__":
    main()
