"""`loop init`'s logic: from a project's test files to a config `loop plan` and `loop run` take.

Each test lays out a project in tmp_path with real files (and, where it matters, a real virtual
environment), calls init_project, and checks the config through deployloop's own loader.
The last one runs the real `loop run` and `loop plan` on what init wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project, output

from deployloop.config import Config, check_markers, load_config
from deployloop.init import InitError, InitResult, init_project
from deployloop.init import discover as init_module

SHOP_TESTS = Path(__file__).parents[1] / "examples" / "shop" / "tests"

PASSING = "def test_ok():\n    assert True\n"


def make(root: Path, *relpaths: str, text: str = PASSING) -> None:
    for relpath in relpaths:
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def init(root: Path, env: str = "local", *, force: bool = False) -> tuple[InitResult, Config]:
    """init_project with configs/ in `root`; the config it wrote, loaded and checked the way
    `loop run` and `loop plan` do."""
    result = init_project(root, env, root / "configs", force=force)
    assert result.path == root / "configs" / f"{env}.toml"
    config = load_config(root / "configs", env)
    check_markers(config, str(result.path))
    assert tuple(s.name for s in config.tests.suites) == result.suites
    return result, config


def suites(config: Config) -> list[tuple[str, list[str], int]]:
    return [(s.name, s.paths, s.priority) for s in config.tests.suites]


def covered_files(root: Path, paths: list[str]) -> list[str]:
    """The test files a suite's paths hold, as pytest would reach them (default patterns)."""
    found = []
    for rel in paths:
        path = root / rel
        if path.is_file():
            found.append(rel)
        else:
            for name in ("test_*.py", "*_test.py"):
                found += [p.relative_to(root).as_posix() for p in path.rglob(name)]
    return found


# --- suites, names, priorities -----------------------------------------------------------------


def test_a_project_laid_out_like_the_shop_example(tmp_path: Path) -> None:
    names = sorted(p.name for p in SHOP_TESTS.glob("test_*.py"))
    assert len(names) == 5, names  # the example changed: this test mirrors it
    make(tmp_path, *(f"tests/{name}" for name in names))
    make(tmp_path, "tests/conftest.py", "README.md")

    result, config = init(tmp_path)

    assert suites(config) == [
        ("Priority 1 Critical", ["tests/test_priority1_critical.py"], 1),
        ("Priority 2 High", ["tests/test_priority2_high.py"], 2),
        ("Auth Flow", ["tests/test_auth_flow.py"], 3),
        ("Events", ["tests/test_events.py"], 3),
        ("Orders", ["tests/test_orders.py"], 3),
    ]
    assert result.python is None
    assert config.tests.python is None
    assert config.deploy.target == "none" and config.deploy.services == []
    assert config.loop.target_pass_rate == 100.0 and config.loop.max_iterations == 5
    assert config.tests.workers == min(4, os.cpu_count() or 1)
    assert config.tests.pytest_args == []
    assert config.known_issues == []
    assert result.notes[0] == (
        "no services configured: add [[deploy.services]] in configs/local.toml if the tests"
        " need one"
    )
    text = result.path.read_text(encoding="utf-8")
    for commented in ("# between_iterations = ", "# [[deploy.services]]", "# [[known_issues]]",
                      '# command = ["{python}", "-m", "myservice", "--port", "{port}"]'):
        assert commented in text
    # Every section says what it is for, in the line above it.
    lines = text.splitlines()
    for header in ("[loop]", "[deploy]", "[tests]"):
        assert lines[lines.index(header) - 1].startswith("# "), header


def test_few_files_give_a_suite_each_named_by_their_folders(tmp_path: Path) -> None:
    make(tmp_path, "tests/test_health.py", "tests/api/test_users.py", "tests/api/orders_test.py",
         "tests/web/test_OAuth_login.py")

    _, config = init(tmp_path)

    # Below the folder holding them all; "tests" says nothing, "test_"/"_test" neither.
    assert [s.name for s in config.tests.suites] == [
        "Api / Orders", "Api / Users", "Health", "Web / OAuth Login",
    ]
    assert all(s.priority == 1 for s in config.tests.suites)


