"""The profile store's writes on a real graph: traits are updated in place or created once, and a
behavioural event is stored once however often it is sent."""

from __future__ import annotations

import uuid

from services.profile.store import SCHEMA, ProfileStore

AWKWARD = "it's \"quoted\" \\ back\\\\slash ' ü東京 😀 }) DETACH DELETE (n"


def test_traits_are_updated_in_place_or_created_once(graph):
    graph.ensure_schema(SCHEMA)
    store = ProfileStore(graph)
    person = f"{AWKWARD}{uuid.uuid4().hex}"
    store.upsert_traits(person, [{"key": f"{person}/tier", "name": "tier", "value": "silver"}], "crm", 1000)
    store.upsert_traits(person, [{"key": f"{person}/tier", "name": "tier", "value": "gold"},
                                 {"key": f"{person}/store", "name": "store", "value": AWKWARD},
                                 {"key": f"{person}/store", "name": "store", "value": f"{AWKWARD}!"}], "pos", 2000)
    assert store.traits(person) == [
        {"name": "store", "value": f"{AWKWARD}!", "source": "pos", "updated_at": 2000},
        {"name": "tier", "value": "gold", "source": "pos", "updated_at": 2000}]


def test_an_event_is_stored_once(graph):
    graph.ensure_schema(SCHEMA)
    store = ProfileStore(graph)
    person = uuid.uuid4().hex

    def event(n: int) -> dict:
        return {"id": f"{person}-{n}", "person_id": person, "type": "page_view", "at": n, "channel": "web",
                "properties": f"sealed {AWKWARD} {n}"}

    assert store.record_events([event(1), event(2), event(1)], 5000) == (2, 3)
    assert store.record_events([event(2), event(3)], 6000) == (1, 2)
    assert [(e["id"], e["properties"]) for e in store.events(person)] == [
        (f"{person}-{n}", f"sealed {AWKWARD} {n}") for n in (1, 2, 3)]
