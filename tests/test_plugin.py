"""loop's pytest plugin in a real pytest process: what it writes, what it hides, what it caps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from deployloop.runner.plugin import deployloop_redact
from deployloop.runner.plugin.deployloop_redact import Redactor
from deployloop.runner.process import PLUGIN_DIR

API_KEY = "sk-live-4f1d9a7c2e"
SESSION_TOKEN = "tok_0c55e2b9d1a84f"
DB_PASSWORD = "hunter2-but-longer"

LEAKY = f'''
import os, sys

def test_assertion_shows_the_key():
    assert os.environ["API_KEY"] == "something else"

def test_header_shows_the_token():
    headers = {{"Authorization": "Bearer " + os.environ["SESSION_TOKEN"]}}
    assert headers == {{}}

def test_prints_a_service_secret():
    print("connecting with password {DB_PASSWORD}")
    print("to stderr: " + os.environ["API_KEY"], file=sys.stderr)
    assert False, "could not connect"

def test_passes_and_prints():
    print("api key is " + os.environ["API_KEY"])
'''


def run_plugin(
    tmp_path: Path, source: str, env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    (tmp_path / "test_it.py").write_text(source)
    log, junit = tmp_path / "out.reportlog.jsonl", tmp_path / "out.junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
         "-p", "deployloop_plugin", f"--loop-reportlog={log}", f"--junitxml={junit}",
         "-o", "junit_logging=all", "-rA", *args, "test_it.py"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(PLUGIN_DIR), **env},
    )
    return proc, log, junit


def test_secrets_are_redacted_in_terminal_junit_and_reportlog(tmp_path: Path) -> None:
    env = {"API_KEY": API_KEY, "SESSION_TOKEN": SESSION_TOKEN}
    env[deployloop_redact.ENV_VAR] = deployloop_redact.describe(
        {**os.environ, **env},
        deployloop_redact.DEFAULT_PATTERNS,
        names=["API_KEY"],
        values={"DB_PASSWORD": DB_PASSWORD},
    )
    proc, log, junit = run_plugin(tmp_path, LEAKY, env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    written = {
        "terminal": proc.stdout + proc.stderr,
        "reportlog": log.read_text(),
        "junit": junit.read_text(),
    }
    for where, text in written.items():
        for secret in (API_KEY, SESSION_TOKEN, DB_PASSWORD):
            assert secret not in text, f"{secret} leaked into the {where} output"
        assert "[redacted:API_KEY]" in text, where
    assert "[redacted:SESSION_TOKEN]" in written["reportlog"]
    assert "[redacted:DB_PASSWORD]" in written["junit"]
    # The failures are still failures, with their messages.
    records = [json.loads(line) for line in log.read_text().splitlines()]
    calls = {r["nodeid"].split("::")[1]: r for r in records if r.get("when") == "call"}
    assert calls["test_assertion_shows_the_key"]["outcome"] == "failed"
    assert "[redacted:API_KEY]" in calls["test_assertion_shows_the_key"]["message"]
    assert calls["test_passes_and_prints"]["outcome"] == "passed"


def test_without_loop_redact_nothing_is_touched(tmp_path: Path) -> None:
    proc, log, _ = run_plugin(tmp_path, LEAKY, {"API_KEY": API_KEY, "SESSION_TOKEN": "x" * 8})
    assert API_KEY in proc.stdout  # plain pytest behaviour: the plugin only writes its log
    assert API_KEY in log.read_text()


def test_huge_output_and_messages_are_capped_in_the_reportlog(tmp_path: Path) -> None:
    source = """
def test_noisy():
    print("x" * 30_000_000)
    raise RuntimeError("y" * 5_000_000)
"""
    proc, log, _ = run_plugin(tmp_path, source, {}, "-o", "junit_logging=no")
    assert proc.returncode == 1
    lines = log.read_bytes().splitlines()
    assert max(len(line) for line in lines) < 200_000, "a reportlog line was not capped"
    call = next(json.loads(ln) for ln in lines if b'"when": "call"' in ln)
    assert call["outcome"] == "failed"
    assert "characters cut" in call["longrepr"]
    # pytest's own output keeps the whole text: the cap is only on what loop reads.
    assert len(proc.stdout) > 30_000_000


def test_redactor_hides_words_and_substrings_as_their_names_ask() -> None:
    redactor = Redactor()
    redactor.add("E2E_ENV", "local", anywhere=False)
    redactor.add("API_KEY", "s3cr3t-v4lue", anywhere=True)
    redactor.add("PIN", "123", anywhere=True)  # too short to hide without noise
    text = "localhost local (local) xs3cr3t-v4luey s3cr3t-v4lue%2F pin 123"
    assert redactor.redact(text) == (
        "localhost [redacted:E2E_ENV] ([redacted:E2E_ENV]) x[redacted:API_KEY]y"
        " [redacted:API_KEY]%2F pin 123"
    )


def test_url_encoded_values_are_hidden_too() -> None:
    redactor = Redactor()
    redactor.add("DB_PASSWORD", "p@ss w/rd!", anywhere=True)
    assert redactor.redact("postgres://u:p%40ss%20w%2Frd%21@db/x") == (
        "postgres://u:[redacted:DB_PASSWORD]@db/x"
    )


def test_id_tokens_minted_for_a_process_are_hidden_by_loop_and_by_the_plugin() -> None:
    from deployloop.runner.process import Redaction

    redaction = Redaction(names=frozenset({"E2E_ENV"}))
    token = "eyJhbGciOiJSUzI1NiJ9.payload.signature"
    env = {"E2E_ENV": "staging", "LOOP_API_ID_TOKEN": token, "LOOP_API_URL": "http://x"}
    spec = json.loads(redaction.plugin_env(env))
    # The plugin learns the names (values stay in the process's own environment)...
    assert spec["names"] == ["E2E_ENV", "LOOP_API_ID_TOKEN"]
    assert token not in json.dumps(spec)
    # ...and loop's own redactor (store, logs) learns the token as the process starts.
    assert redaction.redactor.redact(f"Bearer {token} at http://x") == (
        "Bearer [redacted:LOOP_API_ID_TOKEN] at http://x"
    )


def test_a_multi_line_secret_written_in_pieces_is_hidden_in_the_log(tmp_path: Path) -> None:
    import time

    from deployloop.logpump import LogPump

    key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----"
    redactor = Redactor()
    redactor.add("SIGNING_KEY", key, anywhere=True)
    log = tmp_path / "svc.log"
    pump = LogPump(log, redactor)
    first, second = key.encode()[:25], key.encode()[25:]
    os.write(pump.write_fd, b"loading " + first)
    time.sleep(0.2)  # two reads: the value arrives cut in two
    os.write(pump.write_fd, second + "\ncaf\u00e9 done\n".encode())
    pump.close()
    text = log.read_text()
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in text
    assert "[redacted:SIGNING_KEY]" in text and "caf\u00e9 done" in text


def test_quoted_forms_of_a_value_are_hidden() -> None:
    redactor = Redactor()
    redactor.add("DB_PASSWORD", 'line1\nline"2', anywhere=True)
    shown_by_assert = "assert {'pw': 'line1\\nline\"2'} == {}"
    shown_by_json = '{"pw": "line1\\nline\\"2"}'
    assert redactor.redact(shown_by_assert) == "assert {'pw': '[redacted:DB_PASSWORD]'} == {}"
    assert redactor.redact(shown_by_json) == '{"pw": "[redacted:DB_PASSWORD]"}'
