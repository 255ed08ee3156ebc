"""W3C Data Integrity proofs with the cryptosuite eddsa-jcs-2022.

Theory of operation (Data Integrity EdDSA Cryptosuites v1.0, §3.3 "eddsa-jcs-2022"):
- proof configuration (§3.3.5): the proof's options — type DataIntegrityProof,
  cryptosuite, created, verificationMethod, proofPurpose — plus, when the document has
  an ``@context``, that same ``@context``; canonicalized with RFC 8785;
- transformation (§3.3.3): the document without its ``proof``, canonicalized;
- hashing (§3.3.4): hashData = SHA-256(canonical proof config) ‖ SHA-256(canonical document),
  64 bytes, proof config first;
- serialization (§3.3.6): Ed25519 signature of hashData; proofValue = "z" + base58btc(sig).
Verification (§3.3.2) rebuilds hashData from the secured document (the proof minus its
proofValue is the proof config) and checks the signature. FEP-8b32 uses exactly this for
ActivityPub objects. Only a single proof object is supported, not proof sets or chains.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Final

from protocol.canonical import canonicalize, canonicalize_minus
from protocol.errors import CanonicalError, KeyFormatError, ProofError
from protocol.keys import SigningKey, VerifyKey, b58decode, b58encode

__all__ = [
    "CRYPTOSUITE",
    "PROOF_TYPE",
    "create_proof",
    "hash_data",
    "proof_method",
    "verified_digest",
    "verify_proof",
]

PROOF_TYPE: Final = "DataIntegrityProof"
CRYPTOSUITE: Final = "eddsa-jcs-2022"


def hash_data(unsecured: Mapping[str, object], proof_config: Mapping[str, object]) -> bytes:
    """The 64 bytes eddsa-jcs-2022 signs (§3.3.4): proof config hash, then document hash."""
    try:
        return (
            hashlib.sha256(canonicalize(proof_config)).digest()
            + hashlib.sha256(canonicalize(unsecured)).digest()
        )
    except CanonicalError as exc:
        raise ProofError(f"cannot canonicalize: {exc.detail}") from exc


def create_proof(
    document: Mapping[str, object],
    key: SigningKey,
    *,
    verification_method: str,
    created: str,
    proof_purpose: str = "assertionMethod",
) -> dict[str, object]:
    """A new dict: ``document`` plus an eddsa-jcs-2022 ``proof`` by ``key``.

    ``created`` is the RFC 3339 time to state in the proof (the caller's clock).
    """
    if "proof" in document:
        raise ProofError("the document already carries a proof; proof sets are not supported")
    proof: dict[str, object] = {
        "type": PROOF_TYPE,
        "cryptosuite": CRYPTOSUITE,
        "created": created,
        "verificationMethod": verification_method,
        "proofPurpose": proof_purpose,
    }
    if "@context" in document:
        proof["@context"] = document["@context"]
    signature = key.sign(hash_data(document, proof))
    proof["proofValue"] = "z" + b58encode(signature)
    return {**document, "proof": proof}


def _proof_of(document: Mapping[str, object]) -> Mapping[str, object]:
    proof = document.get("proof")
    if proof is None:
        raise ProofError("the document has no proof")
    if not isinstance(proof, Mapping):
        raise ProofError("the proof must be a single JSON object (proof sets are not supported)")
    return proof


def proof_method(document: Mapping[str, object]) -> str:
    """The ``verificationMethod`` of the document's proof (ProofError if there is none)."""
    method = _proof_of(document).get("verificationMethod")
    if not isinstance(method, str) or not method:
        raise ProofError("the proof has no verificationMethod string")
    return method


def verify_proof(
    document: Mapping[str, object],
    key: VerifyKey,
    *,
    proof_purpose: str = "assertionMethod",
) -> None:
    """Check the document's eddsa-jcs-2022 proof by ``key``; ProofError says what failed.

    Which key is the right one is the caller's question (the chain, an actor document):
    this checks the proof's form and that ``key`` made the signature.
    """
    verified_digest(document, key, proof_purpose=proof_purpose)


def verified_digest(
    document: Mapping[str, object],
    key: VerifyKey,
    *,
    proof_purpose: str = "assertionMethod",
) -> str:
    """verify_proof, then the digest (hex SHA-256 of the canonical form) of the whole
    document, proof included — what a chain's next ``prev`` holds — from the same pass."""
    proof = _proof_of(document)
    if proof.get("type") != PROOF_TYPE:
        raise ProofError(f"proof type is {proof.get('type')!r}, expected {PROOF_TYPE!r}")
    if proof.get("cryptosuite") != CRYPTOSUITE:
        raise ProofError(
            f"proof cryptosuite is {proof.get('cryptosuite')!r}, expected {CRYPTOSUITE!r}"
        )
    if proof.get("proofPurpose") != proof_purpose:
        raise ProofError(
            f"proof purpose is {proof.get('proofPurpose')!r}, expected {proof_purpose!r}"
        )
    method = proof.get("verificationMethod")
    if not isinstance(method, str) or not method:
        raise ProofError("the proof has no verificationMethod string")
    created = proof.get("created")
    if created is not None and not isinstance(created, str):
        raise ProofError("proof 'created' must be a date-time string")
    value = proof.get("proofValue")
    if not isinstance(value, str) or not value.startswith("z"):
        raise ProofError("proofValue must be a string starting with 'z' (base58btc)")
    try:
        signature = b58decode(value[1:])
    except KeyFormatError as exc:
        raise ProofError(f"proofValue is not base58btc: {exc.detail}") from None
    if len(signature) != 64:
        raise ProofError(f"proofValue decodes to {len(signature)} bytes, not 64")
    if "@context" in proof:
        # §3.3.2 step: the document's @context must start with the proof's, in order.
        pctx, dctx = proof["@context"], document.get("@context")
        plist = pctx if isinstance(pctx, list) else [pctx]
        dlist = dctx if isinstance(dctx, list) else [dctx]
        if dlist[: len(plist)] != plist:
            raise ProofError("the proof's @context is not a prefix of the document's @context")
    try:
        secured_c, unsecured_c, config_c = canonicalize_minus(document, "proof", "proofValue")
    except CanonicalError as exc:
        raise ProofError(f"cannot canonicalize: {exc.detail}") from exc
    sha256 = hashlib.sha256
    key.verify(sha256(config_c).digest() + sha256(unsecured_c).digest(), signature)
    return sha256(secured_c).hexdigest()
