"""Merkle trees, inclusion proofs and consistency proofs (RFC 9162 §2.1).

Theory of operation
-------------------
RFC 9162 §2.1.1 defines the Merkle Tree Hash (MTH) of n leaves recursively: split at
the largest power of two k < n, hash the left k leaves and the right n - k leaves,
join with the node prefix 0x01; a leaf is hashed with the prefix 0x00; the empty tree
is SHA-256 of nothing. The same tree is obtained bottom-up by pairing neighbours level
by level and *promoting* an odd last node unchanged to the next level. MerkleTree
builds it that way once, in O(n), and keeps every level, so node ``j`` of level ``k``
is MTH(D[j*2^k : min((j+1)*2^k, n)]). Every node that the recursive definitions of
PATH (§2.1.3.1) and SUBPROOF (§2.1.4.1) ever name is one of these, so a proof is a
handful of O(1) lookups: O(log n) per proof.

Verification follows §2.1.3.2 (inclusion) and §2.1.4.2 (consistency). It is strict:
every hash is exactly 32 bytes, the index lies inside the tree, a tree of size 0 has
the empty root, and the proof has exactly as many hashes as the algorithm consumes
(the expected count is computed from the index and sizes *before* any hashing, so an
oversized proof costs nothing and is refused with the two counts named).

``verify_inclusion`` takes the 32-byte *leaf hash* (what a receipt carries and what
RFC 9162's test data uses); ``verify_inclusion_data`` takes the raw leaf bytes and
hashes them first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from protocol.errors import MerkleError

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleTree",
    "consistency_proof",
    "hashes_from_hex",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
    "verify_inclusion_data",
]


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one leaf (RFC 9162 §2.1.1)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an inner node (RFC 9162 §2.1.1)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


class MerkleTree:
    """An immutable tree over a fixed list of leaves, built once in O(n).

    ``levels[0]`` holds the leaf hashes; ``levels[k][j]`` the hash of the node covering
    leaves ``j*2^k`` up to ``min((j+1)*2^k, size)``. The last level holds the root.
    """

    __slots__ = ("_levels", "_size")

    def __init__(self, leaves: Iterable[bytes]) -> None:
        self._init_from_hashes([leaf_hash(bytes(leaf)) for leaf in leaves])

    @classmethod
    def from_leaf_hashes(cls, hashes: Iterable[bytes]) -> MerkleTree:
        """Build from already computed leaf hashes (each exactly 32 bytes)."""
        tree = cls.__new__(cls)
        level = list(hashes)
        for i, h in enumerate(level):
            _check_hash(h, f"leaf hash {i}")
        tree._init_from_hashes(level)
        return tree

    def _init_from_hashes(self, level: list[bytes]) -> None:
        self._size = len(level)
        levels = [level]
        while len(level) > 1:
            nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])  # odd node promoted unchanged, as MTH's split implies
            levels.append(nxt)
            level = nxt
        self._levels = levels

    @property
    def size(self) -> int:
        return self._size

    @property
    def root(self) -> bytes:
        """MTH of all leaves; EMPTY_ROOT for an empty tree."""
        if self._size == 0:
            return EMPTY_ROOT
        return self._levels[-1][0]

    def leaf_hash_at(self, index: int) -> bytes:
        self._check_index(index)
        return self._levels[0][index]

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The audit path PATH(index, D[size]) of RFC 9162 §2.1.3.1, bottom first."""
        self._check_index(index)
        proof: list[bytes] = []
        j = index
        for level in self._levels[:-1]:
            sibling = j ^ 1
            if sibling < len(level):
                proof.append(level[sibling])
            # no sibling: this node is promoted, the path gains nothing at this level
            j >>= 1
        return proof

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """PROOF(old_size, D[size]) of RFC 9162 §2.1.4.1; empty when old_size == size."""
        if not 0 < old_size <= self._size:
            raise MerkleError(
                f"consistency proof needs 0 < old_size <= size, got old_size {old_size} "
                f"for a tree of size {self._size}",
                code="bad_merkle_size",
            )
        proof: list[bytes] = []
        self._subproof(old_size, 0, self._size, True, proof)
        return proof

    def _subproof(self, m: int, lo: int, hi: int, whole: bool, out: list[bytes]) -> None:
        # SUBPROOF(m, D[lo:hi], whole), unrolled from the tail recursion of §2.1.4.1:
        # the nodes found on the way down are emitted deepest first, as the RFC orders.
        stack: list[bytes] = []
        while True:
            n = hi - lo
            if m == n:
                if not whole:
                    out.append(self._node(lo, hi))
                break
            k = 1 << ((n - 1).bit_length() - 1)  # largest power of two < n
            if m <= k:
                stack.append(self._node(lo + k, hi))
                hi = lo + k
            else:
                stack.append(self._node(lo, lo + k))
                m -= k
                lo += k
                whole = False
        out.extend(reversed(stack))

    def _node(self, lo: int, hi: int) -> bytes:
        # A node of the RFC tree covering [lo, hi) sits on the level whose width is the
        # smallest power of two >= hi - lo (see the module docstring).
        k = (hi - lo - 1).bit_length()
        return self._levels[k][lo >> k]

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self._size:
            raise MerkleError(
                f"leaf index {index} is outside a tree of size {self._size}",
                code="bad_merkle_index",
            )


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH of raw leaf data (RFC 9162 §2.1.1); SHA-256("") for no leaves."""
    return MerkleTree(leaves).root


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    return MerkleTree(leaves).inclusion_proof(index)


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """Proof that the first ``old_size`` of ``leaves`` are a prefix of all of them."""
    return MerkleTree(leaves).consistency_proof(old_size)


def hashes_from_hex(values: Iterable[object], what: str = "proof") -> list[bytes]:
    """Decode untrusted lowercase-or-uppercase hex hashes, each exactly 32 bytes."""
    out: list[bytes] = []
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise MerkleError(f"{what}[{i}] is not a hex string", code="bad_merkle_hash")
        try:
            h = bytes.fromhex(value)
        except ValueError as err:
            raise MerkleError(
                f"{what}[{i}] is not hex: {value[:80]!r}", code="bad_merkle_hash"
            ) from err
        _check_hash(h, f"{what}[{i}]")
        out.append(h)
    return out


def _check_hash(h: object, what: str) -> None:
    if not isinstance(h, bytes | bytearray) or len(h) != HASH_SIZE:
        size = len(h) if isinstance(h, bytes | bytearray) else type(h).__name__
        raise MerkleError(f"{what} must be {HASH_SIZE} bytes, got {size}", code="bad_merkle_hash")


def _check_size(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MerkleError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _check_proof(proof: Sequence[bytes], want: int, context: str) -> None:
    if len(proof) != want:
        raise MerkleError(
            f"proof has {len(proof)} hashes, {context} needs exactly {want}",
            code="bad_merkle_proof_length",
        )
    for i, p in enumerate(proof):
        _check_hash(p, f"proof[{i}]")


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    RFC 9162 §2.1.3.2. Raises MerkleError naming the reason; returns None on success.
    """
    index = _check_size("index", index)
    size = _check_size("size", size)
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root, "root")
    if index >= size:
        raise MerkleError(
            f"leaf index {index} is outside a tree of size {size}", code="bad_merkle_index"
        )
    # The path has one hash per level where index and the last index part ways
    # (bit length of their XOR), plus one per set bit above that (left siblings on
    # the right edge).
    inner = (index ^ (size - 1)).bit_length()
    want = inner + (index >> inner).bit_count()
    _check_proof(proof, want, f"leaf {index} of a tree of size {size}")

    fn, sn, r = index, size - 1, bytes(leaf_hash)
    for p in proof:
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != root:
        raise MerkleError(
            f"inclusion proof for leaf {index} of a tree of size {size} gives root "
            f"{r.hex()}, not the claimed {bytes(root).hex()}",
            code="merkle_root_mismatch",
        )


