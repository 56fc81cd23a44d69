"""The stages of an iteration, one module each, in the order they run:
plan -> deploy -> test -> rollback -> report (`deployloop.iteration` runs these), then
analyze (reads the store back: the one source of every figure) -> decide -> between (the fix
step), which `deployloop.loop` runs after each iteration.

Each stage takes what the ones before it made and imports none that comes after it.
`settings` is what every stage is given; `pytest_setup` is how plan and test start pytest.
"""
