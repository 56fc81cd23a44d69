"""Same code, when the services live elsewhere: a fix made in a service's own folder is a
change of code, so the tests it fixes are fixed, not flaky."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import Project, output

APP = '''
import argparse, json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int)
args = parser.parse_args()
STATUS = int((Path(__file__).parent / "status.txt").read_text())


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path == "/health" else STATUS
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
'''


def setup(root: Path, source: bool) -> Project:
    service = root / "svc"
    service.mkdir(parents=True)
    (service / "app.py").write_text(APP)
    (service / "status.txt").write_text("500")  # the bug, in the service's own folder
    project = Project(root / "e2e")
    project.config(f"""
        [loop]
        max_iterations = 1

        [deploy]
        target = "local"

        [[deploy.services]]
        name = "api"
        command = ["{{python}}", "../svc/app.py", "--port", "{{port}}"]
        {'source = ["../svc"]' if source else ''}

        [[tests.suites]]
        name = "API"
        paths = ["tests"]
    """)
    project.write("tests/test_api.py", """
        import os, urllib.error, urllib.request

        def test_items():
            try:
                status = urllib.request.urlopen(os.environ["LOOP_API_URL"] + "/items").status
            except urllib.error.HTTPError as exc:
                status = exc.code
            assert status == 200
    """)
    for argv in (["git", "init", "-q"], ["git", "add", "-A"],
                 ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "e2e"]):
        subprocess.run(argv, cwd=project.root, check=True, capture_output=True)
    return project


def fixed_in_the_service(project: Project, root: Path) -> dict[str, object]:
    assert project.run("run").returncode == 1
    (root / "svc" / "status.txt").write_text("200")  # the fix, made where the service lives
    second = project.run("run")
    assert second.returncode == 0, output(second)
    summary: dict[str, object] = project.summary(2)
    return summary


def test_a_fix_in_a_service_folder_named_as_source_is_a_change_of_code(tmp_path: Path) -> None:
    project = setup(tmp_path, source=True)
    summary = fixed_in_the_service(project, tmp_path)
    assert summary["flaky"] == []
    assert summary["diff"]["fixed"] == ["tests/test_api.py::test_items"]  # type: ignore[index]


def test_without_source_the_same_fix_looks_like_flakiness(tmp_path: Path) -> None:
    """Why `source` exists: the work tree alone did not change."""
    project = setup(tmp_path, source=False)
    summary = fixed_in_the_service(project, tmp_path)
    assert [f["test"] for f in summary["flaky"]] == ["tests/test_api.py::test_items"]  # type: ignore[attr-defined]


def test_a_source_folder_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    project = setup(tmp_path, source=True)
    (tmp_path / "svc" / "app.py").rename(tmp_path / "app.py")
    (tmp_path / "svc" / "status.txt").unlink()
    (tmp_path / "svc").rmdir()
    result = project.run("run")
    assert result.returncode == 2, output(result)
    assert "deploy.services: api: source '../svc' is not a folder" in result.stderr
