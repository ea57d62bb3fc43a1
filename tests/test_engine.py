"""Engine integration tests with in-process mock modules (see mockmods.py)."""

import threading
import time

import pytest

import gxo
import mockmods


def overlap(name_prefix=""):
    """Most tasks that were running at the same moment, from mockmods.calls."""
    running = best = 0
    for task, event, _ in sorted(mockmods.calls, key=lambda c: (c[2], c[1] == "start")):
        if task.startswith(name_prefix):
            running += 1 if event == "start" else -1
            best = max(best, running)
    return best


def order():
    return [task for task, event, _ in mockmods.calls if event == "start"]


# -- state passing, DAG order

def test_register_passes_state_and_orders_tasks(run):
    r = run("""
        name: state
        vars: {base: 10}
        tasks:
          - name: second
            type: fake
            params: {result: "<< .first_out.value >>-<< .base >>"}
            register: second_out
          - name: first
            type: fake
            params: {result: {value: 42}}
            register: first_out
    """)
    assert r.ok and r.result.exit_code == 0
    assert order() == ["first", "second"]
    assert r.state["second_out"] == "42-10"
    assert r.state["first_out"] == {"value": 42}
    assert r.state["_gxo"]["tasks"]["first"]["status"] == "Completed"


def test_single_action_keeps_native_type(run):
    r = run("""
        name: native
        vars: {hosts: [a, b], n: 3}
        tasks:
          - name: t
            type: fake
            params: {result: {hosts: "<< .hosts >>", n: "  << .n >> ", text: "n=<< .n >>"}}
            register: out
    """)
    assert r.state["out"] == {"hosts": ["a", "b"], "n": 3, "text": "n=3"}


def test_depends_on_orders_without_data(run):
    r = run("""
        name: deps
        tasks:
          - {name: c, type: fake, depends_on: [b]}
          - {name: b, type: fake, depends_on: a}
          - {name: a, type: fake}
    """)
    assert r.ok
    assert order() == ["a", "b", "c"]


def test_cli_vars_override_and_feed_later_vars(run):
    r = run("""
        name: vars
        vars:
          env: dev
          url: "https://<< .env >>.example.com"
        tasks:
          - {name: t, type: fake, params: {result: "<< .url >>"}, register: out}
    """, vars={"env": "prod"})
    assert r.state["out"] == "https://prod.example.com"
    assert r.state["env"] == "prod"


# -- when

@pytest.mark.parametrize("cond, runs", [
    ("true", True), ("false", False), ("no", False), ("off", False), ("0", False),
    ("0.0", False), ("''", False), ("yes", True), ("1", True), ("anything", True),
])
def test_when_truthiness(run, cond, runs):
    r = run(f"""
        name: when
        tasks:
          - {{name: t, type: fake, when: {cond}}}
    """)
    assert r.status("t") == ("Completed" if runs else "Skipped")
    assert r.ok


def test_when_on_task_status_and_skipped_dependency_still_runs(run):
    r = run("""
        name: status
        vars: {deploy: false}
        tasks:
          - {name: optional, type: fake, when: "<< .deploy >>"}
          - name: fallback
            type: fake
            when: '<< eq ._gxo.tasks.optional.status "Skipped" >>'
          - name: never
            type: fake
            when: '<< eq ._gxo.tasks.optional.status "Completed" >>'
    """)
    assert r.status("optional") == "Skipped"
    assert r.status("fallback") == "Completed"
    assert r.status("never") == "Skipped"
    assert r.tasks["never"].reason == "'when' is false"


def test_when_error_skips_with_warning(run):
    r = run("""
        name: when-error
        vars: {m: {a: 1}}
        tasks:
          - {name: t, type: fake, when: "<< .m.b >>"}
    """)
    assert r.status("t") == "Skipped"
    assert "'when' failed" in r.tasks["t"].reason
    assert "WARN" in r.log and "'when' could not be evaluated" in r.log


# -- loops

def test_loop_list_registers_summaries_in_order(run):
    r = run("""
        name: loop
        tasks:
          - name: t
            type: fake
            loop: [a, b, c]
            loop_control: {index_var: i}
            params: {result: "<< .i >>:<< .item >>"}
            register: out
    """)
    assert r.state["out"] == ["0:a", "1:b", "2:c"]


def test_loop_over_template_and_mapping_with_loop_var(run):
    r = run("""
        name: loop
        vars:
          hosts: [web1, web2]
          ports: {http: 80, https: 443}
        tasks:
          - name: hosts
            type: fake
            loop: "<< .hosts >>"
            loop_control: {loop_var: host}
            params: {result: "<< .host >>"}
            register: h
          - name: ports
            type: fake
            loop: "<< .ports >>"
            params: {result: "<< .item.key >>=<< .item.value >>"}
            register: p
    """)
    assert r.state["h"] == ["web1", "web2"]
    assert r.state["p"] == ["http=80", "https=443"]


