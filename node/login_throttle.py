"""How many wrong passphrases one name may try: a sliding window of failures.

Argon2id makes each guess slow, but nothing stopped a script from guessing all day.
After `limit` failures for one name within `window_s`, further passphrase attempts for
that name are refused *before* any hash is checked, until the oldest failure leaves
the window. Keyed by name rather than by client address: addresses are cheap to
change and, behind a proxy, not ours to trust. A stranger can thereby hold one name's
passphrase login shut for a while; the member still gets in with a one-time login
link from an organizer, which this does not touch. Memory is bounded: at most
`max_names` names are tracked, the least recently failed forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from node.errors import NodeError


class TooManyAttempts(NodeError):
    code = "too_many_attempts"
    status = 429


class LoginThrottle:
    def __init__(self, *, limit: int = 5, window_s: float = 900.0, max_names: int = 10_000):
        self._limit = limit
        self._window = window_s
        self._max = max_names
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, name: str, now: float) -> None:
        """Raise TooManyAttempts while `name` has used up its failures in the window."""
        recent = self._recent(name, now)
        if recent is not None and len(recent) >= self._limit:
            wait = int(recent[0] + self._window - now) + 1
            raise TooManyAttempts(
                f"{self._limit} wrong passphrases for this name in "
                f"{int(self._window // 60)} minutes; try again in {wait} s, "
                "or ask an organizer for a login link"
            )

    def failed(self, name: str, now: float) -> None:
        recent = self._recent(name, now) or deque()
        recent.append(now)
        self._failures[name.casefold()] = recent
        self._failures.move_to_end(name.casefold())
        while len(self._failures) > self._max:
            self._failures.popitem(last=False)

    def succeeded(self, name: str) -> None:
        self._failures.pop(name.casefold(), None)

    def _recent(self, name: str, now: float) -> deque[float] | None:
        recent = self._failures.get(name.casefold())
        if recent is None:
            return None
        while recent and recent[0] <= now - self._window:
            recent.popleft()
        return recent
