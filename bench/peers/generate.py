"""Write the bench workloads for gxo's peers: make, go-task and Ansible (local).

Each workload is a plain dict (see ``WORKLOADS`` in bench/run.py):

    kind      "chain" (each task waits for the previous one), "independent",
              "loop" (one task over ``n`` items) or "inprocess" (no process at all)
    n         number of tasks or loop items
    argv      the command each task runs, e.g. ["true"] or ["sleep", "0.05"]
    parallel  how many run at once (independent and loop kinds)

``PEERS[name](workload, directory)`` writes the peer's file(s) into
``directory`` and returns the argv that runs them, or None when the peer has no
fair way to run that workload.  The tool named by ``TOOLS[name]`` must be on
PATH to run it; writing the files never needs it.

Run directly to look at the files: ``python bench/peers/generate.py OUTDIR``.
"""

import json
import os
import shlex
import shutil
import sys


def _quote(argv):
    return " ".join(shlex.quote(a) for a in argv)


# ------------------------------------------------------------------ make

def make(w, d):
    """A Makefile: one phony target per task; -jN for the parallel kinds.

    GNU make runs a recipe without a shell when it has no shell syntax, so each
    ``true`` is one fork+exec, like gxo's exec module.
    """
    n, cmd = w["n"], _quote(w.get("argv", ()))
    names = [f"t{i}" for i in range(n)]
    lines = [".PHONY: all " + " ".join(names), ""]
    if w["kind"] == "chain":
        lines.append(f"all: t{n - 1}")
        for i, name in enumerate(names):
            lines += [f"{name}:" + (f" t{i - 1}" if i else ""), f"\t@{cmd}"]
    elif w["kind"] in ("independent", "loop"):
        lines.append("all: " + " ".join(names))
        for name in names:
            lines += [f"{name}:", f"\t@{cmd}"]
    elif w["kind"] == "inprocess":
        # Targets with an empty recipe: make only walks its graph.
        lines.append("all: " + " ".join(names))
        lines += [f"{name}: ;" for name in names]
    else:
        return None
    path = os.path.join(d, "Makefile")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    argv = ["make", "-s", "-f", path]
    if w["kind"] in ("independent", "loop"):
        argv.append(f"-j{w.get('parallel', 1)}")
    return argv + ["all"]


# ------------------------------------------------------------------ go-task

def _task_cmd(argv):
    # go-task runs cmds in its own shell interpreter, where ``true`` is a
    # builtin: name the binary so that a process is started, as elsewhere.
    if argv and "/" not in argv[0]:
        argv = [shutil.which(argv[0]) or f"/bin/{argv[0]}", *argv[1:]]
    return _quote(argv)


def taskfile(w, d):
    """A Taskfile.yml (version 3) for go-task; --concurrency for parallel kinds."""
    n, kind = w["n"], w["kind"]
    tasks = {}
    if kind == "chain":
        cmd = _task_cmd(w["argv"])
        for i in range(n):
            tasks[f"t{i}"] = {"cmds": [cmd], **({"deps": [f"t{i - 1}"]} if i else {})}
        tasks["default"] = {"deps": [f"t{n - 1}"]}
    elif kind == "independent":
        cmd = _task_cmd(w["argv"])
        for i in range(n):
            tasks[f"t{i}"] = {"cmds": [cmd]}
        tasks["default"] = {"deps": [f"t{i}" for i in range(n)]}
    elif kind == "loop":
        tasks["one"] = {"cmds": [_task_cmd(w["argv"])]}
        tasks["default"] = {"deps": [{"task": "one", "vars": {"ITEM": i}} for i in range(n)]}
    elif kind == "inprocess":
        for i in range(n):
            tasks[f"t{i}"] = {"cmds": []}
        tasks["default"] = {"deps": [f"t{i}" for i in range(n)]}
    else:
        return None
    path = os.path.join(d, "Taskfile.yml")
    with open(path, "w") as f:
        # JSON is YAML: no PyYAML needed to write it.
        json.dump({"version": "3", "tasks": tasks}, f, indent=1)
    argv = ["task", "--silent", "--taskfile", path]
    if kind in ("independent", "loop"):
        argv += ["--concurrency", str(w.get("parallel", 1))]
    return argv + ["default"]


# ------------------------------------------------------------------ ansible

def ansible(w, d):
    """An Ansible playbook on localhost with the local connection.

    Ansible runs the tasks of one host one after another and a loop's items
    one after another: its W2 and W3 are sequential (that is how operators
    get them).  It has no fair in-process workload of 10,000 tasks: None.
    """
    n, kind = w["n"], w["kind"]
    cmd = _quote(w.get("argv", ()))
    if kind in ("chain", "independent"):
        tasks = [{"name": f"t{i}", "ansible.builtin.command": cmd, "changed_when": False}
                 for i in range(n)]
    elif kind == "loop":
        tasks = [{"name": "loop", "ansible.builtin.command": cmd, "changed_when": False,
                  "loop": list(range(n))}]
    else:
        return None
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "tasks": tasks}]
    path = os.path.join(d, "playbook.yml")
    with open(path, "w") as f:
        json.dump(play, f, indent=1)
    return ["ansible-playbook", "-i", "localhost,", "-c", "local", path]


def ansible_env(env):
    """Quiet, reproducible Ansible settings (no retry files, no color, no cows)."""
    env = dict(env)
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_NOCOWS="1", ANSIBLE_RETRY_FILES_ENABLED="0",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
               ANSIBLE_HOST_KEY_CHECKING="0", ANSIBLE_DEPRECATION_WARNINGS="0",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    return env


PEERS = {"make": make, "task": taskfile, "ansible": ansible}
TOOLS = {"make": "make", "task": "task", "ansible": "ansible-playbook"}
ENV = {"ansible": ansible_env}


def available():
    """The peers whose tool is on PATH."""
    return [name for name, tool in TOOLS.items() if shutil.which(tool)]


def write_all(workloads, root):
    """Write every peer file for every workload under root/NAME/PEER/."""
    out = {}
    for wid, w in workloads.items():
        for peer, gen in PEERS.items():
            d = os.path.join(root, wid, peer)
            os.makedirs(d, exist_ok=True)
            out[(wid, peer)] = gen(w, d)
    return out


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from run import WORKLOADS
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/peers/generate.py OUTDIR")
    for (wid, peer), argv in write_all(WORKLOADS, sys.argv[1]).items():
        print(f"{wid:<3} {peer:<8} {_quote(argv) if argv else '(no fair equivalent)'}")
