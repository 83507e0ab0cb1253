"""Wires the consent service: store, identity client, receipt signer, catalogue, servicer."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
from tessera.consent.v1 import consent_pb2_grpc
from tessera.identity.v1 import identity_pb2_grpc

from services.common import clients, keystore
from services.common.graph.port import SchemaGate
from services.common.runtime import Runtime
from services.common.server import ServiceSpec
from services.consent.api import ConsentServicer
from services.consent.domain.purposes import DEFAULT_CATALOGUE, load_catalogue
from services.consent.domain.receipts import ReceiptSigner
from services.consent.identity_client import IdentityScopes, follow_person_changes
from services.consent.service import ConsentService
from services.consent.store import SCHEMA, ConsentStore

FULL_NAME = "tessera.consent.v1.ConsentService"


def build_consent(runtime: Runtime) -> tuple[ConsentService, identity_pb2_grpc.IdentityServiceStub]:
    settings = runtime.settings
    signing_key = Path(settings.crypto.signing_key_file or settings.home_path / "keys" / "receipt-signing.pem")
    stub = identity_pb2_grpc.IdentityServiceStub(clients.channel(settings.clients.identity_addr, settings))
    scopes = IdentityScopes(stub, runtime.blind_index, timeout=settings.clients.timeout_seconds,
                            default_region=settings.identity.default_region)
    propagation = frozenset(p.strip() for p in settings.consent.grant_propagation.split(",") if p.strip())
    service = ConsentService(ConsentStore(runtime.graph), runtime.keys, runtime.blind_index,
                             ReceiptSigner.load_or_create(signing_key), scopes, propagation=propagation)
    return service, stub


def build_service(runtime: Runtime) -> ServiceSpec:
    service, identity_stub = build_consent(runtime)
    stop = threading.Event()
    watcher = threading.Thread(target=follow_person_changes, name="person-changes", daemon=True,
                               args=(identity_stub, service.cache.forget_persons, stop))
    watcher.start()

    def close() -> None:
        stop.set()
        runtime.close()
    catalogue = load_catalogue(Path(runtime.settings.consent.catalogue_file or DEFAULT_CATALOGUE))

    class _Gate(SchemaGate):
        """Schema first, then the catalogue's purposes that are not registered yet and the
        materialised consent state."""

        installed = False

        def check(self) -> None:
            super().check()
            if not self.installed:
                service.install_catalogue(catalogue)
                service.prepare_states()
                self.installed = True

    gate = _Gate(runtime.graph, SCHEMA, keystore.SCHEMA)

    def register(server: grpc.Server) -> None:
        consent_pb2_grpc.add_ConsentServiceServicer_to_server(ConsentServicer(service), server)

    return ServiceSpec(name="consent", full_name=FULL_NAME, register=register, readiness_check=gate.check,
                       schema_ready=lambda: gate.ready, close=close, asyncio=True,
                       close_on_loop=runtime.graph.close_async)
