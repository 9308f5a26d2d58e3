"""reduce, map_reduce (shuffle through local, S3 and Redis storage) and sort, on real servers."""

from __future__ import annotations

import collections
import operator
import os
import random
import subprocess
import sys

import pytest

import lambdaexec
from lambdaexec import LambdaExecutor
from lambdaexec.dataflow import hash_partition, stable_hash

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "ünï", "ß"]


@pytest.fixture(params=["local", "s3", "redis"])
def shuffle_executor(request, tmp_path):
    """An executor per shuffle storage: local; S3 (SeaweedFS); S3 inputs with a Redis shuffle."""
    if request.param == "local":
        settings = {"storage": "local", "storage_path": str(tmp_path / "store")}
    elif request.param == "s3":
        settings = request.getfixturevalue("s3_settings")
    else:
        redis_server = request.getfixturevalue("redis_server")
        settings = {**request.getfixturevalue("s3_settings"), "shuffle_storage": "redis",
                    "redis_url": redis_server.url}
    ex = LambdaExecutor(max_workers=2, **settings)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(7)
    d = tmp_path / "corpus"
    d.mkdir()
    for i in range(4):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12))) for _ in range(300)]
        (d / f"part-{i}.txt").write_text("\r\n".join(lines) if i == 1 else "\n".join(lines), encoding="utf-8")
    return d


def _square(x):
    return x * x


def _word_counts(chunk):
    return collections.Counter(chunk.read().decode("utf-8").split())


def _word_pairs(chunk):
    return [(w, 1) for w in chunk.read().decode("utf-8").split()]


def _total(key, values):
    return sum(values)


def _fail_on_three(x):
    if x == 3:
        raise ValueError("three is not allowed")
    return x


# --- reduce ---------------------------------------------------------------------------------
def test_reduce_over_1000_futures_gets_results_in_order(tmp_path):
    with LambdaExecutor(max_workers=2, storage="local", storage_path=str(tmp_path / "s")) as ex:
        futures = ex.map_futures(_square, range(1000))
        total = ex.reduce(sum, futures)
        first = ex.reduce(lambda xs: xs[:5] + xs[-2:], futures)
        assert total.result(timeout=120) == sum(i * i for i in range(1000))
        assert first.result(timeout=120) == [0, 1, 4, 9, 16, 998 ** 2, 999 ** 2]
        assert total.stats["worker"]  # it ran on a worker
        # once the reduces ran, the inputs' objects kept for them are deleted (executor still open)
        import glob
        import time

        pattern = str(tmp_path / "s" / "**" / "calls" / "*")
        deadline = time.monotonic() + 30
        while glob.glob(pattern, recursive=True) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not glob.glob(pattern, recursive=True)


def _blob(i):
    return bytes([i]) * 100_000


def test_reduce_worker_reads_inputs_from_storage(s3_settings):
    with LambdaExecutor(max_workers=2, **s3_settings) as ex:
        futures = ex.map_futures(_blob, range(20))
        result = ex.reduce(lambda xs: [x[:1] for x in xs], futures)
        assert result.result(timeout=120) == [bytes([i]) for i in range(20)]
        # its call carried 20 keys, not 2 MB of values: the worker read them from storage
        assert result.stats["bytes_in"] < 50_000
        # inputs whose objects were already cleaned up still reach the reduce, by value
        again = ex.reduce(lambda xs: sum(map(len, xs)), futures)
        assert again.result(timeout=120) == 2_000_000
        assert again.stats["bytes_in"] > 2_000_000
        assert ex.reduce(len, []).result(timeout=60) == 0


def test_a_failed_input_fails_the_reduce_with_its_exception(tmp_path):
    with LambdaExecutor(max_workers=2, storage="local", storage_path=str(tmp_path / "s")) as ex:
        futures = ex.map_futures(_fail_on_three, range(6))
        reduced = ex.reduce(sum, futures)
        with pytest.raises(ValueError, match="three is not allowed"):
            reduced.result(timeout=60)
        with pytest.raises(TypeError, match="reduce needs a callable"):
            ex.reduce(42, futures)
        with pytest.raises(TypeError, match="reduce takes futures"):
            ex.reduce(sum, [1, 2])


