"""Profile use cases without gRPC types: traits, behavioural events, export and erasure.

Profile data is keyed by person and encrypted with that person's data key. Persons merged into
another keep their own keys: reads gather the survivor's and the absorbed persons' data, and
erasure destroys all of their keys.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.common import client_ids
from services.common.crypto import b64, unb64
from services.common.errors import FieldViolation, InvalidArgument, NotFound
from services.common.keystore import SubjectKeys
from services.common.protos import SubjectRef
from services.profile.store import ProfileStore

TRAIT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MAX_TRAITS = 200
MAX_VALUE_BYTES = 16_384


@dataclass(frozen=True)
class ResolvedPerson:
    person_id: str
    merged_persons: tuple[str, ...]

    @property
    def all_ids(self) -> list[str]:
        return [self.person_id, *self.merged_persons]


# Resolves a subject to its person through the identity service.
Resolver = Callable[[SubjectRef], ResolvedPerson]


class ProfileService:
    def __init__(self, store: ProfileStore, keys: SubjectKeys, resolve: Resolver):
        self.store = store
        self.keys = keys
        self.resolve = resolve

    def upsert_traits(self, subject: SubjectRef, traits: dict[str, Any], source: str) -> tuple[str, dict, int]:
        violations = []
        if not source.strip():
            violations.append(FieldViolation("source", "must not be empty"))
        if not traits:
            violations.append(FieldViolation("traits", "set at least one trait"))
        if len(traits) > MAX_TRAITS:
            violations.append(FieldViolation("traits", f"at most {MAX_TRAITS} traits per call"))
        for name, value in traits.items():
            if not TRAIT_NAME.match(name):
                violations.append(FieldViolation(f"traits.{name[:64]}", "trait names are snake_case, 1-63 characters"))
            elif len(json.dumps(value)) > MAX_VALUE_BYTES:
                violations.append(FieldViolation(f"traits.{name}", f"value larger than {MAX_VALUE_BYTES} bytes"))
        if violations:
            raise InvalidArgument(violations)
        person = self.resolve(subject)
        cipher = self.keys.cipher_for(f"person:{person.person_id}")
        now = int(time.time() * 1000)
        rows = [{"key": f"{person.person_id}/{name}", "name": name,
                 "value": b64(cipher.encrypt(f"trait:{name}", json.dumps(value)))}
                for name, value in traits.items()]
        self.store.upsert_traits(person.person_id, rows, source.strip(), now)
        return person.person_id, self.traits(person), now

    def traits(self, person: ResolvedPerson) -> dict[str, Any]:
        """Traits of the person; a survivor's own value wins over an absorbed person's."""
        out: dict[str, Any] = {}
        for pid in reversed(person.all_ids):
            rows = self.store.traits(pid)
            if not rows:
                continue
            try:
                cipher = self.keys.existing_cipher(f"person:{pid}")
            except NotFound:
                continue
            for row in rows:
                out[row["name"]] = json.loads(cipher.decrypt(f"trait:{row['name']}", unb64(row["value"])))
        return out

    def record_events(self, events: list[dict[str, Any]]) -> tuple[int, int, list[tuple[str, str]]]:
        """Events: dicts with id, type, subject (SubjectRef), at (ms), channel, properties."""
        rejected: list[tuple[str, str]] = []
        rows = []
        persons: dict[SubjectRef, ResolvedPerson] = {}
        for e in events:
            if not e["id"]:
                rejected.append(("", "event_id is required"))
                continue
            if problems := client_ids.violations(e["id"], "event_id"):
                rejected.append((e["id"], f"event_id {problems[0].description}"))
                continue
            if not re.match(r"^[a-z][a-z0-9_]{0,62}$", e["type"] or ""):
                rejected.append((e["id"], "type must be snake_case"))
                continue
            try:
                person = persons.get(e["subject"]) or self.resolve(e["subject"])
            except NotFound:
                rejected.append((e["id"], "unknown subject"))
                continue
            persons[e["subject"]] = person
            cipher = self.keys.cipher_for(f"person:{person.person_id}")
            rows.append({"id": e["id"], "person_id": person.person_id, "type": e["type"], "at": e["at"],
                         "channel": e["channel"] or "",
                         "properties": b64(cipher.encrypt("event", json.dumps(e["properties"] or {})))})
        accepted, seen = self.store.record_events(rows, int(time.time() * 1000))
        return accepted, seen - accepted, rejected

    def export(self, person: ResolvedPerson) -> dict[str, Any]:
        events = []
        for pid in person.all_ids:
            rows = self.store.events(pid)
            if not rows:
                continue
            cipher = self.keys.existing_cipher(f"person:{pid}")
            for row in rows:
                events.append({"id": row["id"], "type": row["type"], "time_ms": row["at"], "channel": row["channel"],
                               "properties": json.loads(cipher.decrypt("event", unb64(row["properties"])))})
        return {"person": f"persons/{person.person_id}", "traits": self.traits(person),
                "events": sorted(events, key=lambda e: e["time_ms"])}

    def delete(self, person: ResolvedPerson) -> dict[str, int]:
        totals = {"traits": 0, "events": 0}
        for pid in person.all_ids:
            row = self.store.delete(pid)
            totals["traits"] += int(row["traits"])
            totals["events"] += int(row["events"])
        self.keys.destroy([f"person:{pid}" for pid in person.all_ids])
        return totals
