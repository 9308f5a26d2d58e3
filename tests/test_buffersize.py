"""``map(..., buffersize=)`` and ``map_futures(..., buffersize=)``: Python 3.14's lazy map, on every Python."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import itertools
import time
from operator import add

import pytest

from lambdaexec import LambdaExecutor


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    with LambdaExecutor(max_workers=2, storage="local",
                        storage_path=str(tmp_path_factory.mktemp("store"))) as executor:
        yield executor


class Counted:
    """An iterable that counts the items taken from it."""

    def __init__(self, items):
        self.items, self.taken = items, 0

    def __iter__(self):
        for item in self.items:
            self.taken += 1
            yield item


def slow(seconds, value=None):
    time.sleep(seconds)
    return value


def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"bad {x}")
    return x


@pytest.mark.parametrize("buffersize", ["foo", 2.0, "1"])
def test_buffersize_not_an_int_is_a_type_error(ex, buffersize):
    with pytest.raises(TypeError, match=r"^buffersize must be an integer or None$"):
        ex.map(str, range(4), buffersize=buffersize)
    with pytest.raises(TypeError, match=r"^buffersize must be an integer or None$"):
        ex.map_futures(str, range(4), buffersize=buffersize)


@pytest.mark.parametrize("buffersize", [0, -1])
def test_buffersize_below_one_is_a_value_error(ex, buffersize):
    with pytest.raises(ValueError, match=r"^buffersize must be None or > 0$"):
        ex.map(str, range(4), buffersize=buffersize)
    with pytest.raises(ValueError, match=r"^buffersize must be None or > 0$"):
        ex.map_futures(str, range(4), buffersize=buffersize)


@pytest.mark.parametrize("buffersize", [1, 2, 4, 8])
def test_results_in_order_on_finite_iterables(ex, buffersize):
    assert list(ex.map(str, range(4), buffersize=buffersize)) == ["0", "1", "2", "3"]
    assert list(ex.map(add, range(4), range(4), buffersize=buffersize)) == [0, 2, 4, 6]
    assert list(ex.map(abs, range(-20, 0), buffersize=buffersize, chunksize=3)) == list(range(20, 0, -1))


def test_infinite_iterables_map_lazily(ex):
    results = ex.map(str, itertools.count(), buffersize=2)
    assert [next(results) for _ in range(3)] == ["0", "1", "2"]
    results.close()
    results = ex.map(add, itertools.count(), itertools.count(), buffersize=2)
    assert [next(results) for _ in range(3)] == [0, 2, 4]
    results.close()
    results = ex.map(str, itertools.count(), buffersize=3, chunksize=4)
    assert [next(results) for _ in range(10)] == [str(i) for i in range(10)]
    results.close()


def test_empty_iterables(ex):
    assert next(ex.map(str, [], buffersize=2), None) is None
    assert next(ex.map(str, buffersize=2), None) is None
    assert list(ex.map_futures(str, [], buffersize=2)) == []


def test_at_most_buffersize_items_taken_ahead_of_the_results(ex):
    source = Counted(range(100))
    results = ex.map(abs, source, buffersize=5)
    assert source.taken == 5  # the first window, taken when map returns
    for k in range(1, 11):
        assert next(results) == k - 1
        assert source.taken == 5 + k  # one more per result yielded, as 3.14's map
    results.close()
    assert source.taken == 15


def test_unconsumed_map_takes_only_the_first_window(tmp_path):
    ints = iter(range(4))
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "s")) as ex:
        ex.map(str, ints, buffersize=2)
    assert next(ints) == 2  # as CPython's test_map_buffersize_when_buffer_is_full


def test_map_futures_yields_futures_lazily_in_order(ex):
    source = Counted(range(-50, 0))
    futures = ex.map_futures(abs, source, buffersize=4)
    assert source.taken == 4
    first = next(futures)
    assert isinstance(first, cf.Future) and source.taken == 5
    assert first.result(timeout=30) == 50
    assert [f.result(timeout=30) for f in futures] == list(range(49, 0, -1))
    chunked = ex.map_futures(abs, range(-7, 0), buffersize=1, chunksize=3)
    assert [f.result(timeout=30) for f in chunked] == [7, 6, 5, 4, 3, 2, 1]


def test_without_buffersize_map_stays_eager(ex):
    source = Counted(range(10))
    results = ex.map(abs, source)
    assert source.taken == 10
    assert list(results) == list(range(10))
    assert isinstance(ex.map_futures(abs, range(3)), list)


@pytest.mark.parametrize("buffersize", [None, 2])
def test_exceptions_come_in_order_and_end_the_map(ex, buffersize):
    results = ex.map(fail_on, range(5), [2] * 5, buffersize=buffersize)
    assert next(results) == 0
    assert next(results) == 1
    with pytest.raises(ValueError, match="bad 2"):
        next(results)
    assert list(results) == []  # as 3.14's map (a generator): an exception ends it, the rest cancelled


def test_timeout_raises_and_cancels_the_rest(ex):
    results = ex.map(slow, [0.0, 5.0, 0.0, 0.0], buffersize=2, timeout=1.5)
    assert next(results) is None
    with pytest.raises(cf.TimeoutError):
        next(results)
    with pytest.raises(StopIteration):
        next(results)


def touch(path):
    open(path, "w").close()
    return path


def _window_left_unrun(ex, tmp_path, drop):
    """Fill both workers for a while, open a window of 4 calls that each create a file, take the
    first future, then close (or drop) the iterator: the calls not yielded must never run."""
    blocker = ex.map_futures(slow, [1.5, 1.5])
    paths = [str(tmp_path / f"call-{i}") for i in range(10)]
    futures = ex.map_futures(touch, paths, buffersize=4)
    first = next(futures)  # 5 submitted now (one more per future yielded), one yielded
    if drop:
        del futures
        gc.collect()
    else:
        futures.close()
    assert first.result(timeout=30) == paths[0]  # yielded: the caller's, not cancelled
    for f in blocker:
        f.result(timeout=30)
    time.sleep(0.5)
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("call-"))


def test_closing_the_iterator_cancels_what_it_submitted(ex, tmp_path):
    assert _window_left_unrun(ex, tmp_path, drop=False) == ["call-0"]


def test_dropping_the_iterator_cancels_what_it_submitted(ex, tmp_path):
    assert _window_left_unrun(ex, tmp_path, drop=True) == ["call-0"]


def test_closing_a_result_iterator_cancels_what_it_submitted(ex, tmp_path):
    blocker = ex.map_futures(slow, [1.5, 1.5])
    results = ex.map(touch, [str(tmp_path / f"call-{i}") for i in range(10)], buffersize=3)
    results.close()
    for f in blocker:
        f.result(timeout=30)
    time.sleep(0.5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("call-")]


def test_map_after_shutdown_is_refused(tmp_path):
    ex = LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "s"))
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.map(abs, range(3), buffersize=2)
