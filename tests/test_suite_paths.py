"""SuitePaths: which suite owns a test, the most specific path winning.

SuitePaths looks paths up by what they name (the test's file, its folders, its node id's
prefixes) instead of scoring every test against every path. `reference_scores` below is the
rule stated the slow, obvious way, path by path; the index must agree with it on every case,
including the order of the suites in `scores` (the owner on a tie is the first listed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployloop.config import SuiteConfig
from deployloop.runner import suite_paths  # its tests_root would be collected as a test
from deployloop.runner.inventory import suites_covering_others
from deployloop.runner.suite_paths import SuitePaths, file_of


def suite(name: str, *paths: str) -> SuiteConfig:
    return SuiteConfig(name=name, paths=list(paths))


def reference_scores(
    suites: Sequence[SuiteConfig], workdir: Path, rootdir: Path, nodeid: str, path: str = ""
) -> dict[str, int]:
    """Every path of every suite against the test: a node id (10,000 + its length) when the
    test's id is it or starts with it followed by `::` or `[`; the test's file (5,000 + its
    length); a folder above the file (its depth). Per suite the best, strictly greater
    replacing, in the order suites first match."""

    def resolve(text: str) -> Path:
        p = Path(text)
        return (p if p.is_absolute() else workdir / p).resolve()

    item_file = resolve(path or str(rootdir / file_of(nodeid)))
    rest = nodeid.partition("::")[2]
    out: dict[str, int] = {}
    for s in suites:
        for text in s.paths:
            spec_file, _, spec_rest = text.partition("::")
            target = resolve(spec_file)
            score: int | None = None
            if spec_rest:
                if target == item_file and (
                    rest == spec_rest
                    or rest.startswith(spec_rest + "::")
                    or rest.startswith(spec_rest + "[")
                ):
                    score = 10_000 + len(text)
            elif target == item_file:
                score = 5_000 + len(text)
            elif target in item_file.parents:
                score = len(target.parts)
            if score is not None and score > out.get(s.name, -1):
                out[s.name] = score
    return out


def assert_same(
    suites: Sequence[SuiteConfig], workdir: Path, rootdir: Path, nodeid: str, path: str = ""
) -> None:
    paths = SuitePaths(suites, workdir, rootdir)
    expected = reference_scores(suites, workdir, rootdir, nodeid, path)
    got = paths.scores(nodeid, path)
    assert list(got.items()) == list(expected.items()), (nodeid, path)
    # Twice: the second answer comes from the per-file cache.
    assert list(paths.scores(nodeid, path).items()) == list(expected.items())


def test_overlapping_folders_the_deepest_wins(tmp_path: Path) -> None:
    suites = [
        suite("All", "tests"),
        suite("Api", "tests/api"),
        suite("V2", "tests/api/v2/"),
        suite("Dotted", "./tests/api/../api/v2/deep"),
    ]
    owner = SuitePaths(suites, tmp_path).owner
    assert owner("tests/test_a.py::test_1") == "All"
    assert owner("tests/api/test_a.py::test_1") == "Api"
    assert owner("tests/api/v2/test_a.py::test_1") == "V2"
    assert owner("tests/api/v2/deep/test_a.py::test_1") == "Dotted"
    assert owner("tests_other/test_a.py::test_1") is None
    for nodeid in ("tests/api/v2/deep/x/test_a.py::t", "tests/api/v3/test_b.py::t"):
        assert_same(suites, tmp_path, tmp_path, nodeid)


def test_node_id_beats_file_beats_folder(tmp_path: Path) -> None:
    suites = [
        suite("Folder", "tests"),
        suite("File", "tests/test_a.py"),
        suite("Class", "tests/test_a.py::TestLogin"),
        suite("Method", "tests/test_a.py::TestLogin::test_ok"),
    ]
    owner = SuitePaths(suites, tmp_path).owner
    assert owner("tests/test_a.py::TestLogin::test_ok") == "Method"
    assert owner("tests/test_a.py::TestLogin::test_ok[admin]") == "Method"
    assert owner("tests/test_a.py::TestLogin::test_ok_twice") == "Class"
    assert owner("tests/test_a.py::TestLoginMore::test_ok") == "File"
    assert owner("tests/test_a.py") == "File"  # a collection error names the file alone
    assert owner("tests/test_b.py::test_x") == "Folder"


@pytest.mark.parametrize(
    "nodeid",
    [
        "tests/test_p.py::test_url[http://host/a::b]",
        "tests/test_p.py::test_url[http://host/a]",
        "tests/test_p.py::test_url[a::b]",
        "tests/test_p.py::test_url[a::b][c]",
        "tests/test_p.py::test_url[a[b]]",
        "tests/test_p.py::test_url",
        "tests/test_p.py::test_url_more[x]",
        "tests/test_p.py::Cls::test_url[a/b::c/d]",
        "tests/test_p.py::Cls::test_url[::]",
        "tests/test_p.py::Cls::",
        "tests/test_p.py::a:::b",
        "tests/test_p.py::a:",
        "tests/test_p.py::[x]",
        "tests/test_p.py::",
        "tests/test_p.py",
    ],
)
def test_brackets_holding_slashes_and_double_colons(tmp_path: Path, nodeid: str) -> None:
    suites = [
        suite("File", "tests/test_p.py"),
        suite("Url", "tests/test_p.py::test_url"),
        suite("Inside a bracket", "tests/test_p.py::test_url[a"),
        suite("One case", "tests/test_p.py::test_url[http://host/a::b]"),
        suite("Slash case", "tests/test_p.py::test_url[http://host/a"),
        suite("Class", "tests/test_p.py::Cls"),
        suite("Class case", "tests/test_p.py::Cls::test_url[a/b"),
        suite("Colon", "tests/test_p.py::a:", "tests/test_p.py::a"),
        suite("Empty rest", "tests/test_p.py::"),
    ]
    assert_same(suites, tmp_path, tmp_path, nodeid)


def test_on_a_tie_the_first_suite_listed_wins(tmp_path: Path) -> None:
    suites = [
        suite("Second path", "other", "tests/test_a.py"),
        suite("First path", "tests/test_a.py"),
        suite("Longer spelling", "./tests/test_a.py::test_1"),
        suite("Shorter spelling", "tests/test_a.py::test_1"),
    ]
    paths = SuitePaths(suites, tmp_path)
    # Same path, same score: the suite listed first wins, whichever of its paths matched.
    assert paths.owner("tests/test_a.py::test_2") == "Second path"
    # The same test by two spellings of one node id: the longer spelling scores higher.
    assert paths.owner("tests/test_a.py::test_1") == "Longer spelling"
    for nodeid in ("tests/test_a.py::test_1", "tests/test_a.py::test_2", "other/t.py::x"):
        assert_same(suites, tmp_path, tmp_path, nodeid)


def test_suites_outside_the_project_with_rootdir_above(tmp_path: Path) -> None:
    workdir = tmp_path / "project"
    suites = [
        suite("Local", "tests"),
        suite("Shared", "../shared/e2e"),
        suite("Shared login", "../shared/e2e/test_login.py::test_ok"),
        suite("Absolute", str(tmp_path / "shared" / "e2e" / "deep")),
    ]
    rootdir = suite_paths.tests_root(suites, workdir)
    assert rootdir == tmp_path
    owner = SuitePaths(suites, workdir, rootdir).owner
    # Node ids are relative to the rootdir; paths in the config to the working directory.
    assert owner("project/tests/test_a.py::test_1") == "Local"
    assert owner("shared/e2e/test_login.py::test_ok") == "Shared login"
    assert owner("shared/e2e/test_login.py::test_other") == "Shared"
    assert owner("shared/e2e/deep/test_x.py::test_1") == "Absolute"
    # With the file pytest reported (absolute, or relative to the working directory).
    login = str(tmp_path / "shared" / "e2e" / "test_login.py")
    assert owner("shared/e2e/test_login.py::test_ok", login) == "Shared login"
    assert owner("shared/e2e/test_login.py::test_ok", "../shared/e2e/test_login.py") == (
        "Shared login"
    )
    for nodeid, path in (
        ("shared/e2e/test_login.py::test_ok[x]", ""),
        ("shared/e2e/deep/test_x.py::test_1", login),
        ("project/tests/test_a.py::test_1", "tests/test_a.py"),
        ("elsewhere/test_z.py::test_q", ""),
    ):
        assert_same(suites, workdir, rootdir, nodeid, path)


def test_suites_covering_others_are_the_ones_holding_tests_they_do_not_own(
    tmp_path: Path,
) -> None:
    suites = [suite("All", "tests"), suite("Login", "tests/test_auth.py::test_login")]
    owners = {"tests/test_auth.py::test_login": "Login", "tests/test_other.py::test_x": "All"}
    assert suites_covering_others(suites, owners, tmp_path, tmp_path) == {"All"}
    assert suites_covering_others(suites, {"tests/test_other.py::t": "All"}, tmp_path,
                                  tmp_path) == set()


_FOLDERS = st.sampled_from(["tests", "api", "v2", "..", ".", "x"])
_FILES = st.sampled_from(["test_a.py", "test_b.py", "api"])
_REST = st.lists(
    st.sampled_from(["test_x", "Cls", "::", "[", "]", "a", "/", ":", "b"]), max_size=6
).map("".join)


@st.composite
def _spec(draw: st.DrawFn) -> str:
    folders = draw(st.lists(_FOLDERS, min_size=0, max_size=3))
    text = "/".join([*folders, draw(_FILES)]) if draw(st.booleans()) else "/".join(folders)
    text = text or "."
    if draw(st.booleans()):
        text += "::" + draw(_REST)
    return text


@settings(max_examples=300, deadline=None)
@given(
    specs=st.lists(st.lists(_spec(), min_size=1, max_size=3), min_size=1, max_size=5),
    nodeids=st.lists(_spec(), min_size=1, max_size=8),
    rootdir_above=st.booleans(),
)
def test_the_index_agrees_with_scoring_every_path(
    specs: list[list[str]], nodeids: list[str], rootdir_above: bool
) -> None:
    # Fixed folders (no tmp_path: hypothesis runs the body many times); nothing is created,
    # resolving a path that does not exist only normalizes it.
    workdir = Path("/nonexistent-loop-test/root/project")
    rootdir = workdir.parent if rootdir_above else workdir
    suites = [suite(f"S{i}", *paths) for i, paths in enumerate(specs)]
    paths = SuitePaths(suites, workdir, rootdir)
    for nodeid in nodeids:
        for path in ("", file_of(nodeid)):
            expected = reference_scores(suites, workdir, rootdir, nodeid, path)
            assert list(paths.scores(nodeid, path).items()) == list(expected.items())
            assert paths.owner(nodeid, path) == (
                max(expected, key=lambda n: expected[n]) if expected else None
            )
