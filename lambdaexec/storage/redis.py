"""Storage in Redis: for small, latency-sensitive intermediate data (shuffles), as in PyWren.

Objects live in memory on the Redis server, so keep large inputs and results on S3.
"""

from __future__ import annotations

from collections.abc import Sequence

from lambdaexec.errors import ConfigError, StorageError
from lambdaexec.storage.base import Chunks, Storage, as_chunks


class RedisStorage(Storage):
    """Keys are Redis string keys; ``url`` is a ``redis://host:port/db`` address."""

    concurrency = 16

    def __init__(self, url: str):
        try:
            import redis
        except ImportError:
            raise ImportError(
                "Redis storage needs the redis client: pip install 'lambdaexec[redis]'"
            ) from None
        self.spec = {"kind": "redis", "url": url}
        self.client = redis.Redis.from_url(url)

    def check(self) -> None:
        try:
            self.client.ping()
        except Exception as err:
            raise ConfigError(f"cannot reach Redis at {self.spec['url']}: {err}; start redis-server or "
                              "set redis_url (LAMBDAEXEC_REDIS_URL)") from None

    def put(self, key: str, data: Chunks) -> int:
        chunks = as_chunks(data)
        body = b"".join(chunks)
        try:
            self.client.set(key, body)
        except Exception as err:
            if type(err).__name__ != "OutOfMemoryError":  # redis.exceptions.OutOfMemoryError: OOM
                raise
            raise StorageError(
                f"Redis at {self.spec['url']} refused to store {key!r} ({len(body):,} bytes): its memory is "
                f"over `maxmemory` ({err}). Raise maxmemory, with `maxmemory-policy noeviction` so that nothing "
                "lambdaexec writes is evicted, or keep large inputs and results on S3 (storage='s3')") from err
        return len(body)

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytearray:
        if start is None and end is None:
            value = self.client.get(key)
        else:
            if end is not None and end <= (start or 0):
                return bytearray()
            value = self.client.getrange(key, start or 0, -1 if end is None else end - 1)
            if value == b"":  # no such key, or an empty range: asked again in one transaction, since
                # a key written between two separate commands would read as empty bytes
                pipe = self.client.pipeline(transaction=True)
                pipe.getrange(key, start or 0, -1 if end is None else end - 1)
                pipe.exists(key)
                value, found = pipe.execute()
                if not found:
                    value = None
        if value is None:
            raise KeyError(key)
        return bytearray(value)

    def list(self, prefix: str) -> list[str]:
        pattern = "".join("\\" + ch if ch in "\\*?[]^" else ch for ch in prefix) + "*"
        return sorted(k.decode() for k in self.client.scan_iter(match=pattern, count=1000))

    def exists(self, key: str) -> bool:
        return bool(self.client.exists(key))

    def delete_keys(self, keys: Sequence[str]) -> None:
        for i in range(0, len(keys), 1000):
            self.client.delete(*keys[i : i + 1000])

    def close(self) -> None:
        self.client.close()
