"""One exception hierarchy for the protocol layer.

Every failure is an exception, never ``None`` plus a log line. An error says what
failed, where (actor and seq when known) and why, in words a person can act on,
and carries the HTTP status it maps to (like h11's ``error_status_hint``).
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class: something in a protocol object is invalid."""

    code: str = "invalid"
    status: int = 400

    def __init__(
        self,
        detail: str,
        *,
        actor: str | None = None,
        seq: int | None = None,
        code: str | None = None,
    ) -> None:
        self.detail = detail
        self.actor = actor
        self.seq = seq
        if code is not None:
            self.code = code
        super().__init__(self.describe())

    def describe(self) -> str:
        where = []
        if self.actor is not None:
            where.append(f"actor {self.actor}")
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        prefix = f"{', '.join(where)}: " if where else ""
        return f"{prefix}{self.code}: {self.detail}"


class CanonicalError(ProtocolError):
    """A value cannot be put in RFC 8785 canonical form (NaN, lone surrogate, ...)."""

    code = "not_canonicalizable"


class DecodeError(ProtocolError):
    """Untrusted JSON is malformed, too large, or of the wrong shape."""

    code = "malformed"


class KeyFormatError(ProtocolError):
    """A key or a Multikey/multibase string is malformed."""

    code = "bad_key"


class ProofError(ProtocolError):
    """A Data Integrity proof is missing, malformed or does not verify."""

    code = "bad_proof"


class ChainError(ProtocolError):
    """A signature chain is broken. ``code`` names how (gap, bad_prev, ...)."""

    code = "chain"


class MerkleError(ProtocolError):
    """A Merkle proof or tree parameter is invalid."""

    code = "bad_merkle_proof"


class BallotError(ProtocolError):
    """A ballot does not fit its proposal's method and options."""

    code = "bad_ballot"


class TallyError(ProtocolError):
    """A tally or a decision does not add up."""

    code = "bad_tally"
