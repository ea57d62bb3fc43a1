"""Secrets: no_log, masking of secret-looking vars and of the 'secret' function
(README.md, Secrets)."""

import uuid

import pytest

import gxo


def _value():
    # Masking is process-wide: each test hides a value of its own.
    return f"s3cr3t-{uuid.uuid4().hex[:12]}"


def test_var_value_is_masked_in_reason_stderr_tail_and_recap(cli):
    pw = _value()
    p = cli("-var", f"db_password={pw}", playbook="""
        name: secrets
        vars: {db_password: placeholder}
        tasks:
          - name: connect
            type: exec
            params:
              command: sh
              args: ["-c", "echo connecting with $1 >&2; exit 3", "sh", "<< .db_password >>"]
    """)
    assert p.returncode == 1
    assert pw not in p.stderr and pw not in p.stdout
    assert "exit status 3: connecting with ********" in p.stderr
    assert p.stderr.count("********") >= 2          # the end line and the recap


def test_command_not_found_and_loop_items_are_masked(cli):
    key = _value()
    p = cli("-var", f"api_key={key}", playbook="""
        name: secrets
        vars: {api_key: ""}
        tasks:
          - name: run
            type: exec
            loop: ["<< .api_key >>", "plain"]
            params: {command: "no-such-<< .item >>"}
    """)
    assert p.returncode == 1
    assert key not in p.stderr
    assert "command not found: no-such-********" in p.stderr
    assert "command not found: no-such-plain" in p.stderr


def test_nested_secret_keys_and_load_errors_are_masked(cli):
    pw = _value().replace("-", "_")
    p = cli(playbook=f"""
        name: secrets
        vars:
          aws: {{region: eu-west-1, secret_access_key: {pw}}}
        tasks:
          - name: t
            type: exec
            params: {{command: "<< {pw} >>"}}
    """)
    assert p.returncode == 2
    assert pw not in p.stderr
    assert "'********'" in p.stderr and "eu-west-1" not in p.stderr


def test_secret_function_masks_in_dry_run(cli):
    token = _value()
    p = cli("-dry-run", env={"DEPLOY_BEARER": token}, playbook="""
        name: secrets
        tasks:
          - name: call
            type: exec
            params:
              command: curl
              args: ["-H", "Authorization: Bearer << secret \\"DEPLOY_BEARER\\" >>", "https://example.invalid"]
    """)
    assert p.returncode == 0, p.stderr
    assert token not in p.stderr
    assert "Authorization: Bearer ********" in p.stderr


def test_secret_function_needs_the_variable(run):
    r = run("""
        name: secrets
        tasks:
          - name: t
            type: log
            params: {message: '<< secret "GXO_TEST_SURELY_UNSET" >>'}
    """)
    assert r.status("t") == "Failed"
    assert "environment variable GXO_TEST_SURELY_UNSET is not set" in r.tasks["t"].reason


def test_no_log_hides_params_output_and_reason(cli):
    marker = _value()
    p = cli("-log-level", "DEBUG", playbook=f"""
        name: quiet
        tasks:
          - name: quiet
            type: exec
            no_log: true
            params: {{command: sh, args: ["-c", "echo {marker}; echo {marker} >&2; exit 4"]}}
    """)
    assert p.returncode == 1
    assert marker not in p.stderr
    assert "[quiet] Failed" in p.stderr and "details hidden (no_log)" in p.stderr


def test_no_log_dry_run_shows_no_params(cli):
    marker = _value()
    p = cli("-dry-run", playbook=f"""
        name: quiet
        tasks:
          - name: quiet
            type: exec
            no_log: true
            params: {{command: echo, args: ["{marker}"]}}
    """)
    assert p.returncode == 0
    assert marker not in p.stderr
    assert "[quiet] details hidden (no_log)" in p.stderr


def test_no_log_keeps_cancellation_reasons(run):
    r = run("""
        name: quiet
        tasks:
          - name: slow
            type: exec
            no_log: true
            timeout: 50ms
            params: {command: sleep, args: ["5"]}
    """)
    assert r.status("slow") == "Failed"
    assert r.tasks["slow"].reason == "timed out after 50ms"


def test_no_log_must_be_a_bool(load):
    with pytest.raises(gxo.PlaybookError, match=r"no_log: expected true or false"):
        load("""
            name: x
            tasks:
              - {type: log, no_log: "yes", params: {message: hi}}
        """)


def test_masking_forms_and_short_values():
    s = gxo._Secrets()
    assert s.mask("nothing to hide") == "nothing to hide"
    s.add("ab")                                  # too short to mask anything useful
    assert s.mask("abc") == "abc"
    s.add('quo"te\\pass')
    assert s.mask('x quo"te\\pass y') == "x ******** y"
    assert s.mask(repr('quo"te\\pass')) == "'********'"
    assert s.mask('"quo\\"te\\\\pass"') == '"********"'      # as JSON prints it
    s.add("-----BEGIN KEY-----\nAAAABBBBCCCCDDDD\n-----END KEY-----")
    assert s.mask("tail: AAAABBBBCCCCDDDD") == "tail: ********"
    s.add_named("build", {"api_token": 123456, "debug": True, "name": "visible"})
    assert s.mask("id 123456 visible") == "id ******** visible"


def test_report_and_json_log_are_masked(cli, tmp_path):
    pw = _value()
    report = tmp_path / "report.json"
    p = cli("-var", f"db_password={pw}", "-log-format", "json", "-report", str(report),
            playbook="""
        name: secrets
        vars: {db_password: placeholder}
        tasks:
          - name: each
            type: exec
            loop: ["<< .db_password >>", "ok"]
            params: {command: sh, args: ["-c", "echo bad $1 >&2; exit 1", "sh", "<< .item >>"]}
    """)
    assert p.returncode == 1
    text = report.read_text()
    assert pw not in text and pw not in p.stderr
    assert "********" in text and "********" in p.stderr
