"""Signed consent receipts (Ed25519): proof the person can keep that an event was recorded."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


@dataclass(frozen=True)
class Receipt:
    event_id: str
    seq: int
    event_hash: str
    signed_at_ms: int
    key_id: str
    signature: str = ""

    def signed_bytes(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if k != "signature"}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class ReceiptSigner:
    def __init__(self, private: Ed25519PrivateKey):
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id_of(self.public)

    @classmethod
    def load_or_create(cls, path: Path) -> ReceiptSigner:
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path}: not an Ed25519 private key")
            return cls(key)
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        return cls(key)

    def public_key_pem(self) -> str:
        return self.public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(self, event_id: str, seq: int, event_hash: str, signed_at_ms: int) -> Receipt:
        unsigned = Receipt(event_id, seq, event_hash, signed_at_ms, self.key_id)
        signature = base64.b64encode(self._private.sign(unsigned.signed_bytes())).decode()
        return Receipt(event_id, seq, event_hash, signed_at_ms, self.key_id, signature)


def verify_receipt(receipt: Receipt, public_key_pem: str) -> bool:
    public = serialization.load_pem_public_key(public_key_pem.encode())
    if not isinstance(public, Ed25519PublicKey) or key_id_of(public) != receipt.key_id:
        return False
    try:
        public.verify(base64.b64decode(receipt.signature), receipt.signed_bytes())
    except (InvalidSignature, ValueError):
        return False
    return True
