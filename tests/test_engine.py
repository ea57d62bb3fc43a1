"""Engine integration tests with in-process mock modules (see mockmods.py)."""

import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

import gxo
import mockmods
from helpers import in_background


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
            params:
              fail: "<< if eq .item \\"bad1\\" \\"bad2\\" >>broken<< end >>"
              result: "<< .item >>"
            register: out
    """)
    assert r.status("t") == "Failed"
    assert len([c for c in mockmods.calls if c[1] == "start"]) == 4
    reason = r.tasks["t"].reason
    assert reason.startswith("2 of 4 items failed: item 1 'bad1': broken; item 3 'bad2': broken")
    assert r.state["out"] == ["ok1", None, "ok2", None]       # what each item gave


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
    r = run("""
        name: dry
        tasks: [{name: t, type: dry_probe, register: out}]
    """, dry_run=True)
    assert r.state["out"] == {"dry": True}


def test_dry_run_calls_no_module_that_does_not_support_it(run):
    r = run("""
        name: dry
        vars: {who: ops}
        tasks:
          - {name: src, type: records, params: {range: 500}}
          - {name: eat, type: sink, stream_input: src}
          - name: t
            type: fake
            loop: [1, 2]
            params: {result: "<< .item >> for << .who >>", fail: boom}
            register: out
          - {name: long, type: fake, params: {result: "%s"}}
    """ % ("x" * 600), dry_run=True, channel_buffer_size=10)
    assert r.ok, r.log
    assert mockmods.calls == []                 # neither fake nor sink ran
    assert r.state["out"] == [{"dry_run": True}, {"dry_run": True}]
    would = "[Dry Run] Would run module"
    assert f"""[t] {would} 'fake' with params {{"result":"1 for ops","fail":"boom"}}""" in r.log
    assert f"""[t] {would} 'fake' with params {{"result":"2 for ops","fail":"boom"}}""" in r.log
    assert f"[eat] {would} 'sink' with params {{}}" in r.log
    assert "not delivered" not in r.log         # the stand-in read the stream to its end
    assert f"""[long] {would} 'fake' with params {{"result":"{'x' * 489}... (613 characters)\n""" \
        in r.log


def test_state_is_read_only_for_modules(run):
    r = run("""
        name: frozen
        tasks:
          - {name: a, type: fake, params: {result: {list: [0], key: 1}}, register: shared}
          - {name: b, type: change_state, depends_on: [a], register: out}
    """)
    assert r.ok, r.log
    assert r.state["out"]["raised"] == {"append to a list": "TypeError", "set a key": "TypeError",
                                        "add a var": "TypeError"}
    assert r.state["shared"] == {"list": [0], "key": 1}
    assert r.state["out"]["copy"]["key"] == 3


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

# -- failure handlers (always: true)

def test_always_handler_runs_after_a_halt_and_reads_the_failed_summary(run):
    r = run("""
        name: rollback
        tasks:
          - name: migrate
            type: fake
            params: {fail: "column exists", summary: {stderr: "column exists", exit_code: 3}}
            register: mig
          - {name: announce, type: fake, depends_on: [migrate]}
          - name: rollback
            type: fake
            always: true
            when: '<< eq ._gxo.tasks.migrate.status "Failed" >>'
            params: {result: "undo after exit << .mig.exit_code >>: << .mig.stderr >>"}
            register: undo
          - {name: cleanup, type: fake, always: true, depends_on: [rollback]}
          - {name: notify, type: fake, depends_on: [rollback]}
    """)
    assert r.result.exit_code == 1                  # the failure still counts
    assert r.status("migrate") == "Failed"
    assert r.state["mig"] == {"stderr": "column exists", "exit_code": 3}
    assert r.status("announce") == "Skipped"
    assert r.status("rollback") == "Completed"
    assert r.state["undo"] == "undo after exit 3: column exists"
    assert r.status("cleanup") == "Completed"
    assert r.status("notify") == "Skipped" and r.tasks["notify"].reason == "playbook halted"
    assert order() == ["migrate", "rollback", "cleanup"]


def test_always_handler_when_decides_and_a_cleanup_always_runs(run):
    r = run("""
        name: fine
        tasks:
          - {name: migrate, type: fake}
          - name: rollback
            type: fake
            always: true
            when: '<< eq ._gxo.tasks.migrate.status "Failed" >>'
          - {name: cleanup, type: fake, always: true, depends_on: [migrate, rollback]}
    """)
    assert r.ok, r.log
    assert r.status("rollback") == "Skipped" and r.tasks["rollback"].reason == "'when' is false"
    assert r.status("cleanup") == "Completed"


def test_always_handler_after_skipped_and_ignored_dependencies(run):
    r = run("""
        name: ignored
        tasks:
          - {name: flaky, type: fake, ignore_errors: true, params: {fail: nope}}
          - {name: uses, type: fake, depends_on: [flaky]}
          - {name: report, type: fake, always: true, depends_on: [uses]}
    """)
    assert r.ok and r.result.exit_code == 0
    assert r.status("uses") == "Skipped"
    assert r.status("report") == "Completed"


def test_failing_handler_counts_and_skips_its_dependents(run):
    r = run("""
        name: handler-fails
        tasks:
          - {name: flaky, type: fake, ignore_errors: true, params: {fail: nope}}
          - {name: handler, type: fake, always: true, depends_on: [flaky], params: {fail: worse}}
          - {name: after, type: fake, depends_on: [handler]}
    """)
    assert r.result.exit_code == 1
    assert r.status("handler") == "Failed"
    assert r.status("after") == "Skipped"


def test_running_handler_is_not_cancelled_by_a_halt(run):
    r = run("""
        name: spared
        tasks:
          - {name: boom, type: fake, params: {fail: kaput, after: handler}}
          - {name: later, type: fake, depends_on: [boom]}
          - name: handler            # runs from the start; still running when boom halts
            type: watch
            always: true
            params: {task: later, status: Skipped, result: finished}
            register: h
    """)
    assert r.result.exit_code == 1
    assert r.status("handler") == "Completed" and r.state["h"] == "finished"


def test_module_that_returned_completes_though_a_halt_came(run):
    # 'quick' returns only once the halt has cancelled it (later is skipped after the
    # running tasks are cancelled): the same as a halt arriving as it returns.
    r = run("""
        name: same-instant
        tasks:
          - {name: boom, type: fake, params: {fail: kaput, after: quick}}
          - {name: later, type: fake, depends_on: [boom]}
          - name: quick
            type: watch
            params: {task: later, status: Skipped, result: done, ignore_cancel: true}
            register: q
    """)
    assert r.result.exit_code == 1
    assert r.status("quick") == "Completed" and r.state["q"] == "done"


def test_second_stop_cancels_handlers_at_once(tmp_path):
    import io
    pb = gxo.load_playbook("""
name: stop-twice
tasks:
  - {name: a, type: fake, params: {sleep: 30}}
  - {name: handler, type: fake, always: true, depends_on: [a], params: {sleep: 30}}
  - {name: after, type: fake, always: true, depends_on: [handler]}
""")
    log = io.StringIO()
    engine = gxo.Engine(pb, logger=gxo.Logger("INFO", log))

    def stop_when_started(name, reason):
        while (name, "start") not in [(c[0], c[1]) for c in mockmods.calls]:
            time.sleep(0.005)
        engine.cancel(reason)

    def stopper():
        stop_when_started("a", "first stop")
        stop_when_started("handler", "second stop")
    threading.Thread(target=stopper, daemon=True).start()
    begin = time.monotonic()
    result = engine.run()
    assert time.monotonic() - begin < 10
    assert result.exit_code == 1
    assert result.tasks["a"].status == "Failed"
    assert result.tasks["handler"].status == "Failed"
    assert "cancelled: first stop" in result.tasks["handler"].reason
    assert result.tasks["after"].status == "Skipped"
    text = log.getvalue()
    assert "stopping: first stop (failure handlers still run: stop again to cancel them)" in text
    assert "stopping at once: second stop" in text


def test_always_must_be_a_boolean(load):
    with pytest.raises(gxo.PlaybookError, match="always: expected true or false, got the string"):
        load("name: x\ntasks: [{type: fake, always: 'yes'}]\n")


# -- pipelines: a consumer's failed dependency skips only that consumer

def test_consumer_with_failed_dependency_is_skipped_alone(run):
    r = run("""
        name: partial
        tasks:
          - {name: x, type: fake, ignore_errors: true, params: {fail: nope}}
          - {name: p, type: emit, params: {count: 5}, register: emitted}
          - {name: c1, type: sink, stream_input: p, depends_on: [x]}
          - {name: c3, type: sink, stream_input: c1}
          - {name: c2, type: sink, stream_input: p, register: got}
          - {name: after_c1, type: fake, depends_on: [c1]}
    """)
    assert r.ok, r.log
    assert r.status("p") == "Completed" and r.state["emitted"] == {"emitted": 5}
    assert r.status("c2") == "Completed" and [x["n"] for x in r.state["got"]] == [0, 1, 2, 3, 4]
    assert r.status("c1") == "Skipped" and r.tasks["c1"].reason == "dependency 'x' failed"
    assert r.status("c3") == "Skipped" and r.status("after_c1") == "Skipped"
    assert "not delivered" not in r.log


def test_producer_with_failed_dependency_skips_its_pipeline(run):
    r = run("""
        name: producer-skipped
        tasks:
          - {name: x, type: fake, ignore_errors: true, params: {fail: nope}}
          - {name: p, type: emit, params: {count: 5}, depends_on: [x]}
          - {name: c, type: sink, stream_input: p}
    """)
    assert r.ok, r.log
    assert r.status("p") == "Skipped" and r.status("c") == "Skipped"
    assert r.tasks["c"].reason == "dependency 'x' failed"


# -- readable failures

def test_retry_and_item_messages_name_the_item(run):
    r = run("""
        name: items
        tasks:
          - name: t
            type: fake
            loop: [alpha]
            retry: {attempts: 2, delay: 1ms}
            params: {fail_times: 5}
    """)
    assert "item 0 'alpha': attempt 1 of 2 failed: flaky failure 1; retrying in 1ms" in r.log
    assert "item 0 'alpha' failed: flaky failure 2" in r.log
    assert r.tasks["t"].reason == "1 of 1 items failed: item 0 'alpha': flaky failure 2"


def test_reading_a_skipped_tasks_register_names_it(run):
    r = run("""
        name: skipped-register
        vars: {build: false}
        tasks:
          - {name: build, type: fake, when: "<< .build >>", params: {result: {path: a.tgz}}, register: artifact}
          - {name: upload, type: fake, params: {result: "<< .artifact.path >>"}}
          - {name: check, type: fake, when: "<< .artifact.path >>"}
    """)
    assert r.result.exit_code == 1
    assert r.status("upload") == "Failed"
    assert r.tasks["upload"].reason.startswith(
        "cannot read 'artifact': task 'build' was skipped ('when' is false), so it registered nothing")
    assert r.status("check") == "Skipped"           # an error in 'when' skips, and says why
    assert "task 'build' was skipped ('when' is false)" in r.tasks["check"].reason


def test_handler_reading_a_failed_tasks_missing_register(run):
    r = run("""
        name: nothing-registered
        tasks:
          - {name: migrate, type: fake, params: {fail: gone}, register: mig}
          - {name: report, type: fake, always: true, params: {result: "<< .mig.stderr >>"}}
    """)
    assert r.status("report") == "Failed"
    assert r.tasks["report"].reason.startswith(
        "cannot read 'mig': task 'migrate' failed (gone), so it registered nothing")


# -- statuses, logs and memory

def test_no_task_starts_after_the_halt(run):
    fan = "\n".join(f"  - {{name: s{i}, type: fake, depends_on: [root]}}" for i in range(30))
    r = run("name: fan\ntasks:\n  - {name: root, type: fake}\n"
            "  - {name: boom, type: fake, depends_on: [root], params: {fail: kaput}}\n" + fan,
            concurrency=40)
    lines = r.log.splitlines()
    halt = next(i for i, line in enumerate(lines) if "halting the playbook" in line)
    assert not [line for line in lines[halt:] if line.endswith("] started")]


def test_loop_without_register_keeps_no_summaries(run):
    """Each item's summary is freed once the next item runs (nothing per item is kept)."""
    r = run("""
        name: flat
        tasks:
          - {name: t, type: tracked, loop: [1, 2, 3, 4, 5, 6, 7, 8]}
          - {name: kept, type: tracked, loop: [1, 2, 3], register: out}
    """)
    assert r.ok, r.log
    assert mockmods.alive_at_call["t"] == [0] * 8
    assert mockmods.alive_at_call["kept"] == [0, 1, 2]
    assert r.tasks["t"].summary is None and len(r.state["out"]) == 3


def test_loop_names_the_first_three_failed_items_in_order(run):
    r = run("""
        name: many-failures
        tasks:
          - name: t
            type: fake
            loop: [a, b, c, d, e]
            loop_control: {parallel: 5}
            params: {fail: "<< .item >> broke"}
    """)
    assert r.tasks["t"].reason == ("5 of 5 items failed: item 0 'a': a broke; item 1 'b': b broke; "
                                   "item 2 'c': c broke; and 2 more")


def test_cancelled_loop_stops_before_the_next_item(run):
    r = run("""
        name: cancelled-loop
        tasks:
          - {name: t, type: fake, timeout: 100ms, loop: [1, 2, 3], params: {sleep: 30}}
    """)
    assert r.status("t") == "Failed" and r.tasks["t"].reason == "timed out after 100ms"
    assert order() == ["t"]


def test_calls_at_once_are_capped_by_the_open_file_limit(run, monkeypatch):
    monkeypatch.setattr(gxo, "_open_file_limit", lambda: (2, 40))
    r = run("""
        name: capped
        tasks:
          - {name: wide, type: fake, loop: [1, 2, 3, 4, 5, 6], loop_control: {parallel: 6}, params: {sleep: 0.05}}
          - {name: other, type: fake, params: {sleep: 0.05}}
    """)
    assert r.ok
    assert overlap() <= 2
    assert r.log.count("at most 2 module calls run at once: the open-file limit (ulimit -n 40)") == 1


def test_a_long_chain_behind_a_failure_is_skipped(tmp_path):
    """Skipping 3,000 tasks in a row takes no recursion (it overflowed the stack)."""
    import io
    chain = "".join(f"  - {{name: t{i}, type: fake, depends_on: [t{i - 1}]}}\n" for i in range(1, 3000))
    pb = gxo.load_playbook("name: chain\ntasks:\n"
                           "  - {name: t0, type: fake, ignore_errors: true, params: {fail: x}}\n" + chain)
    result = in_background(gxo.Engine(pb, logger=gxo.Logger("INFO", io.StringIO())).run).result(60)
    assert result.counts() == {"Completed": 0, "Failed": 1, "Skipped": 2999}
    assert result.tasks["t2999"].reason == "dependency 't0' failed"


def test_a_signal_delivered_to_a_worker_thread_still_stops_the_run():
    # The kernel may give a process's SIGINT to any thread; Python runs the
    # handler on the main thread only once that thread wakes up.
    import signal
    engine = gxo.Engine(gxo.load_playbook(
        "name: x\ntasks: [{name: t, type: signal_own_thread}]\n"), logger=gxo.Logger("ERROR"))
    previous = signal.signal(signal.SIGINT, lambda n, _: engine.interrupt(n))
    try:
        result = engine.run()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.exit_code == 130
    assert result.tasks["t"].reason == "cancelled: interrupted by SIGINT"


# -- the schedule (gxo._Schedule), driven as the engine drives it

@st.composite
def _dags(draw):
    """A playbook of fake tasks with depends_on, streams and failure handlers, and which
    tasks fail.  A consumer has no depends_on: then no two pipelines wait for each other."""
    n = draw(st.integers(1, 9))
    lines = ["name: dag", "tasks:"]
    for i in range(n):
        lines.append(f"  - {{name: t{i}, type: fake, always: {str(draw(st.booleans())).lower()}")
        if i and draw(st.integers(0, 3)) == 0:
            lines[-1] += f", stream_input: t{draw(st.integers(0, i - 1))}"
        elif i:
            deps = draw(st.sets(st.integers(0, i - 1), max_size=3))
            lines[-1] += f", depends_on: [{', '.join(f't{d}' for d in sorted(deps))}]"
        lines[-1] += "}"
    return gxo.load_playbook("\n".join(lines) + "\n"), draw(st.sets(st.integers(0, n - 1)))


@settings(max_examples=150, deadline=None)
@given(_dags(), st.randoms(use_true_random=False))
def test_schedule_starts_each_task_once_after_its_needs_or_skips_it(dag, rnd):
    pb, failing = dag
    tasks, schedule = pb.tasks, gxo._Schedule(pb)
    producer = {c: p for p, cs in pb.consumers.items() for c in cs}
    ended, started, running = {}, set(), set()      # ended: task -> done, failed or skipped
    while True:
        room = rnd.randint(1, 3)
        ready = schedule.get_ready(room)
        assert sum(len(m) for m in ready[:-1]) < room       # room is checked before each start
        for members in ready:
            for i in members:
                assert i not in started and i not in ended
                assert all(d in ended for d in tasks[i].needs)
                if not tasks[i].always:
                    assert all(ended[d] == "done" for d in tasks[i].needs)
            started.update(members)
            running.update(members)
        if not running:
            break
        i = rnd.choice(sorted(running))
        running.remove(i)
        ended[i] = "failed" if i in failing else "done"
        for m, why in schedule.done(i, i in failing):
            assert m not in started and m not in ended
            ended[m] = "skipped"
            p = producer.get(m)
            assert (not tasks[m].always and any(ended.get(d) in ("failed", "skipped")
                                                for d in tasks[m].needs)) \
                or ended.get(p) == "skipped", (m, why)
            assert why.startswith("dependency '")
    assert started | {i for i, e in ended.items() if e == "skipped"} == set(range(len(tasks)))
    assert not started & {i for i, e in ended.items() if e == "skipped"}
    assert list(schedule.unstarted()) == []


def test_schedule_skips_a_pipeline_member_its_consumers_and_what_needs_them(load):
    pb = load("""
        name: s
        tasks:
          - {name: a, type: fake}
          - {name: src, type: fake, depends_on: a}
          - {name: mid, type: fake, stream_input: src}
          - {name: sink, type: fake, stream_input: mid}
          - {name: other, type: fake, stream_input: src}
          - {name: after, type: fake, depends_on: sink}
          - {name: handler, type: fake, depends_on: sink, always: true}
    """)
    schedule = gxo._Schedule(pb)
    assert schedule.get_ready(8) == [[0]]
    assert schedule.get_ready(8) == []
    assert schedule.done(0) == []
    assert schedule.skip(2, "playbook halted") == [
        (2, "playbook halted"), (3, "dependency 'mid' was skipped (playbook halted)"),
        (5, "dependency 'mid' was skipped (playbook halted)")]
    assert list(schedule.unstarted()) == [1, 4, 6]
    assert schedule.get_ready(1) == [[1, 4]]        # the pipeline, but its skipped members
    assert schedule.get_ready(1) == [[6]]           # the handler: sink ended (skipped)
    assert schedule.done(1, failed=True) == []      # its members run: the engine cancels them
    assert list(schedule.unstarted()) == []
