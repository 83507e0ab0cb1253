"""Consent data in portable Cypher: purposes and their versions, the hash-chained ledger, the
materialised head, and privacy requests.

The ledger is appended with a compare-and-set on its head: the statement only writes when the
head is still at the sequence the event was chained to, so concurrent writers (also on other
replicas) are linearised and the chain never forks. A request id already in the ledger makes the
append a no-op that returns the existing event (idempotent retries).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from services.common.graph.port import GraphClient, GraphQueryError, Schema
from services.common.graph.statements import Statement, cypher
from services.consent.domain.ledger import (
    CHAINED_FIELDS,
    INTEGER_FIELDS,
    PACK_SEPARATOR,
    PACKED_FIELDS,
    pack_values,
    unpack_values,
)

log = structlog.get_logger("tessera.consent")

SCHEMA = Schema(
    unique=[("Purpose", "id"), ("PurposeVersion", "key"), ("ConsentEvent", "seq"), ("ConsentEvent", "event_id"),
            ("LedgerHead", "name"), ("PrivacyRequest", "id"),
            ("ConsentState", "key")],
    indexes=[("ConsentEvent", "subject_ref"), ("ConsentEvent", "request_id"), ("ConsentEvent", "person_id"),
             ("ConsentState", "subject_ref"),
             ("PrivacyRequest", "state"), ("PrivacyRequest", "request_id")],
)

# The decision fields of an event: what a materialised state holds, and the maps checks read.
STATE_FIELDS = ("seq", "event_id", "kind", "subject_ref", "purpose_id", "purpose_version", "channel",
                "effective_at", "recorded_at", "expires_at", "person_id")
_DECISION_MAP = "{" + ", ".join(f".{name}" for name in STATE_FIELDS) + "}"


CREATE_PURPOSE = cypher(
    "consent.create_purpose",
    """
    MERGE (p:Purpose {id: $id})
    ON CREATE SET p.version = 1, p.create_token = $token, p.created_at = $now
    WITH p, p.create_token = $token AS created
    FOREACH (ignored IN CASE WHEN created THEN [1] ELSE [] END |
      MERGE (v:PurposeVersion {key: $id + '#1'})
      ON CREATE SET v += $fields, v.purpose_id = $id, v.version = 1, v.created_at = $now)
    RETURN created, p.create_token AS token
    """,
    write=True,
)

ADD_PURPOSE_VERSION = cypher(
    "consent.add_purpose_version",
    """
    MATCH (p:Purpose {id: $id})
    WHERE p.version = $expected_version
    SET p.version = $expected_version + 1
    MERGE (v:PurposeVersion {key: $id + '#' + toString($expected_version + 1)})
    ON CREATE SET v += $fields, v.purpose_id = $id, v.version = $expected_version + 1, v.created_at = $now
    RETURN v.version AS version
    """,
    write=True,
)

GET_PURPOSE_VERSION = cypher(
    "consent.get_purpose_version",
    """
    MATCH (p:Purpose {id: $id})
    MATCH (v:PurposeVersion {key: $id + '#' + toString(CASE WHEN $version > 0 THEN $version ELSE p.version END)})
    RETURN v {.*} AS purpose, p.version AS current_version
    """,
)

LIST_PURPOSES = cypher(
    "consent.list_purposes",
    """
    MATCH (p:Purpose)
    WHERE p.id > $after
    MATCH (v:PurposeVersion {key: p.id + '#' + toString(p.version)})
    RETURN v {.*} AS purpose
    ORDER BY p.id
    LIMIT $limit
    """,
)

LEDGER_HEAD = cypher(
    "consent.ledger_head",
    "MATCH (h:LedgerHead {name: 'consent'})\n"
    "RETURN h.seq AS seq, h.hash AS hash, h.states_built AS states_built, h.states_packed AS states_packed",
)

LEDGER_SEQ = cypher("consent.ledger_seq", "MATCH (h:LedgerHead {name: 'consent'}) RETURN h.seq AS seq")
# Sequence and hash as one string ("<seq> <hash>", hashes are hex): the check path's head read is
# one scalar, and the hash tells a ledger that was reset and regrew from the one it follows.
LEDGER_TIP = cypher("consent.ledger_tip",
                    "MATCH (h:LedgerHead {name: 'consent'}) RETURN toString(h.seq) + ' ' + h.hash AS tip")

INIT_LEDGER = cypher(
    "consent.init_ledger",
    """
    MERGE (h:LedgerHead {name: 'consent'})
    ON CREATE SET h.seq = 0, h.hash = $genesis, h.states_built = true, h.states_packed = true
    RETURN h.seq AS seq, h.hash AS hash
    """,
    write=True,
)

# The current state is materialised in the same statement as each append: per subject, purpose,
# kind and channel, the event latest by (effective time, sequence). Checks read those few nodes
# instead of the history; `rebuild_states` derives them from the ledger again.
_NEWER_STATE = ("s.seq IS NULL OR state.effective_at > s.effective_at "
                "OR (state.effective_at = s.effective_at AND state.seq > s.seq)")
# States that exist are updated first; missing ones, and the events, are then created with every
# property inline: in FalkorDB a SET after a node creation in the same statement costs time in
# proportion to the graph (docs/architecture.md, "Write statements"). `state` and the state lists
# hold one entry per key (`states_of`).
_UPDATE_STATE = ("OPTIONAL MATCH (s:ConsentState {key: state.key})\n"
                 f"    FOREACH (newer IN CASE WHEN s IS NOT NULL AND ({_NEWER_STATE}) THEN [1] ELSE [] END |"
                 " SET s += state)")
_STATE_PROPS = ", ".join(f"{f}: state.{f}" for f in ("key", *STATE_FIELDS, "packed"))
EVENT_FIELDS = (*CHAINED_FIELDS, "hash", "payload")
_EVENT_PROPS = ", ".join(f"{f}: event.{f}" for f in EVENT_FIELDS)

APPEND_EVENT = cypher(
    "consent.append_event",
    f"""
    MATCH (h:LedgerHead {{name: 'consent'}})
    OPTIONAL MATCH (dup:ConsentEvent {{request_id: $request_id}})
    WITH h, dup
    WHERE dup IS NULL AND h.seq = $prev_seq AND h.hash = $prev_hash
    SET h.seq = $event.seq, h.hash = $event.hash
    WITH $state AS state, $event AS event
    {_UPDATE_STATE}
    FOREACH (missing IN CASE WHEN s IS NULL THEN [1] ELSE [] END | CREATE (:ConsentState {{{_STATE_PROPS}}}))
    CREATE (e:ConsentEvent {{{_EVENT_PROPS}}})
    RETURN e.seq AS seq
    """,
    write=True,
)

# `$states` holds one entry per state key, the batch's latest (see `states_of`).
APPEND_BATCH = cypher(
    "consent.append_batch",
    f"""
    MATCH (h:LedgerHead {{name: 'consent'}})
    WHERE h.seq = $prev_seq AND h.hash = $prev_hash
    SET h.seq = $head_seq, h.hash = $head_hash
    WITH count(h) AS moved
    WHERE moved = 1
    UNWIND $states AS state
    {_UPDATE_STATE}
    WITH moved, collect(CASE WHEN s IS NULL THEN state END) AS missing
    FOREACH (state IN missing | CREATE (:ConsentState {{{_STATE_PROPS}}}))
    WITH moved
    UNWIND $events AS event
    CREATE (e:ConsentEvent {{{_EVENT_PROPS}}})
    RETURN count(e) AS written
    """,
    write=True,
)

UPSERT_STATES = cypher(
    "consent.upsert_states",
    f"""
    UNWIND $states AS state
    {_UPDATE_STATE}
    WITH collect(CASE WHEN s IS NULL THEN state END) AS missing, count(*) AS states
    FOREACH (state IN missing | CREATE (:ConsentState {{{_STATE_PROPS}}}))
    RETURN states
    """,
    write=True,
)

DELETE_STATES = cypher(
    "consent.delete_states",
    """
    MATCH (s:ConsentState)
    WITH s LIMIT $limit
    DELETE s
    RETURN count(*) AS deleted
    """,
    write=True,
)

MARK_STATES_BUILT = cypher(
    "consent.mark_states_built",
    """
    MATCH (h:LedgerHead {name: 'consent'})
    SET h.states_built = $built
    RETURN h.seq AS seq
    """,
    write=True,
)

LATEST_STATES_FOR_SUBJECTS = cypher(
    "consent.latest_states_for_subjects",
    """
    UNWIND $refs AS ref
    MATCH (s:ConsentState {subject_ref: ref})
    WHERE s.purpose_id = $purpose_id
    RETURN s """ + _DECISION_MAP + " AS event",
)

EVENT_BY_REQUEST = cypher(
    "consent.event_by_request",
    "MATCH (e:ConsentEvent {request_id: $request_id}) RETURN e {.*} AS event",
)

# Two statements rather than one with `WHERE $purpose_id = '' OR …`: on FalkorDB a filter
# that mixes a parameter test into the predicate defeats the index lookup.
EVENTS_FOR_SUBJECTS = cypher(
    "consent.events_for_subjects",
    """
    UNWIND $refs AS ref
    MATCH (e:ConsentEvent {subject_ref: ref})
    RETURN e {.*} AS event
    ORDER BY e.seq
    """,
)

def _latest_events_by(name: str, key: str, param: str) -> Statement:
    """A decision only ever needs, per subject, the latest event of each kind on each channel that
    took effect by the time asked about; the store reduces the history to those, so a check reads a
    handful of rows however long the history is. Events that take effect later (a decision time in
    the future) come back too, all of them: `policy.decide` ignores them until they are due, and a
    cached answer read now stays complete for every later time."""
    return cypher(name, f"""
        UNWIND ${param} AS wanted
        MATCH (e:ConsentEvent {{{key}: wanted}})
        WITH e
        WHERE e.purpose_id = $purpose_id
        WITH e
        ORDER BY e.effective_at DESC, e.seq DESC
        WITH e.{key} AS wanted, e.subject_ref AS ref, e.kind AS kind, coalesce(e.channel, '') AS channel,
             e.effective_at > $at AS pending, collect(e) AS events
        UNWIND CASE WHEN pending THEN events ELSE events[0..1] END AS latest
        RETURN latest {_DECISION_MAP} AS event
        """)


LATEST_EVENTS_FOR_SUBJECTS = _latest_events_by("consent.latest_events_for_subjects", "subject_ref", "refs")
# Events recorded on person ids: an account the cached scope does not know yet still binds through
# its person.
LATEST_EVENTS_FOR_PERSONS = _latest_events_by("consent.latest_events_for_persons", "person_id", "person_ids")

# What changed in a ledger window: enough to tell which cached subjects and persons are stale.
EVENT_SUBJECTS_PAGE = cypher(
    "consent.event_subjects_page",
    """
    MATCH (e:ConsentEvent)
    WHERE e.seq > $after AND e.seq <= $until
    RETURN e.subject_ref AS ref, e.person_id AS person_id, e.seq AS seq, e.prev_hash AS prev_hash
    """,
)

# Every ref that holds an event has a state node (written with the event), so this is the set
# of refs a check can find anything for.
SUBJECT_REFS_WITH_STATE = cypher(
    "consent.subject_refs_with_state",
    "MATCH (s:ConsentState) RETURN DISTINCT s.subject_ref AS ref",
)

EVENTS_FOR_PERSONS = cypher(
    "consent.events_for_persons",
    """
    UNWIND $person_ids AS pid
    MATCH (e:ConsentEvent {person_id: pid})
    RETURN e {.*} AS event
    ORDER BY e.seq
    """,
)

EVENTS_PAGE = cypher(
    "consent.events_page",
    """
    MATCH (e:ConsentEvent)
    WHERE e.seq > $after AND e.seq <= $until
    RETURN e {.*} AS event
    ORDER BY e.seq
    """,
)


def _packed_field(name: str, var: str = "e") -> str:
    """One field of the packed form (services/consent/domain/ledger.py, `PACKED_FIELDS`): tagged by
    its stored type, so a value of another type is never mistaken for the one sealed. Only
    `toString(x) = x` holds for a string, only `toInteger(x) = x` for an integer (or an integral
    float, whose text is no decimal integer and so stays unpackable); a list makes the statement
    fail, and the caller falls back to full records."""
    f = f"{var}.{name}"
    if name in INTEGER_FIELDS:
        return f"CASE WHEN toInteger({f}) = {f} THEN 'i' + toString({f}) WHEN {f} IS NULL THEN 'n' ELSE 'x' END"
    return f"CASE WHEN toString({f}) = {f} THEN 's' + {f} WHEN {f} IS NULL THEN 'n' ELSE 'x' END"


# Verification reads the whole ledger: one string per event rather than a map of ~20 values, because
# the client's per-value parsing, not the store, bounds how fast events arrive.
PACKED_EVENTS_PAGE = cypher(
    "consent.packed_events_page",
    "MATCH (e:ConsentEvent)\nWHERE e.seq > $after AND e.seq <= $until\nRETURN "
    + "\n  + $sep + ".join(_packed_field(name) for name in PACKED_FIELDS)
    + " AS packed\nORDER BY e.seq",
)

# Checks read states in the same packed form (one string per state; see PACKED_EVENTS_PAGE). Each
# state carries it, written with the state's fields from the same map (`state_of`): building it
# here costs the store more than finding the states. Its sequence number tells a packed form
# left behind by a write that did not renew it (a replica of an older release during an
# upgrade): such a chunk, and one with states written before states carried it, is packed by
# LATEST_STATES_PACKING instead, and a chunk that does not unpack is read in the map form.
LATEST_STATES_PREPACKED = cypher(
    "consent.latest_states_prepacked",
    """
    UNWIND $refs AS ref
    MATCH (s:ConsentState {subject_ref: ref})
    WHERE s.purpose_id = $purpose_id
    RETURN s.seq AS seq, s.packed AS packed
    """,
)

_STATE_PACKING = "\n  + $sep + ".join(_packed_field(name, "s") for name in STATE_FIELDS)

LATEST_STATES_PACKING = cypher(
    "consent.latest_states_packing",
    "UNWIND $refs AS ref\nMATCH (s:ConsentState {subject_ref: ref})\nWHERE s.purpose_id = $purpose_id\nRETURN "
    + _STATE_PACKING + " AS packed",
)

# States written before states carried their packed form get it, a page at a time; the ledger
# head then says that every state has it.
PACK_STATES = cypher(
    "consent.pack_states",
    "MATCH (s:ConsentState)\nWHERE s.packed IS NULL\nWITH s LIMIT $limit\nSET s.packed = " + _STATE_PACKING
    + "\nRETURN count(s) AS packed",
    write=True,
)

MARK_STATES_PACKED = cypher(
    "consent.mark_states_packed",
    "MATCH (h:LedgerHead {name: 'consent'})\nSET h.states_packed = true\nRETURN h.seq AS seq",
    write=True,
)


def unpack_states(packed: list[str]) -> list[dict[str, Any]] | None:
    """States from their packed form; None if any of them is not in it."""
    out = []
    for text in packed:
        values = unpack_values(text, len(STATE_FIELDS))
        if values is None:
            return None
        out.append(dict(zip(STATE_FIELDS, values, strict=True)))
    return out


SHRED_EVENTS = cypher(
    "consent.shred_events",
    """
    UNWIND $refs AS ref
    MATCH (e:ConsentEvent {subject_ref: ref})
    SET e.payload = null, e.shredded = true
    RETURN count(e) AS shredded
    """,
    write=True,
)

CREATE_PRIVACY_REQUEST = cypher(
    "consent.create_privacy_request",
    """
    MERGE (r:PrivacyRequest {id: $id})
    ON CREATE SET r += $fields
    RETURN r {.*} AS request
    """,
    write=True,
)

GET_PRIVACY_REQUEST = cypher(
    "consent.get_privacy_request",
    "MATCH (r:PrivacyRequest {id: $id}) RETURN r {.*} AS request",
)

LIST_PRIVACY_REQUESTS = cypher(
    "consent.list_privacy_requests",
    """
    MATCH (r:PrivacyRequest)
    WHERE ($state = '' OR r.state = $state)
      AND (r.due_at > $after_due OR (r.due_at = $after_due AND r.id > $after_id))
    RETURN r {.*} AS request
    ORDER BY r.due_at, r.id
    LIMIT $limit
    """,
)

UPDATE_PRIVACY_REQUEST = cypher(
    "consent.update_privacy_request",
    """
    MATCH (r:PrivacyRequest {id: $id})
    SET r += $fields
    RETURN r {.*} AS request
    """,
    write=True,
)


_KEY_SEPARATOR = "\u001f"


def state_of(event: dict[str, Any]) -> dict[str, Any]:
    """The materialised state an event would set: its decision fields (None clears one) under the
    key of its subject, purpose, kind and channel."""
    key = _KEY_SEPARATOR.join(str(event.get(f) or "") for f in ("subject_ref", "purpose_id", "kind", "channel"))
    values = [event.get(f) for f in STATE_FIELDS]
    return {"key": key, **dict(zip(STATE_FIELDS, values, strict=True)), "packed": pack_values(values)}


def _prepacked_states(rows: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """States from LATEST_STATES_PREPACKED; None unless every row's packed form is there, unpacks
    and holds the state's own sequence number."""
    packed = [r["packed"] for r in rows]
    states = None if None in packed else unpack_states(packed)
    if states is None or any(s["seq"] != r["seq"] for s, r in zip(states, rows, strict=True)):
        return None
    return states


