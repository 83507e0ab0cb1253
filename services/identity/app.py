"""Wires the identity service: store, domain service, servicer, health."""

from __future__ import annotations

import grpc
from tessera.identity.v1 import identity_pb2_grpc

from services.common import keystore
from services.common.graph.port import SchemaGate
from services.common.runtime import Runtime
from services.common.server import ServiceSpec
from services.identity.api import IdentityServicer
from services.identity.domain.guards import parse_kind_limits
from services.identity.service import IdentityService, Thresholds
from services.identity.store import SCHEMA, IdentityStore

FULL_NAME = "tessera.identity.v1.IdentityService"


def build_identity(runtime: Runtime) -> IdentityService:
    s = runtime.settings.identity
    store = IdentityStore(runtime.graph)
    return IdentityService(
        store, runtime.keys, runtime.blind_index, default_region=s.default_region,
        thresholds=Thresholds(link=s.link_threshold, review=s.review_threshold),
        max_persons_per_identifier=s.max_persons_per_identifier,
        max_accounts_per_identifier=s.max_accounts_per_identifier,
        kind_limits=parse_kind_limits(s.max_identifiers_per_person), candidate_limit=s.candidate_limit,
    )


def build_service(runtime: Runtime) -> ServiceSpec:
    service = build_identity(runtime)
    schema = SchemaGate(runtime.graph, SCHEMA, keystore.SCHEMA)

    def ready() -> None:
        schema.check()
        service.refresh_model()  # picks up a model trained by another replica

    def register(server: grpc.Server) -> None:
        identity_pb2_grpc.add_IdentityServiceServicer_to_server(IdentityServicer(service), server)

    return ServiceSpec(name="identity", full_name=FULL_NAME, register=register,
                       readiness_check=ready, close=runtime.close, schema_ready=lambda: schema.ready)