# --- map_reduce -----------------------------------------------------------------------------
def test_word_count_equals_counter(shuffle_executor, corpus):
    expected = collections.Counter()
    for path in sorted(corpus.iterdir()):
        expected.update(path.read_bytes().decode("utf-8").split())
    cs = lambdaexec.chunks(str(corpus / "*.txt"), "2KiB")
    assert len(cs) > 8
    counts = shuffle_executor.map_reduce(_word_counts, cs, _total, reducers=3, combine=operator.add)
    assert counts.result(timeout=180) == dict(expected)
    stats = counts.shuffle_stats
    assert stats["objects"] == stats["mappers"]  # one object per mapper call, not mappers x reducers
    assert stats["mappers"] < len(cs)  # more chunks than 2 calls per worker: a call takes a run of them
    # pairs without a combiner, one reducer
    pairs = shuffle_executor.map_reduce(_word_pairs, cs[:3], _total)
    expected3 = collections.Counter()
    for c in cs[:3]:
        expected3.update(c.read().decode("utf-8").split())
    assert pairs.result(timeout=180) == dict(expected3)


def _slow_pairs(i):
    import time

    time.sleep(0.5)
    return [(i % 2, i)]


def test_reducers_start_while_maps_still_run(tmp_path):
    with LambdaExecutor(max_workers=3, storage="local", storage_path=str(tmp_path / "s")) as ex:
        future = ex.map_reduce(_slow_pairs, range(7), lambda k, vs: sorted(vs), reducers=1)
        assert future.result(timeout=120) == {0: [0, 2, 4, 6], 1: [1, 3, 5]}
    stats = future.shuffle_stats
    assert stats["first_reduce_start"] < stats["last_map_end"]


def _slow_square(x):
    import time

    time.sleep(0.3)
    return x * x


def test_shutdown_waits_for_reduce_and_map_reduce_submitted_late(tmp_path):
    # the reduce and the reducers (as many as workers: started after the maps) are submitted
    # only after the `with` block has begun shutting down; shutdown waits for them
    with LambdaExecutor(max_workers=2, storage="local", storage_path=str(tmp_path / "s")) as ex:
        total = ex.reduce(sum, ex.map_futures(_slow_square, range(6)))
        grouped = ex.map_reduce(_slow_pairs, range(4), lambda k, vs: sorted(vs), reducers=2)
    assert total.result(timeout=0) == sum(i * i for i in range(6))
    assert grouped.result(timeout=0) == {0: [0, 2], 1: [1, 3]}
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.reduce(sum, [])


def test_shuffle_objects_are_deleted_once_collected(tmp_path, corpus):
    store = tmp_path / "store"
    with LambdaExecutor(max_workers=2, storage="local", storage_path=str(store)) as ex:
        cs = lambdaexec.chunks(str(corpus / "*.txt"), "4KiB")
        ex.map_reduce(_word_counts, cs, _total, reducers=2, combine=operator.add).result(timeout=120)
        import glob
        import time

        pattern = str(store / "**" / "shuffle" / "*" / "map" / "*")  # glob tolerates files vanishing
        deadline = time.monotonic() + 30
        while glob.glob(pattern, recursive=True) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not glob.glob(pattern, recursive=True)


def test_keep_data_keeps_the_shuffle_objects(tmp_path, corpus):
    store = tmp_path / "store"
    cs = lambdaexec.chunks(str(corpus / "*.txt"), "4KiB")
    with LambdaExecutor(max_workers=2, storage="local", storage_path=str(store), keep_data=True) as ex:
        job = ex.map_reduce(_word_counts, cs, _total, reducers=2, combine=operator.add)
        job.result(timeout=120)
    assert len(list(store.rglob("shuffle/*/map/*"))) == job.shuffle_stats["mappers"] >= 1


