"""A module in the user's own files, as PyWren's tests/extmodule.py: it must travel by value."""


def foo_add(x):
    return x + 1
