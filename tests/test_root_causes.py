"""One cause, one group: a broken endpoint that fails tests in several ways is named once,
above its message clusters, with each test's failing line."""

from __future__ import annotations

from conftest import Project, output

from deployloop.analysis.past import past_of
from deployloop.analysis.root_causes import endpoint_of, failing_line, root_causes
from deployloop.models import Cluster, HistoryRow, Outcome, TestRow

SERVICE = '''
import argparse, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int)
args = parser.parse_args()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.answer(200, b'{"ok": true}', "application/json")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/orders":  # the bug: every order fails
            print("ERROR POST /orders: KeyError: 'price'", file=sys.stderr, flush=True)
            self.answer(500, b"<html>Internal Server Error</html>", "text/html")
        else:
            self.answer(201, b'{"id": 1}', "application/json")

    def answer(self, code, body, kind):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
'''

TESTS = '''
import os

import httpx

API = os.environ["LOOP_API_URL"]


def test_order_is_created():
    resp = httpx.post(API + "/orders", json={"sku": "a"})
    assert resp.status_code == 201


def test_order_raises_for_status():
    httpx.post(f"{API}/orders", json={"sku": "b"}).raise_for_status()


def test_order_body_is_json():
    body = httpx.post(API + "/orders", json={"sku": "c"}).json()
    assert body["id"]


def test_cart_works():
    assert httpx.post(API + "/cart", json={}).status_code == 201
'''


def test_one_500_endpoint_failing_three_ways_is_one_root_cause(project: Project) -> None:
    project.write("svc.py", SERVICE)
    project.write("tests/test_orders.py", TESTS)
    project.config("""
        [loop]
        max_iterations = 1

        [deploy]
        target = "local"

        [[deploy.services]]
        name = "api"
        command = ["{python}", "svc.py", "--port", "{port}"]
        health_path = "/health"

        [[tests.suites]]
        name = "Orders"
        paths = ["tests"]
    """)
    result = project.run("run")
    assert result.returncode == 1, output(result)
    summary = project.summary()
    assert len(summary["clusters"]) == 3  # three messages...
    (cause,) = summary["root_causes"]  # ...one cause
    assert cause["label"] == "POST /orders answered 500"
    assert sorted(cause["clusters"]) == sorted(c["label"] for c in summary["clusters"])
    assert sorted(cause["tests"], key=lambda t: t["test"]) == [
        {"test": "tests/test_orders.py::test_order_body_is_json",
         "where": "tests/test_orders.py:18"},
        {"test": "tests/test_orders.py::test_order_is_created", "where": "tests/test_orders.py:10"},
        {"test": "tests/test_orders.py::test_order_raises_for_status",
         "where": "tests/test_orders.py:14"},
    ]
    assert any("ERROR POST /orders: KeyError: 'price'" in e for e in cause["evidence"]), cause
    assert "Root causes" in result.stdout and "POST /orders answered 500" in result.stdout
    report = (project.iteration_dir(1) / "report.md").read_text()
    assert "### Root causes" in report and "`tests/test_orders.py:10`" in report


def row(nodeid: str, message: str, longrepr: str = "") -> TestRow:
    return TestRow(nodeid, "S", nodeid.split("::")[0], Outcome.FAILED, 0.1, message, longrepr)


def test_endpoints_are_read_from_messages_urls_and_calls() -> None:
    requests_style = row("t.py::a", "requests.exceptions.HTTPError: 503 Server Error: Service"
                         " Unavailable for url: http://svc:8080/orders/8f3a2b1c9d/items?x=1")
    endpoint = endpoint_of(requests_style)
    assert endpoint is not None
    assert (endpoint.route, endpoint.status) == ("/orders/{id}/items", "503")
    said = endpoint_of(row("t.py::b", "AssertionError: DELETE /cart/42 answered HTTP 404"))
    assert said is not None and (said.route, said.status) == ("DELETE /cart/{id}", "404")
    called = endpoint_of(row(
        "t.py::c", "assert 502 == 200",
        '>       resp = client.request("PATCH", f"{BASE}/users/17", json=body)\nE  assert 502',
    ))
    assert called is not None and (called.route, called.status) == ("PATCH /users/{id}", "502")
    assert endpoint_of(row("t.py::d", "KeyError: 'x'")) is None
    helper = endpoint_of(row(  # a helper of the test's own, called by name; urllib's words
        "t.py::e", "urllib.error.HTTPError: HTTP Error 502: BAD GATEWAY",
        '>       post("/status/502")\n\nt.py:17: \n',
    ))
    assert helper is not None and (helper.route, helper.status) == ("POST /status/{id}", "502")