def test_reducer_values_and_custom_partition(tmp_path):
    with LambdaExecutor(max_workers=2, storage="local", storage_path=str(tmp_path / "s")) as ex:
        result = ex.map_reduce(lambda i: [(i % 5, i), ((i % 5, "t"), [i])], range(40),
                               lambda k, vs: sorted(vs), reducers=4,
                               partition=lambda k, n: (k if isinstance(k, int) else k[0]) % n)
        got = result.result(timeout=120)
    for r in range(5):
        assert got[r] == [i for i in range(40) if i % 5 == r]
        assert got[(r, "t")] == [[i] for i in range(40) if i % 5 == r]


def test_partition_is_the_same_in_every_process():
    keys = ["word", "ünïcode", b"bytes", 7, 7.0, 2.5, None, ("a", 1), frozenset({"x", "y"}), -3]
    here = [stable_hash(k) for k in keys]
    code = ("from lambdaexec.dataflow import stable_hash\n"
            f"print([stable_hash(k) for k in {keys!r}])")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert eval(out) == here
    assert stable_hash(7) == stable_hash(7.0) == stable_hash(7)
    assert all(0 <= hash_partition(k, 3) < 3 for k in keys)


def test_batched_routing_puts_each_key_where_hash_partition_does():
    # mappers route whole key lists at once (in C for all-str, all-bytes, all-int keys); a key
    # must land in the same partition whichever kind of list it came in, or its counts would
    # be split between reducers
    from lambdaexec.dataflow.keyed import route

    rng = random.Random(5)
    strs = WORDS + ["", "a\udcff", "x" * 300] + [f"w{rng.randrange(10**6)}" for _ in range(200)]
    lists = [strs, [s.encode("utf-8", "surrogatepass") for s in strs],
             [0, -1, 2**70, -(2**65), 7] + [rng.randrange(-10**9, 10**9) for _ in range(200)],
             strs[:5] + [b"b", 7, 7.0, True, None, ("t", 1)]]
    for keys in lists:
        for n in (2, 3, 16):
            assert route(keys, n, None) == [hash_partition(k, n) for k in keys]


def _mixed_keys(i):
    # every item shares the str keys; odd items add keys of other types, so their mappers take
    # the general routing path while even ones take the all-str fast path
    out = {"shared": 1, f"only{i % 3}": 2}
    if i % 2:
        out.update({(i % 2, "t"): 1, 7: 1, b"shared": 5})
    return out


def test_keys_meet_at_one_reducer_whatever_the_other_keys_of_their_mapper(tmp_path):
    with LambdaExecutor(max_workers=2, storage="local", storage_path=str(tmp_path / "s")) as ex:
        few = ex.map_reduce(_mixed_keys, range(12), _total, reducers=5, combine=operator.add)
        many = ex.map_reduce(_mixed_keys, range(12), _total, reducers=23, combine=operator.add)
        got = few.result(timeout=120), many.result(timeout=120)
    expected = collections.Counter()
    for i in range(12):
        expected.update(_mixed_keys(i))
    assert got == (dict(expected), dict(expected))


Point = collections.namedtuple("Point", "x y")


def test_values_keep_their_types_through_the_shuffle(tmp_path):
    # plain builtins travel marshalled, anything else pickled: either way they come back as sent
    with LambdaExecutor(max_workers=2, storage="local", storage_path=str(tmp_path / "s")) as ex:
        got = ex.map_reduce(lambda i: [(i % 2, Point(i, -i)), ("f", 0.5), ("b", i == 1), (1.5, {"d": [i]})],
                            range(4), lambda k, vs: vs, reducers=3).result(timeout=120)
    assert got[0] == [Point(0, 0), Point(2, -2)] and all(type(p) is Point for p in got[0])
    assert got[1] == [Point(1, -1), Point(3, -3)]
    assert got["f"] == [0.5] * 4 and got["b"] == [False, True, False, False]
    assert all(type(b) is bool for b in got["b"])
    assert got[1.5] == [{"d": [i]} for i in range(4)]


