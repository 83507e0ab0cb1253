"""End to end through real gRPC servers and a real FalkorDB: health, reflection, round trips with
hostile strings, precise errors, store outages, and logs free of personal data."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tessera.identity.v1 import identity_pb2 as ipb
from tessera.identity.v1 import identity_pb2_grpc
from tessera.profile.v1 import profile_pb2 as ppb
from tessera.profile.v1 import profile_pb2_grpc
from tessera.type.v1 import subject_pb2

from services.common.falkordb_server import EmbeddedFalkorDB, free_port
from services.common.runtime import build_runtime
from services.common.server import RunningServer
from tests.conftest import Stack
from tests.helpers import error_details

SERVICES = {
    "identity": "tessera.identity.v1.IdentityService",
    "consent": "tessera.consent.v1.ConsentService",
    "profile": "tessera.profile.v1.ProfileService",
}
TRICKY_NAME = "O'Brien-Müller \"Zoë\" \\ 東京"


def account(source: str, ext: str, **attrs) -> ipb.AccountInput:
    acc = ipb.AccountInput(ref=subject_pb2.AccountRef(source=source, external_id=ext))
    for email in attrs.pop("emails", []):
        acc.identifiers.add(kind=subject_pb2.IDENTIFIER_KIND_EMAIL, value=email)
    for phone in attrs.pop("phones", []):
        acc.identifiers.add(kind=subject_pb2.IDENTIFIER_KIND_PHONE, value=phone)
    for key, value in attrs.items():
        setattr(acc.attributes, key, value)
    return acc


def reflected_services(channel: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    return {s.name for r in responses for s in r.list_services_response.service}


def test_every_service_is_healthy_and_reflects_its_api(stack_factory):
    stack = stack_factory("identity", "consent", "profile")
    for service, full_name in SERVICES.items():
        channel = stack.channel(service)
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", full_name):
            status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        assert full_name in reflected_services(channel)
        assert "grpc.health.v1.Health" in reflected_services(channel)


def test_identity_round_trip_keeps_hostile_strings_intact(stack_factory):
    stack = stack_factory("identity")
    stub = identity_pb2_grpc.IdentityServiceStub(stack.channel("identity"))
    ext = "id-'\"\\-ü-東京"
    long_name = TRICKY_NAME + " " + "Ä" * 20_000
    response = stub.LinkAccount(ipb.LinkAccountRequest(account=account(
        "webshop", ext, given_name=long_name, family_name="Straße", emails=["Quote'O@Example.org"])))
    assert response.created_person
    accounts = stub.ListAccounts(ipb.ListAccountsRequest(parent=response.person.name)).accounts
    assert len(accounts) == 1
    assert accounts[0].ref.external_id == ext
    assert accounts[0].attributes.given_name == long_name
    assert accounts[0].attributes.family_name == "Straße"
    again = stub.LinkAccount(ipb.LinkAccountRequest(account=account("webshop", ext, given_name=long_name)))
    assert again.person.name == response.person.name
    assert not again.created_person


def test_bad_input_gets_invalid_argument_with_field_violations(stack_factory):
    stack = stack_factory("identity")
    stub = identity_pb2_grpc.IdentityServiceStub(stack.channel("identity"))
    bad = ipb.AccountInput(ref=subject_pb2.AccountRef(source="", external_id=""))
    bad.identifiers.add(kind=subject_pb2.IDENTIFIER_KIND_UNSPECIFIED, value="x")
    with pytest.raises(grpc.RpcError) as err:
        stub.LinkAccount(ipb.LinkAccountRequest(account=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, violations = error_details(err.value)
    assert reason == "INVALID_ARGUMENT"
    assert set(violations) == {"account.ref.source", "account.ref.external_id"}
    # A source is kept as it is: no control characters (a NUL would fail the store's statement).
    for source in ("web\x00shop", "web\u0001shop"):
        with pytest.raises(grpc.RpcError) as err:
            stub.LinkAccount(ipb.LinkAccountRequest(account=account(source, "c1", given_name="Anna")))
        assert set(error_details(err.value)[1]) == {"account.ref.source"}
    with pytest.raises(grpc.RpcError) as err:
        stub.GetPerson(ipb.GetPersonRequest(name="people/x"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error_details(err.value)[1]) == {"name"}
    with pytest.raises(grpc.RpcError) as err:
        stub.GetPerson(ipb.GetPersonRequest(name="persons/doesnotexist"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(err.value)[0] == "PERSON_NOT_FOUND"


def test_profile_round_trip_through_identity(stack_factory):
    stack = stack_factory("identity", "profile")
    identity = identity_pb2_grpc.IdentityServiceStub(stack.channel("identity"))
    profile = profile_pb2_grpc.ProfileServiceStub(stack.channel("profile"))
    person = identity.LinkAccount(ipb.LinkAccountRequest(account=account("app", "u1", given_name="Anna"))).person
    traits = struct_pb2.Struct()
    traits.update({"favourite_store": TRICKY_NAME, "clv_band": "gold", "visits": 3})
    result = profile.UpsertTraits(ppb.UpsertTraitsRequest(
        subject=subject_pb2.Subject(account=subject_pb2.AccountRef(source="app", external_id="u1")),
        traits=traits, source="crm"))
    assert result.name == f"{person.name}/traits"
    exported = profile.ExportProfile(ppb.ExportProfileRequest(person=person.name)).data
    assert exported["traits"]["favourite_store"] == TRICKY_NAME
    assert exported["traits"]["visits"] == 3
    with pytest.raises(grpc.RpcError) as err:
        profile.UpsertTraits(ppb.UpsertTraitsRequest(subject=subject_pb2.Subject(person=person.name),
                                                     traits=traits, source=""))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "source" in error_details(err.value)[1]


def test_event_ids_a_store_index_cannot_hold_are_rejected_and_the_store_stays_up(stack_factory):
    """An event id with whitespace at either end or a control character, in FalkorDB's unique
    constraint on behaviour events, crashed the store for every service (services/common/client_ids.py)."""
    from google.protobuf import timestamp_pb2

    stack = stack_factory("identity", "profile")
    identity = identity_pb2_grpc.IdentityServiceStub(stack.channel("identity"))
    profile = profile_pb2_grpc.ProfileServiceStub(stack.channel("profile"))
    identity.LinkAccount(ipb.LinkAccountRequest(account=account("app", "ev1", given_name="Anna")))
    subject = subject_pb2.Subject(account=subject_pb2.AccountRef(source="app", external_id="ev1"))
    at = timestamp_pb2.Timestamp(seconds=1_700_000_000)
    bad = ["trailing ", " leading", "tab\t", "", "ctl\u0001", "x" * 129]
    good = f"ok {TRICKY_NAME}"[:128].strip()
    events = [ppb.BehaviourEvent(event_id=i, type="page_view", subject=subject, event_time=at) for i in [*bad, good]]
    response = profile.RecordEvents(iter([ppb.RecordEventsRequest(events=events)]))
    assert sorted(r.event_id for r in response.rejected) == sorted(bad)
    assert all("event_id" in r.reason for r in response.rejected)
    assert response.accepted_count == 1
    again = profile.RecordEvents(iter([ppb.RecordEventsRequest(events=events[-1:])]))
    assert (again.accepted_count, again.duplicate_count) == (0, 1)  # found again by its id


def test_unimplemented_rpcs_say_so(stack_factory):
    stack = stack_factory("identity", "profile")
    profile = profile_pb2_grpc.ProfileServiceStub(stack.channel("profile"))
    with pytest.raises(grpc.RpcError) as err:
        profile.GetProfile(ppb.GetProfileRequest(subject=subject_pb2.Subject(person="persons/x"),
                                                 purpose="purposes/newsletter-email"))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "not implemented yet" in err.value.details()


def test_stopped_store_gives_unavailable_then_recovers(tmp_path):
    store = EmbeddedFalkorDB(tmp_path / "db", free_port()).start()
    stack = Stack(tmp_path / "home", store.uri, "outage")
    try:
        stack.start("identity")
        channel = stack.channel("identity")
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        person = stub.LinkAccount(ipb.LinkAccountRequest(account=account("web", "a1", given_name="Ida"))).person
        store.stop()
        with pytest.raises(grpc.RpcError) as err:
            stub.GetPerson(ipb.GetPersonRequest(name=person.name), timeout=20)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_details(err.value)[0] == "GRAPH_UNAVAILABLE"
        _wait_for(lambda: health.Check(health_pb2.HealthCheckRequest(service=SERVICES["identity"])).status
                  == health_pb2.HealthCheckResponse.NOT_SERVING)
        store.start()
        assert stub.GetPerson(ipb.GetPersonRequest(name=person.name), timeout=20).name == person.name
        _wait_for(lambda: health.Check(health_pb2.HealthCheckRequest(service=SERVICES["identity"])).status
                  == health_pb2.HealthCheckResponse.SERVING)
    finally:
        stack.stop()
        store.stop()


def test_a_service_started_while_its_store_is_down_refuses_calls_until_its_schema_is_set_up(tmp_path):
    """Its get-or-create statements rely on unique constraints, which the schema gate creates
    once the store answers: until then every call is refused, and none can write. The store has
    never been up when the service is built (both graph clients connect on first use)."""
    from services.common.cli import service_builder

    store = EmbeddedFalkorDB(tmp_path / "db", free_port())
    stack = Stack(tmp_path / "home", store.uri, "late-store")
    try:
        settings = stack.settings("identity")
        runtime = build_runtime("identity", settings, configure_process=False)
        spec = service_builder("identity")(runtime)
        stack.servers["identity"] = RunningServer(spec, settings).start()
        stub = identity_pb2_grpc.IdentityServiceStub(stack.channel("identity"))
        with pytest.raises(grpc.RpcError) as err:
            stub.LinkAccount(ipb.LinkAccountRequest(account=account("web", "early", given_name="Ida")), timeout=20)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_details(err.value)[0] == "SCHEMA_NOT_READY"
        store.start()
        _wait_for(lambda: stack.servers["identity"].spec.schema_ready())
        linked = stub.LinkAccount(ipb.LinkAccountRequest(account=account("web", "early", given_name="Ida")), timeout=20)
        assert linked.person.name.startswith("persons/")
    finally:
        stack.stop()
        store.stop()


def _wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def test_logs_of_requests_carrying_personal_data_contain_none_of_it(stack_factory, log_buffer):
    stack = stack_factory("identity", "profile")
    identity = identity_pb2_grpc.IdentityServiceStub(stack.channel("identity"))
    profile = profile_pb2_grpc.ProfileServiceStub(stack.channel("profile"))
    secrets = {"given": "Wilhelmine", "family": "Quastenflosser", "email": "wilhelmine.q@example.net",
               "phone": "+49 171 9876543", "birth": "1961-07-23", "ext": "kundennr-774411"}
    start = log_buffer.tell()
    response = identity.LinkAccount(ipb.LinkAccountRequest(account=account(
        "webshop", secrets["ext"], given_name=secrets["given"], family_name=secrets["family"],
        birth_date=secrets["birth"], emails=[secrets["email"]], phones=[secrets["phone"]])))
    identity.LookupPerson(ipb.LookupPersonRequest(subject=subject_pb2.Subject(
        identifier=subject_pb2.Identifier(kind=subject_pb2.IDENTIFIER_KIND_EMAIL, value=secrets["email"]))))
    with pytest.raises(grpc.RpcError):
        identity.LinkAccount(ipb.LinkAccountRequest(account=account(
            "", secrets["ext"], given_name=secrets["given"], emails=[secrets["email"]])))
    traits = struct_pb2.Struct()
    traits.update({"nickname": secrets["given"]})
    profile.UpsertTraits(ppb.UpsertTraitsRequest(subject=subject_pb2.Subject(person=response.person.name),
                                                 traits=traits, source="crm"))
    logged = log_buffer.getvalue()[start:]
    assert '"event": "rpc"' in logged, "the requests were not logged at all"
    assert logged.count('"event": "rpc"') >= 4
    for value in [*secrets.values(), "9876543", "wilhelmine", "quastenflosser"]:
        assert value.lower() not in logged.lower()
