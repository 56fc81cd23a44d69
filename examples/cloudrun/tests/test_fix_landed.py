"""Stands for the bug a fix step fixes: fails while examples/cloudrun/.broken exists."""

from pathlib import Path


def test_the_fix_has_landed() -> None:
    assert not Path("examples/cloudrun/.broken").exists(), "broken until the fix step runs"
