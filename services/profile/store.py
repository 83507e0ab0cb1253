"""Profile data in portable Cypher: traits and behavioural events, values encrypted per person."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.common.graph.port import GraphClient, Schema
from services.common.graph.statements import cypher

SCHEMA = Schema(unique=[("Trait", "key"), ("BehaviourEvent", "id")],
                indexes=[("Trait", "person_id"), ("BehaviourEvent", "person_id")])

# Existing traits are updated first, then the missing ones created with their properties inline:
# in FalkorDB a SET that follows a node creation in the same statement costs time in proportion to
# the graph (docs/architecture.md, "Write statements"). Keys are distinct (`ProfileStore`).
UPSERT_TRAITS = cypher(
    "profile.upsert_traits",
    """
    UNWIND $traits AS t
    OPTIONAL MATCH (x:Trait {key: t.key})
    FOREACH (ignored IN CASE WHEN x IS NULL THEN [] ELSE [1] END |
      SET x.value = t.value, x.source = $source, x.updated_at = $now)
    WITH collect(CASE WHEN x IS NULL THEN t END) AS missing
    UNWIND missing AS t
    CREATE (:Trait {key: t.key, person_id: $person_id, name: t.name, value: t.value, source: $source,
                    created_at: $now, updated_at: $now})
    RETURN count(*) AS created
    """,
    write=True,
)

TRAITS = cypher(
    "profile.traits",
    """
    MATCH (x:Trait {person_id: $person_id})
    RETURN x.name AS name, x.value AS value, x.source AS source, x.updated_at AS updated_at
    ORDER BY x.name
    """,
)

# Ids are distinct (`ProfileStore`); an event already stored is left as it is.
RECORD_EVENTS = cypher(
    "profile.record_events",
    """
    UNWIND $events AS e
    OPTIONAL MATCH (x:BehaviourEvent {id: e.id})
    FOREACH (ignored IN CASE WHEN x IS NULL THEN [1] ELSE [] END |
      CREATE (:BehaviourEvent {id: e.id, person_id: e.person_id, type: e.type, at: e.at, channel: e.channel,
                               properties: e.properties, created_at: $now}))
    RETURN sum(CASE WHEN x IS NULL THEN 1 ELSE 0 END) AS accepted
    """,
    write=True,
)

EVENT_SUMMARY = cypher(
    "profile.event_summary",
    """
    MATCH (x:BehaviourEvent {person_id: $person_id})
    RETURN x.type AS type, x.at AS at, x.channel AS channel
    ORDER BY x.at DESC
    LIMIT $limit
    """,
)

EVENTS = cypher(
    "profile.events",
    """
    MATCH (x:BehaviourEvent {person_id: $person_id})
    RETURN x.id AS id, x.type AS type, x.at AS at, x.channel AS channel, x.properties AS properties
    ORDER BY x.at
    """,
)

DELETE_PROFILE = cypher(
    "profile.delete",
    """
    OPTIONAL MATCH (t:Trait {person_id: $person_id})
    WITH collect(t) AS traits
    OPTIONAL MATCH (e:BehaviourEvent {person_id: $person_id})
    WITH traits, collect(e) AS events
    FOREACH (x IN traits | DELETE x)
    FOREACH (x IN events | DELETE x)
    RETURN size(traits) AS traits, size(events) AS events
    """,
    write=True,
)

REASSIGN = cypher(
    "profile.reassign",
    """
    UNWIND $from_ids AS old_id
    MATCH (e:BehaviourEvent {person_id: old_id})
    SET e.person_id = $to_id
    RETURN count(e) AS moved
    """,
    write=True,
)


@dataclass
class ProfileStore:
    graph: GraphClient

    def upsert_traits(self, person_id: str, traits: list[dict[str, Any]], source: str, now: int) -> None:
        """A key given twice keeps its last value."""
        distinct = list({t["key"]: t for t in traits}.values())
        if distinct:
            self.graph.run(UPSERT_TRAITS, {"person_id": person_id, "traits": distinct, "source": source, "now": now})

    def traits(self, person_id: str) -> list[dict[str, Any]]:
        return self.graph.run(TRAITS, {"person_id": person_id})

    def record_events(self, events: list[dict[str, Any]], now: int) -> tuple[int, int]:
        """(events stored now, events seen): an id already stored, or repeated in `events`, is a
        duplicate and changes nothing."""
        if not events:
            return 0, 0
        distinct = list({e["id"]: e for e in reversed(events)}.values())  # the first of each id
        row = self.graph.run(RECORD_EVENTS, {"events": distinct, "now": now})[0]
        return int(row["accepted"] or 0), len(events)

    def recent_events(self, person_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        return self.graph.run(EVENT_SUMMARY, {"person_id": person_id, "limit": limit})

    def events(self, person_id: str) -> list[dict[str, Any]]:
        return self.graph.run(EVENTS, {"person_id": person_id})

    def delete(self, person_id: str) -> dict[str, Any]:
        return self.graph.run(DELETE_PROFILE, {"person_id": person_id})[0]

    def reassign_events(self, from_ids: list[str], to_id: str) -> None:
        self.graph.run(REASSIGN, {"from_ids": from_ids, "to_id": to_id})
