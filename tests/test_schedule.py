"""The order of the queue and the size of what each worker is handed."""

from __future__ import annotations

from deployloop.runner.schedule import (
    DEFAULT_S,
    PendingTest,
    WorkQueue,
    expected_durations,
    hand_out_budget,
    make_units,
)


def pending(nodeid: str, expected: float, *, suite: str = "S", priority: int = 1,
         first: bool = False) -> PendingTest:
    return PendingTest(suite, nodeid, priority, first, expected)


def ids(units: list) -> list[list[str]]:
    return [[t.nodeid for t in u.tests] for u in units]


def test_failed_first_then_priority_then_longest_first() -> None:
    units = make_units(
        [
            pending("a.py::short", 0.1),
            pending("a.py::long", 5.0),
            pending("b.py::p2_longest", 9.0, priority=2),
            pending("c.py::failed_p3", 0.1, priority=3, first=True),
        ],
        set(),
        {},
    )
    assert ids(units) == [
        ["c.py::failed_p3"], ["a.py::long"], ["a.py::short"], ["b.py::p2_longest"],
    ]


def test_a_module_with_a_shared_fixture_is_one_unit_unless_split_by_tests() -> None:
    tests = [pending("m.py::t1", 1.0), pending("m.py::t2", 1.0), pending("n.py::t3", 1.5)]
    assert ids(make_units(tests, {"m.py"}, {})) == [["m.py::t1", "m.py::t2"], ["n.py::t3"]]
    assert ids(make_units(tests, {"m.py"}, {"S": "tests"})) == [
        ["n.py::t3"], ["m.py::t1"], ["m.py::t2"],
    ]
    # "modules" keeps every module whole, shared fixture or not.
    assert ids(make_units(tests, set(), {"S": "modules"})) == [
        ["m.py::t1", "m.py::t2"], ["n.py::t3"],
    ]


def test_the_failed_tests_of_a_whole_module_still_go_first() -> None:
    tests = [pending("m.py::ok", 1.0), pending("m.py::failed", 1.0, first=True)]
    assert ids(make_units(tests, {"m.py"}, {})) == [["m.py::failed"], ["m.py::ok"]]


def test_unknown_durations_take_the_suite_mean_then_the_overall_mean() -> None:
    known = {"a::1": 2.0, "a::2": 4.0, "b::1": 9.0}
    got = expected_durations(
        [("A", "a::1"), ("A", "a::2"), ("A", "a::new"), ("B", "b::1"), ("C", "c::new")], known
    )
    assert got["a::new"] == 3.0
    assert got["c::new"] == 5.0  # the mean of every known test
    assert expected_durations([("A", "a::x")], {})["a::x"] == DEFAULT_S


def test_take_hands_out_about_the_budget_and_at_least_one_unit() -> None:
    queue = WorkQueue(make_units([pending(f"t::{i}", 0.25) for i in range(8)], set(), {}))
    assert len(queue.take(1.0)) == 4
    assert len(queue.take(0.01)) == 1
    assert queue.expected_s == 0.75
    # A cost other than the recorded mean (what tests take in this run).
    assert len(queue.take(1.0, cost=lambda t: 0.5)) == 2
    assert len(queue) == 1


def test_put_back_goes_to_the_front_and_drop_suite_takes_a_suite_out() -> None:
    tests = [pending("x::1", 1.0), pending("y::1", 1.0, suite="Y")]
    queue = WorkQueue(make_units(tests, set(), {}))
    taken = queue.take(0.5)
    queue.put_back([t for u in taken for t in u.tests])
    assert ids(queue.take(0.5)) == ids(taken)
    assert [t.nodeid for t in queue.drop_suite("Y")] == ["y::1"]
    assert len(queue) == 0


def test_budget_shrinks_towards_the_end_and_is_capped() -> None:
    assert hand_out_budget(1000.0, 4, 1.0) == 1.0
    assert hand_out_budget(2.0, 4, 1.0) == 0.25
    assert hand_out_budget(0.0, 4, 1.0) == 0.0
