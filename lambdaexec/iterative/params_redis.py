"""How a :class:`~lambdaexec.iterative.params.ParameterServer` keeps its arrays in Redis: the key and
shard layout, and the three Lua scripts that push, pull and fold them atomically.

Keys, for server ``name`` and array ``w`` (``shards`` pieces of at most ``shard_bytes`` each, so
an array may exceed Redis's 512 MB value limit)::

    lambdaexec/ps/<name>/w/meta           JSON: dtype, shape, shards, id of this init
    lambdaexec/ps/<name>/w/head           how many deltas the base includes
    lambdaexec/ps/<name>/w/fold           the fold lock (5 s lease), while someone folds
    lambdaexec/ps/<name>/w/base/<i>       shard i of the folded value (little-endian bytes)
    lambdaexec/ps/<name>/w/deltas/<i>     shard i of each pending delta, oldest first

Every script checks the array's ``meta`` first, so an array re-initialized (or removed) under a
caller is noticed, never mixed with the old one.
"""

from __future__ import annotations

import json

import numpy as np

#: default largest piece of an array kept in one Redis value (Redis's own limit is 512 MB)
SHARD_BYTES = 64 << 20
#: the largest value Redis stores
REDIS_VALUE_LIMIT = 512 << 20

# KEYS: per array: meta, deltas/0..n-1 ; ARGV: per array: expected meta, n, delta shards 0..n-1
# -> per array: {'ok', pending count}, or {'meta', stored meta} when it was re-initialized or removed
# (then nothing at all is pushed: every array is checked before any is changed)
PUSH_SCRIPT = """
local a, k = 1, 1
while a <= #ARGV do
  local n = tonumber(ARGV[a + 1])
  local meta = redis.call('GET', KEYS[k])
  if meta ~= ARGV[a] then return {'meta', k} end
  a, k = a + 2 + n, k + 1 + n
end
local out = {}
a, k = 1, 1
while a <= #ARGV do
  local n = tonumber(ARGV[a + 1])
  local count = 0
  for i = 1, n do count = redis.call('RPUSH', KEYS[k + i], ARGV[a + 1 + i]) end
  out[#out + 1] = count
  a, k = a + 2 + n, k + 1 + n
end
return {'ok', out}
"""

# KEYS: per array: meta, head, fold, base/0..n-1, deltas/0..n-1 ; ARGV: per array: expected
# meta, n, deltas the caller's cached sum includes (-1: none), pending deltas worth a fold ->
# per array: {'meta'} when it was re-initialized or removed; {'inc', head, fold?, per shard the
# deltas after the cached ones} when the cache is still ahead of the base; else {'full', head,
# fold?, base shards..., per shard all deltas}. fold? is 1 when the caller, alone, should fold
# (a lock with a 5 s lease, so that concurrent pullers do not all upload a sum that one needs)
PULL_SCRIPT = """
local out = {}
local a, k = 1, 1
while a <= #ARGV do
  local n, p, fold_at = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  if redis.call('GET', KEYS[k]) ~= ARGV[a] then
    out[#out + 1] = {'meta'}
  else
    local head = tonumber(redis.call('GET', KEYS[k + 1]) or '0')
    local fold = 0
    if redis.call('LLEN', KEYS[k + 3 + n]) >= fold_at and redis.call('SET', KEYS[k + 2], '1', 'NX', 'PX', 5000) then
      fold = 1
    end
    local item
    if p >= head then
      item = {'inc', head, fold}
      for i = 0, n - 1 do item[#item + 1] = redis.call('LRANGE', KEYS[k + 3 + n + i], p - head, -1) end
    else
      item = {'full', head, fold}
      for i = 0, n - 1 do item[#item + 1] = redis.call('GET', KEYS[k + 3 + i]) end
      for i = 0, n - 1 do item[#item + 1] = redis.call('LRANGE', KEYS[k + 3 + n + i], 0, -1) end
    end
    out[#out + 1] = item
  end
  a, k = a + 4, k + 3 + 2 * n
end
return out
"""

# KEYS: meta, head, fold, base/0..n-1, deltas/0..n-1 ; ARGV: expected meta, head seen, count of
# deltas folded, new base shards -> 1 if folded, 0 if the array changed meanwhile (then nothing
# is lost: the deltas stay pending). Releases the fold lock either way.
FOLD_SCRIPT = """
redis.call('DEL', KEYS[3])
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[2]) then return 0 end
local n = (#KEYS - 3) / 2
local count = tonumber(ARGV[3])
for i = 1, n do
  redis.call('SET', KEYS[3 + i], ARGV[3 + i])
  redis.call('LTRIM', KEYS[3 + n + i], count, -1)
end
redis.call('INCRBY', KEYS[2], count)
return 1
"""


class ArrayLayout:
    """What travels with an array: dtype, shape and how it is cut into shards."""

    def __init__(self, raw: bytes):
        self.raw = raw
        d = json.loads(raw)
        self.dtype = np.dtype(d["dtype"])
        self.shape = tuple(d["shape"])
        self.shards = int(d["shards"])
        self.shard_bytes = int(d["shard_bytes"])
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def cut(self, flat: np.ndarray) -> list[memoryview]:
        """The shards of a flat little-endian array of this layout, as byte views."""
        data = memoryview(flat).cast("B")
        step = self.shard_bytes
        return [data[i * step : (i + 1) * step] for i in range(self.shards)]