def verify_inclusion_data(
    leaf_data: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Like verify_inclusion, from the raw leaf bytes (hashed with the 0x00 prefix)."""
    verify_inclusion(leaf_hash(leaf_data), index, size, proof, root)


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Check that the tree (old_size, old_root) is a prefix of (new_size, new_root).

    RFC 9162 §2.1.4.2. Equal sizes need an empty proof and equal roots (the empty root
    at size 0). A proof from the empty tree to a larger one proves nothing and is
    refused, as the RFC only defines proofs for 0 < old_size < new_size.
    """
    old_size = _check_size("old_size", old_size)
    new_size = _check_size("new_size", new_size)
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    if old_size > new_size:
        raise MerkleError(
            f"old size {old_size} is larger than new size {new_size}", code="bad_merkle_size"
        )
    if old_size == new_size:
        _check_proof(proof, 0, "two trees of equal size")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise MerkleError(
                f"a tree of size 0 has root {EMPTY_ROOT.hex()}, not {bytes(old_root).hex()}",
                code="merkle_root_mismatch",
            )
        if old_root != new_root:
            raise MerkleError(
                f"trees of equal size {old_size} have different roots "
                f"{bytes(old_root).hex()} and {bytes(new_root).hex()}",
                code="merkle_root_mismatch",
            )
        return
    if old_size == 0:
        raise MerkleError(
            "a consistency proof from the empty tree proves nothing; old size must be > 0",
            code="bad_merkle_size",
        )

    # Skip the levels where the old tree is a complete left subtree: below
    # ``shift`` the two trees agree node for node. The proof is then the inclusion
    # path of the old tree's last node at that level, preceded by that node itself
    # unless old_size is a power of two (then it is old_root).
    shift = (old_size & -old_size).bit_length() - 1
    fn, sn = (old_size - 1) >> shift, (new_size - 1) >> shift
    inner = (fn ^ sn).bit_length()
    want = inner + (fn >> inner).bit_count()
    seeded = old_size == 1 << shift
    _check_proof(
        proof,
        want + (0 if seeded else 1),
        f"a consistency proof from size {old_size} to {new_size}",
    )
    path = list(proof) if seeded else list(proof[1:])
    seed = bytes(old_root) if seeded else bytes(proof[0])

    fr = sr = seed
    for c in path:
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if fr != old_root:
        raise MerkleError(
            f"consistency proof from size {old_size} to {new_size} gives old root "
            f"{fr.hex()}, not the claimed {bytes(old_root).hex()}",
            code="merkle_root_mismatch",
        )
    if sn != 0 or sr != new_root:
        raise MerkleError(
            f"consistency proof from size {old_size} to {new_size} gives new root "
            f"{sr.hex()}, not the claimed {bytes(new_root).hex()}",
            code="merkle_root_mismatch",
        )
