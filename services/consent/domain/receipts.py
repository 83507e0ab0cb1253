"""Signed consent receipts (Ed25519): proof the person can keep that an event was recorded.

A receipt signs the canonical JSON (sorted keys, no whitespace) of event_id, seq, event_hash,
signed_at_ms and key_id. key_id is the first 16 hex digits of SHA-256 over the raw public key, so
a verifier can tell which published key to use after a rotation.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


@dataclass(frozen=True)
class Receipt:
    event_id: str
    seq: int
    event_hash: str
    signed_at_ms: int
    key_id: str
    signature: str = ""  # base64 of the 64-byte Ed25519 signature

    @property
    def hash(self) -> str:
        return self.event_hash

    @property
    def signature_b64(self) -> str:
        return self.signature

    def signed_bytes(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if k != "signature"}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class ReceiptSigner:
    def __init__(self, private: Ed25519PrivateKey):
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id_of(self.public)

    @classmethod
    def generate(cls) -> ReceiptSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> ReceiptSigner:
        """From the 32 raw private-key bytes or an unencrypted PKCS#8 PEM."""
        if len(data) == 32:
            return cls(Ed25519PrivateKey.from_private_bytes(data))
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path | str) -> ReceiptSigner:
        """Loads the PEM key at `path`, or creates one there readable by the owner only (0600).
        Creation is atomic: a concurrent starter either wins or loads the winner's key."""
        path = Path(path)
        if path.exists():
            try:
                return cls.from_private_bytes(path.read_bytes())
            except ValueError as exc:
                raise ValueError(f"{path}: not an Ed25519 private key") from exc
        signer = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(_pem(signer._private))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # fails if another process created the key meanwhile
            except FileExistsError:
                return cls.from_private_bytes(path.read_bytes())
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return signer

    def private_bytes(self) -> bytes:
        return self._private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                           serialization.NoEncryption())

    def public_key_pem(self) -> str:
        return self.public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(self, event: Mapping[str, Any] | str, seq: int | None = None, event_hash: str | None = None,
             signed_at_ms: int | None = None) -> Receipt:
        """`sign(event)` for a sealed event (a ConsentEvent or stored record); the receipt's time is
        the event's recording time unless `signed_at_ms` is given, so re-issuing a receipt yields
        the same bytes. `sign(event_id, seq, event_hash, signed_at_ms)` signs explicit values."""
        if isinstance(event, Mapping):
            event_id, seq, event_hash = str(event["event_id"]), int(event["seq"]), str(event["hash"])
            if signed_at_ms is None:
                signed_at_ms = int(event["recorded_at"])
        else:
            event_id = event
            if seq is None or event_hash is None or signed_at_ms is None:
                raise TypeError("sign(event_id, seq, event_hash, signed_at_ms) needs all four values")
        unsigned = Receipt(event_id, int(seq), event_hash, int(signed_at_ms), self.key_id)
        signature = base64.b64encode(self._private.sign(unsigned.signed_bytes())).decode()
        return Receipt(event_id, int(seq), event_hash, int(signed_at_ms), self.key_id, signature)


def verify_receipt(receipt: Receipt, public_key_pem: str | bytes) -> bool:
    """True only if the receipt was signed by the key in `public_key_pem` and is unaltered."""
    try:
        pem = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
        public = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        return False
    if not isinstance(public, Ed25519PublicKey) or key_id_of(public) != receipt.key_id:
        return False
    try:
        public.verify(base64.b64decode(receipt.signature, validate=True), receipt.signed_bytes())
    except (InvalidSignature, ValueError, binascii.Error, TypeError):
        return False
    return True