def test_empty_loop_completes_and_registers_empty_list(run):
    r = run("""
        name: loop
        vars: {none: []}
        tasks:
          - {name: t, type: fake, loop: "<< .none >>", register: out}
    """)
    assert r.status("t") == "Completed" and r.state["out"] == []


def test_loop_not_a_list_fails(run):
    r = run("""
        name: loop
        vars: {s: "a,b"}
        tasks:
          - {name: t, type: fake, loop: "<< .s >>"}
    """)
    assert r.status("t") == "Failed"
    assert "loop must be a list or a mapping, got the string 'a,b'" in r.tasks["t"].reason


def test_parallel_loop_runs_items_concurrently_within_limit(run):
    r = run("""
        name: parallel
        tasks:
          - name: t
            type: fake
            loop: [1, 2, 3, 4, 5, 6, 7, 8]
            loop_control: {parallel: 3}
            params: {sleep: 0.05, result: "<< .item >>"}
            register: out
    """)
    assert r.state["out"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert overlap() == 3


def test_loop_runs_every_item_and_names_failures(run):
    r = run("""
        name: loop-fail
        tasks:
          - name: t
            type: fake
            loop: [ok1, bad1, ok2, bad2]
            params: {fail: "<< if eq .item \\"bad1\\" \\"bad2\\" >>broken<< end >>"}
            register: out
    """)
    assert r.status("t") == "Failed"
    assert len([c for c in mockmods.calls if c[1] == "start"]) == 4
    reason = r.tasks["t"].reason
    assert reason.startswith("2 of 4 items failed: item 1 'bad1': broken; item 3 'bad2': broken")
    assert "out" not in r.state


# -- retry

def test_retry_until_success(run):
    r = run("""
        name: retry
        tasks:
          - name: flaky
            type: fake
            retry: {attempts: 3, delay: 10ms}
            params: {fail_times: 2, result: done}
            register: out
    """)
    assert r.status("flaky") == "Completed"
    assert r.tasks["flaky"].attempts == 3
    assert r.state["out"] == "done"
    assert r.log.count("retrying in 10ms") == 2


def test_retry_gives_up_after_attempts(run):
    r = run("""
        name: retry
        tasks:
          - {name: flaky, type: fake, retry: {attempts: 2, delay: 1ms}, params: {fail_times: 5}}
    """)
    assert r.status("flaky") == "Failed"
    assert r.tasks["flaky"].attempts == 2
    assert r.tasks["flaky"].reason == "flaky failure 2"
    assert r.result.exit_code == 1


def test_retry_on_error_false_disables_retry(run):
    r = run("""
        name: retry
        tasks:
          - {name: flaky, type: fake, retry: {attempts: 3, on_error: false}, params: {fail_times: 1}}
    """)
    assert r.status("flaky") == "Failed" and r.tasks["flaky"].attempts == 1


def test_retry_delay_wakes_on_cancel(run):
    begin = time.monotonic()
    r = run("""
        name: retry
        tasks:
          - name: flaky
            type: fake
            timeout: 200ms
            retry: {attempts: 2, delay: 30s}
            params: {fail_times: 5}
    """)
    assert time.monotonic() - begin < 5
    assert r.status("flaky") == "Failed"
    assert r.tasks["flaky"].reason == "timed out after 200ms"


# -- failures, halting, ignore_errors

def test_failure_halts_cancels_running_and_skips_pending(run):
    begin = time.monotonic()
    r = run("""
        name: halt
        tasks:
          - {name: slow, type: fake, params: {sleep: 30}}
          - {name: boom, type: fake, params: {fail: kaput}}
          - {name: later, type: fake, depends_on: [slow]}
    """)
    assert time.monotonic() - begin < 5, "the sleeping task was not cancelled"
    assert r.result.exit_code == 1 and not r.ok
    assert r.status("boom") == "Failed" and r.tasks["boom"].reason == "kaput"
    assert r.status("slow") == "Failed"
    assert "playbook halted because boom failed" in r.tasks["slow"].reason
    assert r.status("later") == "Skipped"
    assert r.state["_gxo"]["tasks"]["later"]["status"] == "Skipped"


def test_ignore_errors_keeps_independent_branch_and_skips_dependents(run):
    r = run("""
        name: ignore
        tasks:
          - {name: flaky, type: fake, ignore_errors: true, params: {fail: nope}, register: f}
          - {name: uses, type: fake, params: {result: "<< .f >>"}}
          - {name: after_uses, type: fake, depends_on: [uses]}
          - {name: cleanup, type: fake, params: {sleep: 0.05}}
    """)
    assert r.ok and r.result.exit_code == 0
    assert r.status("flaky") == "Failed"
    assert r.status("uses") == "Skipped"
    assert r.tasks["uses"].reason == "dependency 'flaky' failed"
    assert r.status("after_uses") == "Skipped"
    assert "flaky" in r.tasks["after_uses"].reason
    assert r.status("cleanup") == "Completed"
    assert "(ignored)" in r.log


def test_timeout_fails_task(run):
    r = run("""
        name: timeout
        tasks:
          - {name: t, type: fake, timeout: 100ms, params: {sleep: 30}}
    """)
    assert r.status("t") == "Failed" and r.tasks["t"].reason == "timed out after 100ms"


def test_concurrency_limit(run):
    tasks = "\n".join(f"  - {{name: t{i}, type: fake, params: {{sleep: 0.05}}}}" for i in range(8))
    r = run("name: limit\ntasks:\n" + tasks, concurrency=2)
    assert r.ok
    assert overlap() == 2


def test_independent_tasks_run_concurrently(run):
    tasks = "\n".join(f"  - {{name: t{i}, type: fake, params: {{sleep: 0.1}}}}" for i in range(6))
    assert run("name: wide\ntasks:\n" + tasks, concurrency=8).ok
    assert overlap() == 6


def test_dry_run_reaches_modules(run):
    class Probe(gxo.Module):
        def perform(self, ctx, params, state, input, outputs, errors):
            return {"dry": ctx.dry_run}
    gxo.register("probe_dry", Probe)
    r = run("""
        name: dry
        tasks: [{name: t, type: probe_dry, register: out}]
    """, dry_run=True)
    assert r.state["out"] == {"dry": True}


def test_state_is_read_only_for_modules(run):
    class Mutator(gxo.Module):
        def perform(self, ctx, params, state, input, outputs, errors):
            with pytest.raises(TypeError):
                state["shared"]["list"].append(1)
            with pytest.raises(TypeError):
                state["shared"]["key"] = 2
            with pytest.raises(TypeError):
                state["new"] = 1
            copy = dict(state["shared"])
            copy["key"] = 3                     # a copy is free to change
            return copy
    gxo.register("probe_mutate", Mutator)
    r = run("""
        name: frozen
        tasks:
          - {name: a, type: fake, params: {result: {list: [0], key: 1}}, register: shared}
          - {name: b, type: probe_mutate, depends_on: [a], register: out}
    """)
    assert r.ok, r.log
    assert r.state["shared"] == {"list": [0], "key": 1}
    assert r.state["out"]["key"] == 3


def test_cancel_from_another_thread(tmp_path):
    pb = gxo.load_playbook("""
name: cancel
tasks:
  - {name: a, type: fake, params: {sleep: 30}}
  - {name: b, type: fake, depends_on: [a]}
""")
    import io
    engine = gxo.Engine(pb, logger=gxo.Logger("INFO", io.StringIO()))
    threading.Timer(0.1, engine.cancel, ("stop requested",)).start()
    begin = time.monotonic()
    result = engine.run()
    assert time.monotonic() - begin < 5
    assert result.exit_code == 1
    assert result.tasks["a"].status == "Failed"
    assert "stop requested" in result.tasks["a"].reason
    assert result.tasks["b"].status == "Skipped" and result.tasks["b"].reason == "playbook halted"


def test_unnamed_tasks_get_positional_keys(run):
    r = run("""
        name: unnamed
        tasks:
          - {type: fake}
          - {type: fake}
    """)
    assert list(r.tasks) == ["#1", "#2"]


# -- the Python API and the log

def test_load_playbook_path_or_text(tmp_path):
    path = tmp_path / "p.yml"
    path.write_text("name: from-file\ntasks: [{type: fake}]\n")
    assert gxo.load_playbook(path).name == "from-file"              # os.PathLike: a path
    assert gxo.load_playbook(str(path)).name == "from-file"         # one line: a path
    assert gxo.load_playbook("{name: flow, tasks: [{type: fake}]}").name == "flow"
    assert gxo.load_playbook("  {name: flow, tasks: [{type: fake}]}").file == "<playbook>"
    assert gxo.load_playbook("name: lines\ntasks: [{type: fake}]\n").name == "lines"
    with pytest.raises(gxo.PlaybookError, match="cannot read the playbook"):
        gxo.load_playbook("name: x")                                # one line, no '{': a path


def test_broken_log_stream_stops_logging_not_the_run(run):
    class Closed:
        writes = 0

        def write(self, text):
            Closed.writes += 1
            raise BrokenPipeError(32, "Broken pipe")

    r = gxo.run_playbook("name: x\ntasks:\n  - {name: a, type: fake}\n  - {name: b, type: fake, depends_on: [a]}\n",
                         log_stream=Closed())
    assert r.ok and r.tasks["b"].status == "Completed"
    assert Closed.writes == 1