def test_values_come_in_item_order_when_calls_take_runs_of_items(tmp_path):
    # 40 items on 2 workers: mapper calls take runs of items; without combine every value is
    # kept, in item order
    with LambdaExecutor(max_workers=2, storage="local", storage_path=str(tmp_path / "s")) as ex:
        job = ex.map_reduce(lambda i: [(i % 3, i), ("all", i)], range(40), lambda k, vs: vs, reducers=2)
        got = job.result(timeout=120)
    assert got == {0: list(range(0, 40, 3)), 1: list(range(1, 40, 3)), 2: list(range(2, 40, 3)),
                   "all": list(range(40))}
    assert 1 < job.shuffle_stats["mappers"] < 40


def test_with_combine_reducers_merge_values_too(tmp_path):
    # combine may run on mappers and on reducers (as Hadoop's combiner): reduce_fn gets each
    # key's values already merged, in one list
    with LambdaExecutor(max_workers=2, storage="local", storage_path=str(tmp_path / "s")) as ex:
        got = ex.map_reduce(lambda i: {"n": i, "s": str(i)}, range(6), lambda k, vs: vs, reducers=2,
                            combine=operator.add).result(timeout=120)
    assert got == {"n": [15], "s": ["012345"]}  # merged in item order


def test_bad_map_output_and_keys_are_named(tmp_path):
    with LambdaExecutor(max_workers=2, storage="local", storage_path=str(tmp_path / "s")) as ex:
        with pytest.raises(TypeError, match="map_fn returned int 5; it must return a Mapping"):
            ex.map_reduce(lambda x: 5, [1, 2], _total).result(timeout=60)
        with pytest.raises(TypeError, match=r"map_fn yielded 'ab' where a \(key, value\) pair was expected"):
            ex.map_reduce(lambda x: ["ab", "cde"], [1], _total).result(timeout=60)
        with pytest.raises(lambdaexec.UnpicklableError, match="map_fn produced a key that cannot be pickled"):
            ex.map_reduce(lambda x: [((i for i in ()), 1)], [1], _total).result(timeout=60)
        with pytest.raises(ValueError, match=r"partition\('a', 2\) returned 9"):
            ex.map_reduce(lambda x: {"a": 1}, [1], _total, reducers=2, partition=lambda k, n: 9).result(timeout=60)
        with pytest.raises(ValueError, match="reducers must be an int >= 1"):
            ex.map_reduce(_word_counts, [], _total, reducers=0)
        with pytest.raises(TypeError, match="reduce_fn must be callable"):
            ex.map_reduce(_word_counts, [], "sum")
        assert ex.map_reduce(_word_counts, [], _total).result(timeout=60) == {}


def test_shuffle_storage_setting_is_validated():
    with pytest.raises(lambdaexec.ConfigError, match="shuffle_storage must be empty"):
        lambdaexec.load_config({"shuffle_storage": "tape"})
    with pytest.raises(lambdaexec.ConfigError, match="storage 's3' needs a bucket"):
        lambdaexec.load_config({"shuffle_storage": "s3"})


# --- sort -----------------------------------------------------------------------------------
def _gensort_files(d, files=3, records=700, seed=3):
    """gensort-format data: 10-byte binary keys (some repeated, some with zero bytes) + 90 bytes."""
    rng = random.Random(seed)
    d.mkdir()
    everything = []
    for i in range(files):
        recs = []
        for j in range(records):
            k = bytes(rng.randrange(256) for _ in range(10))
            if j % 50 == 0:
                k = b"\x00" * 6 + k[6:]
            if j % 70 == 0 and recs:
                k = recs[-1][:10]  # a duplicate key
            recs.append(k + f" {i:02d}{j:06d} ".encode().ljust(90, b"."))
        (d / f"gen-{i}").write_bytes(b"".join(recs))
        everything.extend(recs)
    return everything


def _read_outputs(urls, **options):
    import fsspec

    return [fsspec.open(u, "rb", **options).open().read() for u in urls]


def test_sort_gensort_records_is_sorted_and_a_permutation(shuffle_executor, tmp_path, request):
    records = _gensort_files(tmp_path / "gen")
    out = str(tmp_path / "sorted")
    cs = lambdaexec.chunks(str(tmp_path / "gen" / "*"), 25_000, record_size=100)
    urls = shuffle_executor.sort(cs, out, record_size=100, partitions=4)
    assert urls == [f"{out}/part-{r:05d}" for r in range(4)]
    body = b"".join(_read_outputs(urls))
    got = [body[i : i + 100] for i in range(0, len(body), 100)]
    assert [r[:10] for r in got] == sorted(r[:10] for r in records)
    assert sorted(got) == sorted(records)
    assert sum(1 for part in _read_outputs(urls) if part) >= 3  # the ranges split the keys


