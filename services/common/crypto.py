"""Personal-data protection primitives.

- Per-subject data keys (AES-256-GCM) wrapped by a key-encryption key (KEK) from a mounted
  Secret or, in development, a key generated under `$TESSERA_HOME/keys`.
- A keyed blind index (HMAC-SHA256) so exact lookups never need the plaintext.
- Crypto-shredding: destroying a subject's wrapped key makes every ciphertext of that subject
  unreadable, including copies in backups.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
_FORMAT = b"\x01"  # ciphertext format version


class KeyMaterialError(ValueError):
    """Key material is missing, malformed, or a ciphertext does not authenticate."""


def read_key_file(path: str | Path) -> bytes:
    """Reads a 32-byte key stored raw or base64-encoded (as Kubernetes Secrets usually are)."""
    data = Path(path).read_bytes()
    if len(data) == KEY_BYTES:
        return data
    try:
        decoded = base64.b64decode(data.strip(), validate=True)
    except ValueError as exc:
        raise KeyMaterialError(f"{path}: not a raw or base64 32-byte key") from exc
    if len(decoded) != KEY_BYTES:
        raise KeyMaterialError(f"{path}: key must be {KEY_BYTES} bytes, got {len(decoded)}")
    return decoded


def load_or_create_key(path: str | Path) -> bytes:
    """Development helper: reads a key file, creating it (mode 0600) when missing. Safe when
    several services start at once on a fresh $TESSERA_HOME: the file appears atomically, with its
    content, and whoever loses the race reads the winner's key."""
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n")
        try:
            os.link(tmp, p)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return read_key_file(p)


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return _FORMAT + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != _FORMAT:
        raise KeyMaterialError("ciphertext is malformed")
    try:
        return AESGCM(key).decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], aad)
    except InvalidTag as exc:
        raise KeyMaterialError("ciphertext does not authenticate") from exc


class KeyEncryptionKey:
    """Wraps and unwraps per-subject data keys. The subject id is bound as associated data, so
    a wrapped key copied onto another subject does not unwrap."""

    def __init__(self, key: bytes):
        if len(key) != KEY_BYTES:
            raise KeyMaterialError("KEK must be 32 bytes")
        self._key = key
        self.key_id = hashlib.sha256(b"tessera-kek" + key).hexdigest()[:16]

    def new_data_key(self) -> bytes:
        return secrets.token_bytes(KEY_BYTES)

    def wrap(self, subject_id: str, data_key: bytes) -> bytes:
        return _seal(self._key, data_key, b"dek:" + subject_id.encode())

    def unwrap(self, subject_id: str, wrapped: bytes) -> bytes:
        return _open(self._key, wrapped, b"dek:" + subject_id.encode())


class DataCipher:
    """Encrypts one subject's fields with that subject's data key; the field name is bound as
    associated data so ciphertexts cannot be swapped between fields."""

    def __init__(self, data_key: bytes):
        self._key = data_key

    def encrypt(self, field_name: str, plaintext: str) -> bytes:
        return _seal(self._key, plaintext.encode("utf-8"), field_name.encode())

    def decrypt(self, field_name: str, blob: bytes) -> str:
        return _open(self._key, blob, field_name.encode()).decode("utf-8")


class BlindIndex:
    """Keyed, deterministic pseudonym of an identifier: equal inputs give equal tokens, tokens
    reveal nothing without the key, and the kind is mixed in so equal strings of different kinds
    never collide."""

    def __init__(self, key: bytes):
        if len(key) != KEY_BYTES:
            raise KeyMaterialError("blind-index key must be 32 bytes")
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)  # keyed state, copied per token (3x faster)

    def token(self, kind: str, normalized_value: str) -> str:
        mac = self._keyed.copy()
        mac.update(kind.encode() + b"\x00" + normalized_value.encode("utf-8"))
        return mac.hexdigest()

    def account_token(self, source: str, external_id: str) -> str:
        """The pseudonymous id every service uses for an account (identity's account id)."""
        return self.token("account", f"{source}\x00{external_id}")[:32]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))
