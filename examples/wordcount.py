"""Word count with lambdaexec: workers read the files' byte ranges, a shuffle through storage
groups the counts by word, and the result equals collections.Counter over the same files.

    python examples/wordcount.py                 # generates 8 small files in a temp dir
    python examples/wordcount.py 'data/*.txt'    # or counts your own files (any fsspec URL)
"""

import collections
import operator
import random
import sys
import tempfile
from pathlib import Path

import lambdaexec


def count_words(chunk):
    """One mapper: the words of one chunk (whole lines only), counted."""
    return collections.Counter(chunk.read().split())


def total(word, counts):
    """One key's reduce: the per-mapper counts of ``word``, summed."""
    return sum(counts)


def make_corpus(directory: Path, files: int = 8, lines: int = 20_000) -> str:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    for i in range(files):
        text = "\n".join(" ".join(rng.choices(words, k=10)) for _ in range(lines)) + "\n"
        (directory / f"part-{i:02d}.txt").write_text(text)
    return str(directory / "*.txt")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pattern = sys.argv[1] if len(sys.argv) > 1 else make_corpus(Path(tmp))
        chunks = lambdaexec.chunks(pattern, "1MiB")
        with lambdaexec.LambdaExecutor() as ex:
            future = ex.map_reduce(count_words, chunks, total, reducers=2, combine=operator.add)
            counts = future.result()
        print(f"{len(chunks)} chunks, {len(counts)} distinct words, {sum(counts.values())} words")
        print("most common:", sorted(counts.items(), key=lambda kv: -kv[1])[:5])
        print("shuffle:", future.shuffle_stats)
        if len(sys.argv) == 1:  # check against the standard library
            expected = collections.Counter()
            for path in sorted(Path(tmp).glob("*.txt")):
                expected.update(path.read_bytes().split())
            assert counts == dict(expected), "word count differs from collections.Counter"
            print("equal to collections.Counter: yes")


if __name__ == "__main__":
    main()
