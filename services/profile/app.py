"""Wires the profile service: store, identity client, domain service, servicer."""

from __future__ import annotations

import grpc
from tessera.identity.v1 import identity_pb2, identity_pb2_grpc
from tessera.profile.v1 import profile_pb2_grpc

from services.common import clients, keystore, protos
from services.common.graph.port import SchemaGate
from services.common.runtime import Runtime
from services.common.server import ServiceSpec
from services.profile.api import ProfileServicer
from services.profile.service import ProfileService, ResolvedPerson
from services.profile.store import SCHEMA, ProfileStore

FULL_NAME = "tessera.profile.v1.ProfileService"


def identity_resolver(runtime: Runtime):
    stub = identity_pb2_grpc.IdentityServiceStub(clients.channel(runtime.settings.clients.identity_addr,
                                                                 runtime.settings))
    timeout = runtime.settings.clients.timeout_seconds

    def resolve(subject: protos.SubjectRef) -> ResolvedPerson:
        request = identity_pb2.LookupPersonRequest(subject=protos.subject_to_proto(subject))
        person = clients.call(stub.LookupPerson, request, timeout=timeout, caller="tessera-profile",
                              what="identity service")
        return ResolvedPerson(person.name.removeprefix("persons/"),
                              tuple(p.removeprefix("persons/") for p in person.merged_persons))

    return resolve


def build_service(runtime: Runtime) -> ServiceSpec:
    service = ProfileService(ProfileStore(runtime.graph), runtime.keys, identity_resolver(runtime))
    gate = SchemaGate(runtime.graph, SCHEMA, keystore.SCHEMA)

    def register(server: grpc.Server) -> None:
        profile_pb2_grpc.add_ProfileServiceServicer_to_server(ProfileServicer(service), server)

    return ServiceSpec(name="profile", full_name=FULL_NAME, register=register, readiness_check=gate.check,
                       schema_ready=lambda: gate.ready, close=runtime.close)
