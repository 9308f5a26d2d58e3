"""Sort gensort-format records (100 bytes: a 10-byte key, then 90 bytes) with lambdaexec.sort,
Terasort's shape: sample keys, pick ranges, shuffle through storage, write sorted parts.

    python examples/sort_records.py              # 4 files of 20,000 records in a temp dir
"""

import os
import tempfile
from pathlib import Path

import lambdaexec


def make_records(directory: Path, files: int = 4, records: int = 20_000) -> None:
    for i in range(files):
        keys = os.urandom(10 * records)
        body = b"".join(keys[10 * j : 10 * j + 10] + f" {i:02d}{j:08d} ".encode().ljust(90, b".")
                        for j in range(records))
        (directory / f"gensort-{i}").write_bytes(body)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "in"
        data.mkdir()
        make_records(data)
        chunks = lambdaexec.chunks(str(data / "*"), "500KB", record_size=100)
        with lambdaexec.LambdaExecutor() as ex:
            urls = ex.sort(chunks, str(Path(tmp) / "sorted"), record_size=100, partitions=4)
        print("\n".join(urls))
        out = b"".join(Path(u).read_bytes() for u in urls)
        keys = [out[i : i + 10] for i in range(0, len(out), 100)]
        original = b"".join(p.read_bytes() for p in sorted(data.iterdir()))
        assert keys == sorted(keys), "output not sorted"
        assert sorted(out[i : i + 100] for i in range(0, len(out), 100)) == sorted(
            original[i : i + 100] for i in range(0, len(original), 100)), "output is not a permutation"
        print(f"{len(keys)} records sorted into {len(urls)} parts: sorted and a permutation of the input")


if __name__ == "__main__":
    main()
