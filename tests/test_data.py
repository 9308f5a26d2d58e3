"""lambdaexec.chunks: byte ranges of files that workers read, records never split."""

from __future__ import annotations

import pickle
import uuid

import pytest

import lambdaexec
from lambdaexec import LambdaExecutor
from lambdaexec.dataflow.chunks import parse_size

FILES = {
    "crlf.txt": b"first line\r\nsecond\r\n\r\nthird line here\r\n",
    "no_final_newline.txt": b"alpha\nbeta\ngamma",
    "long_line.txt": b"a\n" + b"x" * 300 + b"\nb\nc\n",
    "empty.txt": b"",
    "only_newlines.txt": b"\n\n\n\n",
    "one_line.txt": b"single line without newline",
}


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for name, data in FILES.items():
        (d / name).write_bytes(data)
    return d


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_line_in_exactly_one_chunk(files, name):
    data = FILES[name]
    for size in range(1, len(data) + 3):
        cs = lambdaexec.chunks(str(files / name), size)
        reads = [c.read() for c in cs]
        assert b"".join(reads) == data, (name, size)
        for r in reads:  # each chunk ends at a line end, except a final line without newline
            assert r == b"" or r.endswith(b"\n") or data.endswith(r) and not data.endswith(b"\n")
        got = [line for r in reads for line in r.splitlines(keepends=True)]
        assert got == data.splitlines(keepends=True), (name, size)


def test_line_longer_than_chunk_is_read_whole_by_one_chunk(files):
    cs = lambdaexec.chunks(str(files / "long_line.txt"), 16)
    reads = [c.read() for c in cs]
    holders = [r for r in reads if b"x" * 300 in r]
    assert len(holders) == 1
    assert sum(r.count(b"x") for r in reads) == 300
    assert b"" in reads  # the chunks the long line spans are empty


def test_open_gives_the_same_bytes_as_read_and_iterates_lines(files):
    data = FILES["crlf.txt"]
    for size in (3, 7, 1000):
        for c in lambdaexec.chunks(str(files / "crlf.txt"), size):
            with c.open() as f:
                assert f.read() == c.read()
        lines = [line for c in lambdaexec.chunks(str(files / "crlf.txt"), size) for line in c.open()]
        assert b"".join(lines) == data


def test_empty_file_gives_no_chunks_and_glob_lists_sorted_files(files):
    assert lambdaexec.chunks(str(files / "empty.txt")) == []
    cs = lambdaexec.chunks(str(files / "*.txt"), 10)
    names = [c.path.rsplit("/", 1)[1] for c in cs]
    assert names == sorted(names)
    assert set(names) == {n for n, d in FILES.items() if d}
    assert sum(len(c.read()) for c in cs) == sum(len(d) for d in FILES.values())
    # a directory and a list of paths name the same files
    assert lambdaexec.chunks(str(files), 10) == cs
    assert lambdaexec.chunks([str(files / "crlf.txt"), str(files / "one_line.txt")], 10) == [
        c for c in cs if c.path.endswith(("crlf.txt", "one_line.txt"))]


def test_record_size_puts_bounds_on_records(files):
    data = bytes(range(100)) * 37
    (files / "records.bin").write_bytes(data)
    cs = lambdaexec.chunks(str(files / "records.bin"), 250, record_size=100)
    assert all(c.start % 100 == 0 and (c.end - c.start) % 100 == 0 for c in cs)
    assert [c.end - c.start for c in cs] == [200] * 18 + [100]
    assert b"".join(c.read() for c in cs) == data
    # a chunk size under one record still gives whole records
    assert all(len(c.read()) == 100 for c in lambdaexec.chunks(str(files / "records.bin"), 10, record_size=100))


def test_a_file_that_is_not_whole_records_is_refused(files):
    (files / "ragged.bin").write_bytes(b"x" * 250)
    with pytest.raises(ValueError, match=r"ragged.bin holds 250 bytes, not a whole number of 100-byte records"):
        lambdaexec.chunks(str(files / "ragged.bin"), "1KiB", record_size=100)


