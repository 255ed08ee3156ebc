"""The pairwise matrix of ranked ballots, fast enough for a region of a million (§8.1).

``pairwise_matrix(options, rankings)`` is ``d[i][j]`` = the number of rankings that put
options[i] above options[j] (unranked options sit below every ranked one, equal among
themselves). protocol/counting.py counts ranked ballots with it; the Condorcet and
Schulze rules in protocol/tally.py read the matrix it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from operator import itemgetter

from protocol.errors import BallotError

__all__ = ["pairwise_matrix"]

# The pairwise matrix has n*n counters and a ranking of n options touches n(n-1)/2 of
# them: far too slow per ballot in Python for a region of a million ballots. Instead a
# ranking becomes one integer with a ``width``-bit field per ordered pair (i, j), 1 when
# i is ranked above j; the sum of those integers holds every d[i][j] at once, and the
# sums run in C (``sum(map(cache.__getitem__, keys))``).
#
# A ranked option is above every option not ranked at or before it (unranked options
# sit below all ranked ones, equal among themselves). So the integer of a ranking's
# first H options depends only on that prefix (``prefix``), and in a full ranking the
# rest adds only its own internal order (``suffix``): both are cached by the tuple, and
# a million full rankings of 10 options need at most 2 x 10!/5! cache entries. A
# partial ranking longer than H is completed with its unranked options in spec order,
# whose internal order is then taken away again. Unknown or repeated options are caught
# when a prefix or suffix is first computed; an option repeated across the two halves
# of a full ranking leaves some pair not ordered exactly once (the tail keeps 2+
# options for that), which the sum shows.
_CACHE_LIMIT = 400_000


class _Packer:
    def __init__(self, options: tuple[str, ...], width: int) -> None:
        n = len(options)
        self.width = width
        self.index = {o: i for i, o in enumerate(options)}
        self.pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        self.field = {pair: k for k, pair in enumerate(self.pairs)}
        self.bit = [
            [1 << (width * self.field[i, j]) if i != j else 0 for j in range(n)] for i in range(n)
        ]
        self.row = [sum(r) for r in self.bit]
        self.prefixes: dict[tuple[str, ...], int] = {(): 0}
        self.suffixes: dict[tuple[str, ...], int] = {(): 0}

    def _at(self, option: str, rest: tuple[str, ...]) -> int:
        if option not in self.index:
            raise BallotError(f"ranking: {option!r:.80} is not an option of this proposal")
        if option in rest:
            raise BallotError(f"ranking: {option!r:.80} appears twice")
        return self.index[option]

    def prefix(self, r: tuple[str, ...]) -> int:
        """Each option of ``r`` above every option not at or before it in ``r``."""
        v = self.prefixes.get(r)
        if v is None:
            i = self._at(r[-1], r[:-1])
            bit_i = self.bit[i]
            v = self.prefix(r[:-1]) + self.row[i] - sum(bit_i[self.index[o]] for o in r[:-1])
            if len(self.prefixes) < _CACHE_LIMIT:
                self.prefixes[r] = v
        return v

    def suffix(self, r: tuple[str, ...]) -> int:
        """Only the internal order of ``r``: each option above the ones after it."""
        v = self.suffixes.get(r)
        if v is None:
            i = self._at(r[0], r[1:])
            bit_i = self.bit[i]
            v = self.suffix(r[1:]) + sum(bit_i[self.index[o]] for o in r[1:])
            if len(self.suffixes) < _CACHE_LIMIT:
                self.suffixes[r] = v
        return v

    def total(
        self, rankings: list[tuple[str, ...]], part: slice | None = None, suffix: bool = False
    ) -> int:
        """Sum of the cached integers of ``rankings`` (or of each one's ``part``)."""
        cache, fill = (self.suffixes, self.suffix) if suffix else (self.prefixes, self.prefix)
        cut: Callable[[tuple[str, ...]], tuple[str, ...]] = (
            (lambda r: r) if part is None else itemgetter(part)
        )
        try:  # the common case, all in C: every key already cached
            return sum(map(cache.__getitem__, map(cut, rankings)))
        except KeyError:
            pass
        keys = list(map(cut, rankings))
        local = {k: fill(k) for k in set(keys).difference(cache)}  # fill() caches them too
        if len(cache) + len(local) < _CACHE_LIMIT:
            return sum(map(cache.__getitem__, keys))
        local.update((k, cache[k]) for k in set(keys).intersection(cache))
        return sum(map(local.__getitem__, keys))

    def matrix(self, total: int) -> tuple[tuple[int, ...], ...]:
        n, w, mask = len(self.index), self.width, (1 << self.width) - 1
        # field k holds pair k; the diagonal has no field and is 0
        return tuple(
            tuple((total >> (w * self.field[i, j])) & mask if i != j else 0 for j in range(n))
            for i in range(n)
        )


@lru_cache(maxsize=16)
def _packer(options: tuple[str, ...], width: int) -> _Packer:
    return _Packer(options, width)


def pairwise_matrix(
    options: tuple[str, ...], rankings: list[tuple[str, ...]]
) -> tuple[tuple[int, ...], ...]:
    """The pairwise matrix ``d[i][j]`` = rankings preferring options[i] to options[j].

    Raises BallotError for an unknown option or one named twice in a ranking.
    """
    n, h = len(options), max(0, min(5, len(options) - 2))
    width = 16 if len(rankings) < 1 << 16 else 32 if len(rankings) < 1 << 32 else 64
    if set(map(len, rankings)) <= {n}:
        full, short, mid = rankings, [], []
    else:
        full = [r for r in rankings if len(r) == n]
        short = [r for r in rankings if len(r) <= h]
        mid = [r for r in rankings if h < len(r) < n]
    pk = _packer(options, width)
    total = 0
    if full:
        total = pk.total(full, slice(0, h)) + pk.total(full, slice(h, None), suffix=True)
        d = pk.matrix(total)
        # in a full ranking every pair is ordered one way: anything else is a repeat
        if any(d[i][j] + d[j][i] != len(full) for i, j in pk.pairs):
            raise BallotError("a ranking names an option twice")
    total += pk.total(short)
    for r in mid:
        ranked = set(r)
        rest = tuple(o for o in options if o not in ranked)
        if len(r) + len(rest) != n:
            raise BallotError("a ranking names an option twice")
        x = r + rest
        total += pk.prefix(x[:h]) + pk.suffix(x[h:]) - pk.suffix(rest)
    return pk.matrix(total)