def test_all_priorities_1_is_said_in_the_config_and_the_notes(tmp_path: Path) -> None:
    make(tmp_path, "tests/test_a.py", "tests/test_b.py")

    result, _ = init(tmp_path)

    assert any("every suite has priority 1" in note for note in result.notes)
    assert "# Every suite has priority 1" in result.path.read_text(encoding="utf-8")


def test_smoke_runs_first_and_p_numbers_count(tmp_path: Path) -> None:
    make(tmp_path, "tests/test_smoke.py", "tests/test_p2_checkout.py", "tests/test_p1_login.py",
         "tests/test_reports.py")

    result, config = init(tmp_path)

    assert suites(config) == [
        ("Smoke", ["tests/test_smoke.py"], 0),
        ("P1 Login", ["tests/test_p1_login.py"], 1),
        ("P2 Checkout", ["tests/test_p2_checkout.py"], 2),
        ("Reports", ["tests/test_reports.py"], 3),
    ]
    assert not any("priority 1" in note for note in result.notes)


def test_smoke_without_numbers_is_1_and_the_rest_2(tmp_path: Path) -> None:
    make(tmp_path, "tests/smoke/test_health.py", "tests/test_orders.py")

    _, config = init(tmp_path)

    assert suites(config) == [
        ("Smoke / Health", ["tests/smoke/test_health.py"], 1),
        ("Orders", ["tests/test_orders.py"], 2),
    ]


def test_a_folder_of_many_files_is_one_suite_and_a_kind_folder_splits_off(
    tmp_path: Path,
) -> None:
    many = [f"tests/unit/test_m{i:02}.py" for i in range(13)]
    make(tmp_path, *many, "tests/unit/helpers/test_deep.py", "tests/unit/smoke/test_up.py",
         "tests/test_top.py")
    twelve = [f"tests/few/test_f{i:02}.py" for i in range(12)]
    make(tmp_path, *twelve)

    _, config = init(tmp_path)

    by_name = {s.name: s for s in config.tests.suites}
    unit = by_name["Unit"]
    # The smoke folder is a suite of its own, so "tests/unit" alone would run it twice.
    assert unit.paths == sorted(many) + ["tests/unit/helpers"]
    assert by_name["Unit / Smoke / Up"].priority < unit.priority
    assert len([n for n in by_name if n.startswith("Few / ")]) == 12
    # Every test file in exactly one suite.
    held = [f for s in config.tests.suites for f in covered_files(tmp_path, s.paths)]
    on_disk = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("test_*.py")]
    assert sorted(held) == sorted(on_disk)


def test_a_folder_suite_with_nothing_split_off_is_the_folder(tmp_path: Path) -> None:
    make(tmp_path, *(f"tests/test_t{i:02}.py" for i in range(20)), "tests/sub/test_s.py")

    _, config = init(tmp_path)

    assert suites(config) == [("Tests", ["tests"], 1)]


def test_names_and_paths_with_quotes_and_backslashes_survive_toml(tmp_path: Path) -> None:
    make(tmp_path, 'tests/test_say_"hi".py', "tests/test_back\\slash.py", "tests/test_ünï.py")

    _, config = init(tmp_path)

    assert sorted(p for s in config.tests.suites for p in s.paths) == sorted([
        'tests/test_say_"hi".py', "tests/test_back\\slash.py", "tests/test_ünï.py",
    ])
    assert {s.name for s in config.tests.suites} == {'Say "hi"', "Back\\slash", "Ünï"}