def test_sort_lines_to_s3_with_and_without_key(s3_settings, seaweed, tmp_path):
    rng = random.Random(11)
    d = tmp_path / "lines"
    d.mkdir()
    lines = []
    for i in range(3):
        ls = [f"{rng.randrange(10**6)},{rng.choice(WORDS)}" for _ in range(500)]
        lines.extend(ls)
        end = "" if i == 2 else "\n"  # the last file has no final newline
        (d / f"l{i}.txt").write_text("\n".join(ls) + end, encoding="utf-8")
    cs = lambdaexec.chunks(str(d / "*.txt"), 3000)
    with LambdaExecutor(max_workers=2, **s3_settings) as ex:
        base = f"s3://{seaweed.bucket}/sorted-{random.randrange(10**9)}"
        s3 = {"endpoint_url": seaweed.endpoint_url}
        urls = ex.sort(cs, base + "/plain")  # written with the executor's endpoint
        body = b"".join(_read_outputs(urls, **s3)).decode()
        assert body.splitlines() == sorted(lines) and body.endswith("\n")
        by_number = ex.sort(cs, base + "/by-number", key=lambda line: int(line.split(b",")[0]), partitions=3)
        got = b"".join(_read_outputs(by_number, **s3)).decode().splitlines()
        assert [int(x.split(",")[0]) for x in got] == sorted(int(x.split(",")[0]) for x in lines)
        assert sorted(got) == sorted(lines)
        with pytest.raises(FileExistsError, match="already holds 3 object"):
            ex.sort(cs, base + "/by-number")
        with pytest.raises(FileNotFoundError, match="bucket 'no-such-bucket-y' does not exist"):
            ex.sort(cs, "s3://no-such-bucket-y/out")


def test_sort_refuses_mismatched_records(tmp_path):
    _gensort_files(tmp_path / "gen", files=1, records=10)
    with LambdaExecutor(max_workers=1, storage="local", storage_path=str(tmp_path / "s")) as ex:
        line_chunks = lambdaexec.chunks(str(tmp_path / "gen" / "*"))
        with pytest.raises(ValueError, match="made with record_size=None"):
            ex.sort(line_chunks, str(tmp_path / "out"), record_size=100)
        with pytest.raises(ValueError, match="sort needs at least one chunk"):
            ex.sort([], str(tmp_path / "out"))


@pytest.mark.slow
def test_large_gensort_sort_through_redis_shuffle(tmp_path, redis_server):
    """40 MB of gensort records (400,000), 8 partitions, intermediates on Redis."""
    import numpy as np

    rng = np.random.default_rng(1)
    d = tmp_path / "big"
    d.mkdir()
    for i in range(4):
        recs = np.full((100_000, 100), ord("."), dtype=np.uint8)
        recs[:, :10] = rng.integers(0, 256, size=(100_000, 10), dtype=np.uint8)
        (d / f"g{i}").write_bytes(recs.tobytes())
    original = b"".join((d / f"g{i}").read_bytes() for i in range(4))
    cs = lambdaexec.chunks(str(d / "*"), "2MB", record_size=100)
    with LambdaExecutor(max_workers=2, storage="local", storage_path=str(tmp_path / "s"),
                        shuffle_storage="redis", redis_url=redis_server.url) as ex:
        urls = ex.sort(cs, str(tmp_path / "out"), record_size=100, partitions=8)
    body = b"".join(_read_outputs(urls))
    dt = np.dtype([("k", "S10"), ("r", "V90")])
    keys = np.frombuffer(body, dt)["k"]
    assert len(body) == len(original) and bool((keys[:-1] <= keys[1:]).all())
    assert np.array_equal(np.sort(np.frombuffer(body, "V100").view("S100")),
                          np.sort(np.frombuffer(original, "V100").view("S100")))
