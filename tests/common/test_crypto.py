from __future__ import annotations

import base64

import pytest

from services.common.crypto import (
    BlindIndex,
    DataCipher,
    KeyEncryptionKey,
    KeyMaterialError,
    load_or_create_key,
    read_key_file,
)
from services.common.errors import NotFound
from services.common.keystore import SCHEMA, SubjectKeys


def test_key_files_raw_and_base64(tmp_path):
    raw = bytes(range(32))
    (tmp_path / "raw").write_bytes(raw)
    (tmp_path / "b64").write_text(base64.b64encode(raw).decode() + "\n")
    assert read_key_file(tmp_path / "raw") == raw == read_key_file(tmp_path / "b64")
    (tmp_path / "short").write_text(base64.b64encode(b"x" * 16).decode())
    with pytest.raises(KeyMaterialError):
        read_key_file(tmp_path / "short")


def test_dev_key_is_created_private_and_stable(tmp_path):
    first = load_or_create_key(tmp_path / "keys" / "kek")
    assert load_or_create_key(tmp_path / "keys" / "kek") == first
    assert (tmp_path / "keys" / "kek").stat().st_mode & 0o777 == 0o600


def test_wrapped_key_is_bound_to_its_subject():
    kek = KeyEncryptionKey(bytes(32))
    dek = kek.new_data_key()
    wrapped = kek.wrap("account:a", dek)
    assert kek.unwrap("account:a", wrapped) == dek
    with pytest.raises(KeyMaterialError):
        kek.unwrap("account:b", wrapped)


def test_ciphertext_is_bound_to_its_field_and_authenticated():
    cipher = DataCipher(bytes(32))
    blob = cipher.encrypt("given_name", "Jürgen")
    assert b"J\xc3\xbcrgen" not in blob
    assert cipher.decrypt("given_name", blob) == "Jürgen"
    with pytest.raises(KeyMaterialError):
        cipher.decrypt("family_name", blob)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(KeyMaterialError):
        cipher.decrypt("given_name", tampered)


def test_blind_index_is_deterministic_keyed_and_kind_separated():
    a, b = BlindIndex(bytes(32)), BlindIndex(bytes([1]) * 32)
    assert a.token("email", "x@y.de") == a.token("email", "x@y.de")
    assert a.token("email", "x@y.de") != b.token("email", "x@y.de")
    assert a.token("email", "123") != a.token("phone", "123")
    assert "x@y.de" not in a.token("email", "x@y.de")


def test_crypto_shredding_makes_data_unreadable(graph):
    graph.ensure_schema(SCHEMA)
    keys = SubjectKeys(graph, KeyEncryptionKey(bytes(32)))
    blob = keys.cipher_for("person:p1").encrypt("trait", "secret")
    assert keys.existing_cipher("person:p1").decrypt("trait", blob) == "secret"
    assert keys.destroy(["person:p1"]) == 1
    with pytest.raises(NotFound):
        keys.existing_cipher("person:p1")
    # A new key for the same subject cannot read the old data.
    with pytest.raises(KeyMaterialError):
        keys.cipher_for("person:p1").decrypt("trait", blob)


def test_concurrent_first_use_agrees_on_one_key(graph):
    """With the keystore's schema in place, as every service installs it before it serves. Without
    the unique constraint, FalkorDB let two of eight concurrent get-or-create statements both
    create a key (about one run in three): the constraint is what makes the statement safe."""
    from concurrent.futures import ThreadPoolExecutor

    graph.ensure_schema(SCHEMA)
    kek = KeyEncryptionKey(bytes(32))
    stores = [SubjectKeys(graph, kek) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        blobs = list(pool.map(lambda s: s.cipher_for("account:race").encrypt("f", "v"), stores))
    reader = SubjectKeys(graph, kek)
    assert all(reader.existing_cipher("account:race").decrypt("f", b) == "v" for b in blobs)


def test_concurrent_dev_key_creation_agrees(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: load_or_create_key(tmp_path / "keys" / "kek"), range(16)))
    assert len(keys) == 1
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["kek"]
