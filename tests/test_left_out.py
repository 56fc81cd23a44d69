"""An iteration that is no result (an outage) is left out of every figure after it: the next
iteration's diff, flaky tests and trend read past it."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import Project, output

TESTS = """
import os, urllib.request

def get(path):
    with urllib.request.urlopen(os.environ["API"] + path, timeout=5) as answer:
        return answer.status

def test_items(): assert get("/items") == 200
def test_cart(): assert get("/cart") == 200
def test_orders(): assert get("/orders") == 200
def test_health(): assert get("/health") == 200
"""


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_an_outage_is_left_out_of_the_next_iterations_figures(project: Project) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    port = server.server_address[1]
    project.config(f"""
        [deploy]
        target = "none"

        [tests]
        env = {{ API = "http://127.0.0.1:{port}" }}

        [[tests.suites]]
        name = "Shop"
        paths = ["tests/test_shop.py"]
    """)
    project.write("tests/test_shop.py", TESTS)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    first = project.run("run", "--max-iterations", "1")
    server.shutdown()
    server.server_close()  # the API is down: every test's connection is refused
    assert first.returncode == 0, output(first)

    second = project.run("run", "--max-iterations", "1")
    assert second.returncode == 1, output(second)
    outage = project.summary(2)
    assert outage["outage"] and outage["left_out"].startswith("outage: "), outage["outage"]

    server = ThreadingHTTPServer(("127.0.0.1", port), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        third = project.run("run", "--max-iterations", "1")
    finally:
        server.shutdown()
        server.server_close()
    assert third.returncode == 0, output(third)
    summary = project.summary(3)
    # Compared with iteration 1, the last result: nothing was fixed, nothing is flaky.
    assert summary["diff"]["compared_to"] == 1
    assert summary["diff"]["fixed"] == [] and summary["flaky"] == []
    assert [p["iteration"] for p in summary["trend"]["pass_rates"]] == [1, 3]
    assert "vs iteration 1: 0 fixed" in third.stdout, output(third)


def test_loop_forget_drops_an_iteration_and_its_files_from_every_figure(
    project: Project,
) -> None:
    project.config("""
        [deploy]
        target = "none"

        [[tests.suites]]
        name = "Main"
        paths = ["tests"]
    """)
    project.write("tests/test_a.py", "def test_a():\n    assert False, 'not yet'\n")
    assert project.run("run", "--max-iterations", "1").returncode == 1
    project.write("tests/test_a.py", "def test_a():\n    pass\n")
    assert project.run("run", "--max-iterations", "1").returncode == 0
    assert project.summary(2)["diff"]["fixed"] == ["tests/test_a.py::test_a"]

    refused = project.run("forget", "--iteration", "1")  # no terminal to ask on
    assert refused.returncode == 2 and "add --yes" in refused.stderr, output(refused)
    forgot = project.run("forget", "--iteration", "1", "--yes")
    assert forgot.returncode == 0, output(forgot)
    assert not project.iteration_dir(1).exists() and project.iteration_dir(2).exists()
    assert [h["iteration"] for h in project.json("history", "--format", "json")] == [2]
    again = project.json("summarize", "--iteration", "2", "--format", "json")
    assert again["diff"] is None and [p["iteration"] for p in again["trend"]["pass_rates"]] == [2]
    missing = project.run("forget", "--iteration", "1", "--yes")
    assert missing.returncode == 2 and "has no iteration 1" in missing.stderr