def test_bad_paths_and_sizes_are_named(files):
    with pytest.raises(FileNotFoundError, match="matches no file"):
        lambdaexec.chunks(str(files / "*.csv"))
    with pytest.raises(FileNotFoundError, match="matches no file"):
        lambdaexec.chunks(str(files / "absent.txt"))
    with pytest.raises(ValueError, match="cannot read '64 parsecs' as a size"):
        lambdaexec.chunks(str(files), "64 parsecs")
    with pytest.raises(ValueError, match="chunk size must be > 0"):
        lambdaexec.chunks(str(files), 0)
    with pytest.raises(ValueError, match="record_size must be a positive int"):
        lambdaexec.chunks(str(files), record_size=-1)
    assert parse_size("64MiB") == 64 << 20 and parse_size("2 kB") == 2000


def test_memory_filesystem_and_small_pickles():
    import fsspec

    fs = fsspec.filesystem("memory")
    base = f"/lambdaexec-{uuid.uuid4().hex[:8]}"
    fs.pipe(f"{base}/a.txt", b"one\ntwo\nthree\n")
    cs = lambdaexec.chunks(f"memory://{base}/*.txt", 5)
    assert b"".join(c.read() for c in cs) == b"one\ntwo\nthree\n"
    assert all(c.path.startswith("memory://") for c in cs)
    assert len(pickle.dumps(cs[0])) < 500  # a description, never the data
    # made by hand: (path, start, end); the range grows to the end of the line it cuts
    assert lambdaexec.Chunk(f"memory://{base}/a.txt", 0, 5).read() == b"one\ntwo\n"
    assert lambdaexec.Chunk(f"memory://{base}/a.txt", 5, 14).read() == b"three\n"


def _count_lines(chunk) -> int:
    return sum(1 for _ in chunk.open())


def _words(chunk) -> int:
    return len(chunk.read().split())


def test_workers_read_chunks_from_local_files(files, tmp_path):
    cs = lambdaexec.chunks(str(files / "*.txt"), 7)
    with LambdaExecutor(max_workers=2, storage="local", storage_path=str(tmp_path / "store")) as ex:
        assert sum(ex.map(_count_lines, cs)) == sum(len(d.splitlines()) for d in FILES.values())


def test_workers_read_chunks_from_s3(seaweed, monkeypatch):
    import boto3

    client = boto3.client("s3", endpoint_url=seaweed.endpoint_url, region_name="us-east-1")
    prefix = f"data-{uuid.uuid4().hex[:8]}"
    for name, data in FILES.items():
        client.put_object(Bucket=seaweed.bucket, Key=f"{prefix}/{name}", Body=data)
    url = f"s3://{seaweed.bucket}/{prefix}/*.txt"
    # the endpoint comes from lambdaexec's own settings, as for S3 storage
    monkeypatch.setenv("LAMBDAEXEC_ENDPOINT_URL", seaweed.endpoint_url)
    cs = lambdaexec.chunks(url, 9)
    assert {c.path.rsplit("/", 1)[1] for c in cs} == {n for n, d in FILES.items() if d}
    with LambdaExecutor(max_workers=2, **seaweed.settings()) as ex:
        assert sum(ex.map(_count_lines, cs)) == sum(len(d.splitlines()) for d in FILES.values())
        assert sum(ex.map(_words, cs)) == sum(len(d.split()) for d in FILES.values())
    monkeypatch.delenv("LAMBDAEXEC_ENDPOINT_URL")
    # or given explicitly
    cs2 = lambdaexec.chunks(url, 9, storage_options={"endpoint_url": seaweed.endpoint_url})
    assert [c.read() for c in cs2] == [c.read() for c in cs]


def test_missing_bucket_is_named(seaweed):
    with pytest.raises(FileNotFoundError, match="bucket 'no-such-bucket-x' does not exist"):
        lambdaexec.chunks("s3://no-such-bucket-x/*.txt", storage_options={"endpoint_url": seaweed.endpoint_url})