def test_a_file_name_no_config_can_hold_is_left_out_and_said(tmp_path: Path) -> None:
    make(tmp_path, "tests/test_fine.py", "tests/test_new\nline.py")
    try:
        with open(os.fsencode(tmp_path / "tests") + b"/test_\xff.py", "w") as f:
            f.write(PASSING)
        odd = 2
    except OSError:  # a file system that takes UTF-8 names only
        odd = 1

    result, config = init(tmp_path)

    assert [s.paths for s in config.tests.suites] == [["tests/test_fine.py"]]
    assert any(f"left out {odd} test file" in note for note in result.notes)


def test_same_names_get_their_path(tmp_path: Path) -> None:
    make(tmp_path, "tests/test_users.py", "tests/users_test.py")

    _, config = init(tmp_path)

    assert sorted(s.name for s in config.tests.suites) == [
        "Users (tests/test_users.py)", "Users (tests/users_test.py)",
    ]


# --- where the tests are -----------------------------------------------------------------------


def test_pytest_ini_testpaths_and_python_files_are_honoured(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\ntestpaths = checks\n    more\npython_files = check_*.py\n", encoding="utf-8"
    )
    make(tmp_path, "checks/check_login.py", "checks/check_cart.py", "more/check_x.py",
         "checks/test_default_pattern.py", "tests/check_elsewhere.py", "tests/test_other.py")

    result, config = init(tmp_path)

    assert suites(config) == [
        ("Checks / Cart", ["checks/check_cart.py"], 1),
        ("Checks / Login", ["checks/check_login.py"], 1),
        ("More / X", ["more/check_x.py"], 1),
    ]
    text = result.path.read_text(encoding="utf-8")
    assert "testpaths in pytest.ini" in text and "check_*.py" in text


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("pyproject.toml",
         '[tool.pytest.ini_options]\ntestpaths = ["e2e_suite"]\npython_files = "it_*.py"\n'),
        ("pyproject.toml",
         '[tool.pytest]\ntestpaths = ["e2e_suite"]\npython_files = ["it_*.py"]\n'),
        ("tox.ini",
         "[tox]\nenvlist = py311\n[pytest]\ntestpaths = e2e_suite\npython_files = it_*.py\n"),
        ("setup.cfg", "[metadata]\nname = x\n[tool:pytest]\ntestpaths = e2e_suite\n"
                      "python_files = it_*.py\n"),
    ],
)
def test_the_other_pytest_config_files_are_honoured(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    make(tmp_path, "e2e_suite/it_checkout.py", "e2e_suite/test_not_it.py", "tests/it_no.py")

    _, config = init(tmp_path)

    assert suites(config) == [("Checkout", ["e2e_suite/it_checkout.py"], 1)]


def test_a_tox_ini_without_a_pytest_section_is_not_pytest_config(tmp_path: Path) -> None:
    (tmp_path / "tox.ini").write_text("[tox]\nenvlist = py311\n", encoding="utf-8")
    make(tmp_path, "tests/test_a.py")

    _, config = init(tmp_path)

    assert [s.paths for s in config.tests.suites] == [["tests/test_a.py"]]


def test_without_config_tests_test_and_e2e_before_the_project_root(tmp_path: Path) -> None:
    make(tmp_path, "tests/test_a.py", "e2e/test_b.py", "src/pkg/test_not_here.py")

    _, config = init(tmp_path)

    assert sorted(p for s in config.tests.suites for p in s.paths) == [
        "e2e/test_b.py", "tests/test_a.py",
    ]


def test_the_project_root_skips_venvs_builds_and_hidden_folders(tmp_path: Path) -> None:
    make(tmp_path, "test_top.py", "pkg/checks/test_inner.py")
    for skipped in (".venv/lib/python3.11/site-packages/x/test_v.py", "venv/test_v.py",
                    "node_modules/p/test_n.py", "build/test_b.py", "dist/test_d.py",
                    ".git/test_g.py", ".loop/test_l.py", ".hidden/test_h.py",
                    "myenv/test_e.py", "site-packages/test_s.py"):
        make(tmp_path, skipped)
    (tmp_path / "myenv" / "pyvenv.cfg").write_text("home = /usr/bin\n", encoding="utf-8")

    _, config = init(tmp_path)

    assert sorted(p for s in config.tests.suites for p in s.paths) == [
        "pkg/checks/test_inner.py", "test_top.py",
    ]


# --- markers -----------------------------------------------------------------------------------


def test_markers_in_use_are_listed_with_an_example_suite(tmp_path: Path) -> None:
    marked = (
        "import pytest\n\n"
        "@pytest.mark.slow\n@pytest.mark.parametrize('x', [1])\n"
        "@pytest.mark.skipif(False, reason='')\n"
        "def test_a(x):\n    pass\n\n"
        "pytestmark = [pytest.mark.api, pytest.mark.usefixtures('f')]\n"
    )
    make(tmp_path, "tests/test_a.py", "tests/test_b.py", text=marked)
    make(tmp_path, "tests/test_c.py", text="import pytest\n@pytest.mark.slow\n@pytest.mark.xfail\n"
                                            "def test_c():\n    pass\n")

    result, config = init(tmp_path)

    assert all(s.markers is None for s in config.tests.suites)  # none made by default
    assert "found 2 marker(s) in use: slow, api (see the comment in configs/local.toml)" in (
        result.notes
    )
    text = result.path.read_text(encoding="utf-8")
    assert "#   slow (3 files), api (2 files)" in text
    for builtin in ("parametrize", "skipif", "usefixtures", "xfail"):
        assert builtin not in text
    # The example, uncommented, is a suite `loop run` takes.
    lines = text.splitlines()
    start = lines.index("# [[tests.suites]]")
    example = [line.removeprefix("# ") for line in lines[start : start + 5]]
    assert example[-1] == 'markers = "slow"'
    (tmp_path / "configs" / "marked.toml").write_text(text + "\n".join(example) + "\n",
                                                      encoding="utf-8")
    marked_config = load_config(tmp_path / "configs", "marked")
    check_markers(marked_config, "marked.toml")
    assert marked_config.tests.suites[-1].markers == "slow"


# --- the tests' interpreter --------------------------------------------------------------------


def make_venv(root: Path, *, system_site_packages: bool) -> Path:
    args = [sys.executable, "-m", "venv", "--without-pip", str(root)]
    if system_site_packages:
        args.insert(3, "--system-site-packages")
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot create a virtual environment here: {done.stderr.strip()}")
    return root / "bin" / "python"


def imports_pytest(python: Path) -> bool:
    done = subprocess.run([str(python), "-c", "import pytest"], capture_output=True, check=False)
    return done.returncode == 0


def test_the_projects_venv_with_pytest_is_written(tmp_path: Path) -> None:
    python = make_venv(tmp_path / ".venv", system_site_packages=True)
    if not imports_pytest(python):
        # The base interpreter has no pytest: reach this one's, still without a network.
        (site,) = (tmp_path / ".venv").glob("lib/python*/site-packages")
        (site / "loop_pytest.pth").write_text(str(Path(pytest.__file__).parents[1]) + "\n")
    assert imports_pytest(python)
    make(tmp_path, "tests/test_a.py")

    result, config = init(tmp_path)

    assert result.python == ".venv/bin/python"
    assert config.tests.python == ".venv/bin/python"
    assert 'python = ".venv/bin/python"' in result.path.read_text(encoding="utf-8")


def test_a_venv_without_pytest_falls_back_to_loops_own_and_says_so(tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv", system_site_packages=False)
    assert not imports_pytest(python)
    make(tmp_path, "tests/test_a.py")

    result, config = init(tmp_path)

    assert result.python is None and config.tests.python is None
    assert any(note.startswith("venv/bin/python has no pytest") for note in result.notes)


def test_no_python_with_pytest_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(init_module, "_loop_has_pytest", lambda: False)
    make(tmp_path, "tests/test_a.py")

    with pytest.raises(InitError, match=r"no Python with pytest found: install pytest in \.venv"):
        init_project(tmp_path, "local", tmp_path / "configs")
    assert not (tmp_path / "configs").exists()


# --- refusals ----------------------------------------------------------------------------------


def test_an_existing_config_is_kept_unless_forced(tmp_path: Path) -> None:
    make(tmp_path, "tests/test_a.py")
    mine = tmp_path / "configs" / "local.toml"
    mine.parent.mkdir()
    mine.write_text("# mine\n", encoding="utf-8")

    with pytest.raises(InitError, match=r"configs/local.toml already exists.*--force"):
        init_project(tmp_path, "local", tmp_path / "configs")
    assert mine.read_text(encoding="utf-8") == "# mine\n"

    result, _ = init(tmp_path, force=True)
    assert result.path == mine and "[[tests.suites]]" in mine.read_text(encoding="utf-8")
    assert [p.name for p in mine.parent.iterdir()] == ["local.toml"]  # no temp file left


@pytest.mark.parametrize("env", ["", "-x", ".hidden", "a b", "a/b", "../up", "é"])
def test_a_bad_env_name_is_refused(tmp_path: Path, env: str) -> None:
    make(tmp_path, "tests/test_a.py")

    with pytest.raises(InitError, match="env name"):
        init_project(tmp_path, env, tmp_path / "configs")
    assert not (tmp_path / "configs").exists()


def test_no_test_files_is_an_error(tmp_path: Path) -> None:
    make(tmp_path, "src/app.py", "tests/helpers.py", "tests/conftest.py")

    with pytest.raises(
        InitError,
        match=r"no test files \(test_\*\.py \*_test\.py\) found under the project root: set"
        " testpaths",
    ):
        init_project(tmp_path, "local", tmp_path / "configs")
    assert not (tmp_path / "configs").exists()


def test_testpaths_with_no_tests_is_an_error_naming_them(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\ntestpaths = it\n", encoding="utf-8")
    (tmp_path / "it").mkdir()
    make(tmp_path, "tests/test_a.py")

    with pytest.raises(InitError, match=r"found under it \(testpaths in pytest.ini\)"):
        init_project(tmp_path, "local", tmp_path / "configs")


def test_a_relative_config_dir_is_taken_from_the_project(tmp_path: Path) -> None:
    make(tmp_path, "tests/test_a.py")

    result = init_project(tmp_path, "staging", Path("conf"))

    assert result.path == tmp_path / "conf" / "staging.toml"
    load_config(tmp_path / "conf", "staging")


# --- end to end --------------------------------------------------------------------------------


def test_loop_run_and_plan_work_right_after_init(project: Project) -> None:
    project.write("tests/test_math.py", """
        def test_add():
            assert 1 + 1 == 2

        def test_mul():
            assert 2 * 3 == 6
        """)
    project.write("tests/test_strings.py", """
        def test_upper():
            assert "a".upper() == "A"

        def test_split():
            assert "a,b".split(",") == ["a", "b", "c"]
        """)
    project.write("tests/test_priority1_health.py", """
        def test_alive():
            pass
        """)

    result = init_project(project.root, "local", project.root / "configs")
    assert result.suites == ("Priority 1 Health", "Math", "Strings")

    run = project.run("run", "--max-iterations", "1")
    assert run.returncode == 1, output(run)
    summary = project.summary()
    totals = summary["totals"]
    assert (totals["collected"], totals["executed"], totals["passed"], totals["failed"],
            totals["errors"]) == (5, 5, 4, 1, 0), output(run)
    by_suite = {s["name"]: (s["priority"], s["passed"], s["failed"]) for s in summary["suites"]}
    assert by_suite == {"Priority 1 Health": (1, 1, 0), "Math": (2, 2, 0), "Strings": (2, 1, 1)}

    plan = project.run("plan")
    assert plan.returncode == 0, output(plan)
