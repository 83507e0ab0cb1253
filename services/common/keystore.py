"""Per-subject data keys kept in the graph, wrapped by the KEK; destroying them crypto-shreds."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from services.common.crypto import DataCipher, KeyEncryptionKey, b64, unb64
from services.common.errors import NotFound
from services.common.graph.port import GraphClient, Schema
from services.common.graph.statements import cypher

SCHEMA = Schema(unique=[("SubjectKey", "subject")])

GET_OR_CREATE = cypher(
    "keystore.get_or_create",
    """
    OPTIONAL MATCH (k:SubjectKey {subject: $subject})
    FOREACH (ignored IN CASE WHEN k IS NULL THEN [1] ELSE [] END |
      CREATE (:SubjectKey {subject: $subject, wrapped: $wrapped, kek_id: $kek_id, created_at: $now}))
    RETURN coalesce(k.wrapped, $wrapped) AS wrapped
    """,
    write=True,
)
GET_OR_CREATE_MANY = cypher(
    "keystore.get_or_create_many",
    """
    UNWIND $keys AS key
    OPTIONAL MATCH (k:SubjectKey {subject: key.subject})
    FOREACH (ignored IN CASE WHEN k IS NULL THEN [1] ELSE [] END |
      CREATE (:SubjectKey {subject: key.subject, wrapped: key.wrapped, kek_id: $kek_id, created_at: $now}))
    RETURN key.subject AS subject, coalesce(k.wrapped, key.wrapped) AS wrapped
    """,
    write=True,
)
GET = cypher("keystore.get", "MATCH (k:SubjectKey {subject: $subject}) RETURN k.wrapped AS wrapped")
GET_MANY = cypher(
    "keystore.get_many",
    "UNWIND $subjects AS s MATCH (k:SubjectKey {subject: s}) RETURN s AS subject, k.wrapped AS wrapped",
)
DESTROY = cypher(
    "keystore.destroy",
    "UNWIND $subjects AS s MATCH (k:SubjectKey {subject: s}) DELETE k RETURN count(k) AS destroyed",
    write=True,
)


class SubjectKeys:
    """Hands out ciphers for subjects ("account:…", "person:…"), caching unwrapped keys briefly.

    The cache is small and short-lived: a key destroyed on another replica stops decrypting here
    within `ttl_seconds`, and the ciphertexts themselves are deleted with the key anyway.
    """

    def __init__(self, graph: GraphClient, kek: KeyEncryptionKey, *, ttl_seconds: float = 30.0,
                 capacity: int = 10_000):
        self._graph = graph
        self._kek = kek
        self._ttl = ttl_seconds
        self._capacity = capacity
        self._cache: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def _cached(self, subject: str) -> bytes | None:
        with self._lock:
            hit = self._cache.get(subject)
            if hit and hit[0] > time.monotonic():
                self._cache.move_to_end(subject)
                return hit[1]
            return None

    def _remember(self, subject: str, key: bytes) -> None:
        with self._lock:
            self._cache[subject] = (time.monotonic() + self._ttl, key)
            self._cache.move_to_end(subject)
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)

    def _from_cache(self, subjects: list[str]) -> tuple[dict[str, DataCipher], list[str]]:
        """Ciphers of the cached subjects, and the subjects (distinct, in order) not cached."""
        out: dict[str, DataCipher] = {}
        missing = []
        for subject in dict.fromkeys(subjects):
            key = self._cached(subject)
            if key is None:
                missing.append(subject)
            else:
                out[subject] = DataCipher(key)
        return out, missing

    def _unwrapped(self, rows: list[dict]) -> dict[str, DataCipher]:
        """Ciphers of stored (subject, wrapped key) rows, remembered in the cache."""
        out = {}
        for row in rows:
            key = self._kek.unwrap(row["subject"], unb64(row["wrapped"]))
            self._remember(row["subject"], key)
            out[row["subject"]] = DataCipher(key)
        return out

    def cipher_for(self, subject: str) -> DataCipher:
        """The subject's cipher, creating its key on first use."""
        key = self._cached(subject)
        if key is None:
            fresh = self._kek.new_data_key()
            rows = self._graph.run(GET_OR_CREATE, {
                "subject": subject, "wrapped": b64(self._kek.wrap(subject, fresh)),
                "kek_id": self._kek.key_id, "now": int(time.time() * 1000)})
            key = self._kek.unwrap(subject, unb64(rows[0]["wrapped"]))
            self._remember(subject, key)
        return DataCipher(key)

    def ciphers_for(self, subjects: list[str]) -> dict[str, DataCipher]:
        """Like `cipher_for` for many subjects, in one round trip for the ones not cached."""
        out, missing = self._from_cache(subjects)
        if missing:
            keys = [{"subject": s, "wrapped": b64(self._kek.wrap(s, self._kek.new_data_key()))} for s in missing]
            rows = self._graph.run(GET_OR_CREATE_MANY, {"keys": keys, "kek_id": self._kek.key_id,
                                                        "now": int(time.time() * 1000)})
            out.update(self._unwrapped(rows))
        return out

    def existing_cipher(self, subject: str) -> DataCipher:
        """The subject's cipher; NotFound once the key was destroyed (the data is shredded)."""
        key = self._cached(subject)
        if key is None:
            rows = self._graph.run(GET, {"subject": subject})
            if not rows:
                raise NotFound("the subject's data key no longer exists", reason="SUBJECT_KEY_DESTROYED")
            key = self._kek.unwrap(subject, unb64(rows[0]["wrapped"]))
            self._remember(subject, key)
        return DataCipher(key)

    def ciphers(self, subjects: list[str]) -> dict[str, DataCipher]:
        """Ciphers of existing keys, one round trip for the ones not cached; subjects whose key
        was destroyed are absent."""
        out, missing = self._from_cache(subjects)
        if missing:
            out.update(self._unwrapped(self._graph.run(GET_MANY, {"subjects": missing})))
        return out

    def ciphers_of_wrapped(self, wrapped: dict[str, str | None]) -> dict[str, DataCipher]:
        """`ciphers` for subjects whose wrapped keys the caller read together with its own data
        (None: destroyed), so that no key lookup is needed."""
        out, missing = self._from_cache(list(wrapped))
        out.update(self._unwrapped([{"subject": s, "wrapped": wrapped[s]} for s in missing if wrapped[s]]))
        return out

    def destroy(self, subjects: list[str]) -> int:
        with self._lock:
            for s in subjects:
                self._cache.pop(s, None)
        rows = self._graph.run(DESTROY, {"subjects": subjects})
        return int(rows[0]["destroyed"]) if rows else 0

