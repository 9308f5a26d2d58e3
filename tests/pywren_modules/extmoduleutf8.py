"""A module in the user's own files with UTF-8 text in it (PyWren's tests/extmoduleutf8.py)."""

TEST_STR = "naïve café: ∑ λ → 漢字"


def foo_add(x):
    return x + 1


def unicode_str(x):
    return TEST_STR