def test_the_failing_line_is_the_tests_own() -> None:
    longrepr = (
        "tests/test_api.py:12: in test_a\n    helper()\n"
        "tests/helpers.py:5: in helper\n    raise X\nE   X\n\n"
        "tests/test_api.py:12: X\n"
    )
    assert failing_line(row("tests/test_api.py::test_a", "X", longrepr)) == "tests/test_api.py:12"
    # pytest names no function at the test's own frame; a helper in the same file is not it.
    helper = (
        "tests/test_api.py:17: \n"
        "tests/test_api.py:7: in post\n    urlopen(req)\n"
        "/usr/lib/python3.11/urllib/request.py:643: HTTPError\n"
    )
    assert failing_line(row("tests/test_api.py::test_b", "X", helper)) == "tests/test_api.py:17"


def test_patterns_that_came_and_stayed_together_are_one_group() -> None:
    def result(n: int, nodeid: str, outcome: Outcome) -> HistoryRow:
        return HistoryRow(n, nodeid, "S", outcome, 1, None, 0.1, None, None)

    a, b, c = "t.py::a", "t.py::b", "t.py::c"
    history = past_of([
        result(1, a, Outcome.PASSED), result(1, b, Outcome.PASSED), result(1, c, Outcome.FAILED),
        result(2, a, Outcome.FAILED), result(2, b, Outcome.ERROR), result(2, c, Outcome.FAILED),
        result(3, a, Outcome.FAILED), result(3, b, Outcome.ERROR), result(3, c, Outcome.FAILED),
    ])
    clusters = [
        Cluster("TimeoutError", "s1", (a,), ("S",), first_iteration=2),
        Cluster("KeyError: 'token'", "s2", (b,), ("S",), first_iteration=2),
        Cluster("ValueError", "s3", (c,), ("S",), first_iteration=1),  # older: not with them
    ]
    rows = [row(a, "TimeoutError"), row(b, "KeyError: 'token'"), row(c, "ValueError")]
    (cause,) = root_causes(clusters, rows, history)
    assert cause.label == "2 patterns that appeared together in iteration 2"
    assert cause.clusters == ("TimeoutError", "KeyError: 'token'")
    assert cause.evidence == ("they failed in exactly the same iterations: 2, 3",)


def test_the_call_that_failed_names_the_endpoint_not_the_first_one() -> None:
    """Found by a review: a test that logs in first, then fails on another call."""
    longrepr = (
        "    def test_orders(client):\n"
        '        client.post("/login", json=creds)\n'
        '>       resp = client.get(f"{API}/orders/{order_id}")\n'
        "E       assert 500 == 200\n\ntests/test_shop.py:9: AssertionError\n"
    )
    endpoint = endpoint_of(row("tests/test_shop.py::test_orders", "assert 500 == 200", longrepr))
    assert endpoint is not None
    assert (endpoint.route, endpoint.status) == ("GET /orders/{id}", "500")
    hosted = endpoint_of(row("t.py::f", "AssertionError: POST http://127.0.0.1:8000/orders"
                                       " returned 503"))
    assert hosted is not None and (hosted.route, hosted.status) == ("POST /orders", "503")
    right = endpoint_of(row("t.py::g", "assert 200 == 503", '>   client.get("/health")\n'))
    assert right is not None and right.status == "503"

