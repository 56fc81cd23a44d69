"""The test stage's machinery: collect the inventory, split it into pytest processes, run them,
and read their results as they stream. `plugin/` is not part of this package: it is put on the
tests' PYTHONPATH, so it must import nothing from deployloop."""