def _check_fields(event: dict[str, Any]) -> None:
    """Events are created with their fields spelt out (`EVENT_FIELDS`): any other would be lost."""
    unknown = event.keys() - set(EVENT_FIELDS)
    if unknown:
        raise ValueError(f"consent event fields not stored: {sorted(unknown)}")


def states_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One state per key: the latest of these events by (effective time, sequence)."""
    latest: dict[str, dict[str, Any]] = {}
    for event in events:
        state = state_of(event)
        held = latest.get(state["key"])
        if held is None or (state["effective_at"], state["seq"]) > (held["effective_at"], held["seq"]):
            latest[state["key"]] = state
    return list(latest.values())


@dataclass
class ConsentStore:
    graph: GraphClient
    # Appends always maintain the state; reads trust it once it is known to be built
    # (`ConsentService.prepare_states`).
    read_states: bool = False

    # purposes
    def create_purpose(self, purpose_id: str, fields: dict[str, Any], token: str, now: int) -> bool:
        row = self.graph.run(CREATE_PURPOSE, {"id": purpose_id, "fields": fields, "token": token, "now": now})[0]
        return bool(row["created"])

    def add_purpose_version(self, purpose_id: str, expected_version: int, fields: dict[str, Any], now: int
                            ) -> int | None:
        rows = self.graph.run(ADD_PURPOSE_VERSION, {"id": purpose_id, "expected_version": expected_version,
                                                    "fields": fields, "now": now})
        return int(rows[0]["version"]) if rows else None

    def get_purpose(self, purpose_id: str, version: int = 0) -> tuple[dict[str, Any], int] | None:
        rows = self.graph.run(GET_PURPOSE_VERSION, {"id": purpose_id, "version": version})
        return (rows[0]["purpose"], int(rows[0]["current_version"])) if rows else None

    def list_purposes(self, after: str, limit: int) -> list[dict[str, Any]]:
        return [r["purpose"] for r in self.graph.run(LIST_PURPOSES, {"after": after, "limit": limit})]

    # ledger
    def ledger_head(self, genesis: str) -> tuple[int, str]:
        rows = self.graph.run(LEDGER_HEAD, {})
        if not rows:
            rows = self.graph.run(INIT_LEDGER, {"genesis": genesis})
        return int(rows[0]["seq"]), str(rows[0]["hash"])

    def ledger_seq(self) -> int:
        """The head's sequence number (0 before the first event): one indexed lookup, read before
        every cached check."""
        seq = self.graph.value(LEDGER_SEQ)
        return int(seq) if seq is not None else 0

    def ledger_tip(self) -> tuple[int, str]:
        """The head's sequence number and hash ((0, "") before the ledger exists): one indexed
        lookup, read before every cached check."""
        return _tip(self.graph.value(LEDGER_TIP))

    async def ledger_tip_async(self) -> tuple[int, str]:
        """`ledger_tip` awaited on the caller's event loop."""
        return _tip(await self.graph.value_async(LEDGER_TIP))

    def event_subjects(self, after: int, until: int) -> tuple[list[tuple[str, str | None]], str | None]:
        """(subject ref, person id) of each event with after < seq <= until, and the `prev_hash`
        of the event right after `after` (None when it is not there): the hash the ledger had at
        `after`, if it is still the same ledger."""
        rows = self.graph.run(EVENT_SUBJECTS_PAGE, {"after": after, "until": until})
        linked = next((str(r["prev_hash"]) for r in rows if int(r["seq"]) == after + 1), None)
        return [(r["ref"], r["person_id"]) for r in rows], linked

    def subject_refs_with_events(self) -> set[str] | None:
        """Every subject ref that holds an event, from the materialised state; None while checks
        do not read the state or the state is not (or no longer, during a fresh rebuild) built."""
        if not self.read_states or not self.states_built():
            return None
        return {r["ref"] for r in self.graph.run(SUBJECT_REFS_WITH_STATE, {})}

    def append_event(self, event: dict[str, Any], prev_seq: int, prev_hash: str) -> bool:
        _check_fields(event)
        rows = self.graph.run(APPEND_EVENT, {"event": event, "prev_seq": prev_seq, "prev_hash": prev_hash,
                                             "request_id": event["request_id"], "state": state_of(event)})
        return bool(rows)

    def append_batch(self, events: list[dict[str, Any]], prev_seq: int, prev_hash: str) -> bool:
        """Appends already-sealed, consecutive events in one atomic statement (bulk import of
        consent history); false when the head moved meanwhile."""
        for event in events:
            _check_fields(event)
        rows = self.graph.run(APPEND_BATCH, {"events": events, "prev_seq": prev_seq, "prev_hash": prev_hash,
                                             "head_seq": events[-1]["seq"], "head_hash": events[-1]["hash"],
                                             "states": states_of(events)})
        return bool(rows) and int(rows[0]["written"]) == len(events)

    def event_by_request(self, request_id: str) -> dict[str, Any] | None:
        rows = self.graph.run(EVENT_BY_REQUEST, {"request_id": request_id})
        return rows[0]["event"] if rows else None

    def events_for_subjects(self, refs: list[str]) -> list[dict[str, Any]]:
        """The full history of these subjects, in ledger order."""
        return [r["event"] for r in self.graph.run(EVENTS_FOR_SUBJECTS, {"refs": refs})] if refs else []

    def latest_events(self, refs: list[str], purpose_id: str, at_ms: int) -> list[dict[str, Any]]:
        """Per subject, kind and channel, the latest event effective at `at_ms`, and every event
        that takes effect after it. Read from the materialised state; subjects whose state lies
        after `at_ms` (a past time asked about, or a decision that takes effect later) are read
        from their history."""
        if not refs:
            return []
        if not self.read_states:
            rows = self.graph.run(LATEST_EVENTS_FOR_SUBJECTS, {"refs": refs, "purpose_id": purpose_id, "at": at_ms})
            return [r["event"] for r in rows]
        states = _prepacked_states(self.graph.run(LATEST_STATES_PREPACKED, {"refs": refs, "purpose_id": purpose_id}))
        if states is None:
            packed = self.graph.run(LATEST_STATES_PACKING, {"refs": refs, "purpose_id": purpose_id,
                                                            "sep": PACK_SEPARATOR})
            states = unpack_states([r["packed"] for r in packed])
        if states is None:
            rows = self.graph.run(LATEST_STATES_FOR_SUBJECTS, {"refs": refs, "purpose_id": purpose_id})
            states = [r["event"] for r in rows]
        later = sorted({s["subject_ref"] for s in states if s["effective_at"] > at_ms})
        if not later:
            return states
        rows = self.graph.run(LATEST_EVENTS_FOR_SUBJECTS, {"refs": later, "purpose_id": purpose_id, "at": at_ms})
        kept = set(later)
        return [s for s in states if s["subject_ref"] not in kept] + [r["event"] for r in rows]

    def states_built(self) -> bool:
        rows = self.graph.run(LEDGER_HEAD, {})
        return bool(rows and rows[0]["states_built"])

    def pack_states(self, page: int = 10_000) -> int:
        """Gives the states written before states carried their packed form that form (once per
        ledger: the head remembers it). Appends may go on meanwhile: they write it themselves."""
        rows = self.graph.run(LEDGER_HEAD, {})
        if not rows or rows[0]["states_packed"]:
            return 0
        packed = 0
        while written := int(self.graph.run(PACK_STATES, {"limit": page, "sep": PACK_SEPARATOR})[0]["packed"]):
            packed += written
        self.graph.run(MARK_STATES_PACKED, {})
        return packed

    def rebuild_states(self, *, fresh: bool, page: int = 10_000, progress: Any = None) -> int:
        """Derives the materialised state from the ledger: replays every event in sequence windows,
        newer winning, then marks the state built. Replaying is monotone, so replicas may do it
        concurrently and appends may go on meanwhile. `fresh` first drops the state (to repair
        states altered outside the ledger): run that only while consent is not serving."""
        if fresh:
            self.graph.run(MARK_STATES_BUILT, {"built": False})
            while int(self.graph.run(DELETE_STATES, {"limit": page})[0]["deleted"]):
                pass
        head = self.ledger_seq()
        for after in range(0, head, page):
            self.upsert_states(states_of(self.events_page(after, after + page)))
            if progress is not None:
                progress(min(after + page, head), head)
        self.graph.run(MARK_STATES_BUILT, {"built": True})
        return head

    def upsert_states(self, states: list[dict[str, Any]]) -> None:
        if states:
            self.graph.run(UPSERT_STATES, {"states": states})

    def latest_person_events(self, person_ids: list[str], purpose_id: str, at_ms: int) -> list[dict[str, Any]]:
        """`latest_events` for the events recorded on these person ids."""
        if not person_ids:
            return []
        rows = self.graph.run(LATEST_EVENTS_FOR_PERSONS, {"person_ids": person_ids, "purpose_id": purpose_id,
                                                          "at": at_ms})
        return [r["event"] for r in rows]

    def events_for_persons(self, person_ids: list[str]) -> list[dict[str, Any]]:
        """The full history recorded on these person ids, in ledger order."""
        if not person_ids:
            return []
        rows = self.graph.run(EVENTS_FOR_PERSONS, {"person_ids": person_ids})
        return [r["event"] for r in rows]

    def events_page(self, after: int, until: int) -> list[dict[str, Any]]:
        """Events with after < seq <= until, in order: callers page by sequence windows, so no
        page sorts more than its own window."""
        return [r["event"] for r in self.graph.run(EVENTS_PAGE, {"after": after, "until": until})]

    def packed_events_page(self, after: int, until: int) -> list[str] | None:
        """`events_page` in the packed form of `ledger.PACKED_FIELDS`; None when the store cannot
        pack some event of the window (a list where a field should be), which callers then read
        with `events_page`."""
        try:
            rows = self.graph.run(PACKED_EVENTS_PAGE, {"after": after, "until": until, "sep": PACK_SEPARATOR})
        except GraphQueryError:
            log.warning("ledger_window_unpackable", statement=PACKED_EVENTS_PAGE.name, sequence=after)
            return None
        return [r["packed"] for r in rows]

    def shred_events(self, refs: list[str]) -> int:
        rows = self.graph.run(SHRED_EVENTS, {"refs": refs}) if refs else []
        return int(rows[0]["shredded"]) if rows else 0

    # privacy requests
    def create_privacy_request(self, request_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        return self.graph.run(CREATE_PRIVACY_REQUEST, {"id": request_id, "fields": fields})[0]["request"]

    def get_privacy_request(self, request_id: str) -> dict[str, Any] | None:
        rows = self.graph.run(GET_PRIVACY_REQUEST, {"id": request_id})
        return rows[0]["request"] if rows else None

    def list_privacy_requests(self, state: str, after_due: int, after_id: str, limit: int) -> list[dict[str, Any]]:
        rows = self.graph.run(LIST_PRIVACY_REQUESTS, {"state": state, "after_due": after_due, "after_id": after_id,
                                                      "limit": limit})
        return [r["request"] for r in rows]

    def update_privacy_request(self, request_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        rows = self.graph.run(UPDATE_PRIVACY_REQUEST, {"id": request_id, "fields": fields})
        return rows[0]["request"] if rows else None


def _tip(value: Any) -> tuple[int, str]:
    if value is None:
        return 0, ""
    seq, _, head_hash = str(value).partition(" ")
    return int(seq), head_hash
