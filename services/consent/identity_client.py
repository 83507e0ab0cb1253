"""Resolves consent subjects through the identity service into a Scope: the subject's own ref and
every ref of its person (accounts, identifiers, person ids) with the assurance of its link."""

from __future__ import annotations

import time
from typing import Any

import grpc
import structlog
from tessera.identity.v1 import identity_pb2 as ipb
from tessera.identity.v1 import identity_pb2_grpc

from services.common import clients, protos
from services.common.crypto import BlindIndex
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.protos import SubjectRef
from services.consent.service import Scope
from services.identity.domain.normalize import normalize_identifier

ASSURANCE = {ipb.LINK_METHOD_NEW_PERSON: "deterministic", ipb.LINK_METHOD_DETERMINISTIC: "deterministic",
             ipb.LINK_METHOD_PROBABILISTIC: "probabilistic", ipb.LINK_METHOD_MANUAL: "manual"}
STRENGTH = {"manual": 3, "deterministic": 2, "verified": 2, "probabilistic": 1, "unknown": 0}
log = structlog.get_logger("tessera.consent")


class IdentityScopes:
    def __init__(self, stub: identity_pb2_grpc.IdentityServiceStub, blind: BlindIndex, *, timeout: float,
                 default_region: str):
        self.stub = stub
        self.blind = blind
        self.timeout = timeout
        self.default_region = default_region

    def _call(self, method: Any, request: Any) -> Any:
        return clients.call(method, request, timeout=self.timeout, caller="tessera-consent", what="identity service")

    def identifier_ref(self, kind: str, value: str) -> str:
        try:
            normalised = normalize_identifier(kind, value, self.default_region)
        except ValueError as exc:
            raise InvalidArgument.single("subject.identifier.value", str(exc)) from exc
        return f"identifier:{self.blind.token(kind, normalised)}"

    def scope(self, subject: SubjectRef) -> Scope:
        if subject.person_id:
            person = self._call(self.stub.GetPerson, ipb.GetPersonRequest(name=f"persons/{subject.person_id}"))
            return self._person_scope(person, f"person:{subject.person_id}")
        if subject.account:
            target = f"account:{self.blind.account_token(*subject.account)}"
        else:
            assert subject.identifier
            target = self.identifier_ref(*subject.identifier)
        try:
            request = ipb.LookupPersonRequest(subject=protos.subject_to_proto(subject))
            person = self._call(self.stub.LookupPerson, request)
        except (NotFound, FailedPrecondition):
            # Not linked (yet), or an identifier shared by several persons: the subject stands alone.
            return Scope(target=target, refs={target: "deterministic"}, person_ids=(), person_id=None)
        return self._person_scope(person, target)

    def _person_scope(self, person: ipb.Person, target: str) -> Scope:
        person_id = person.name.removeprefix("persons/")
        ids = (person_id, *(p.removeprefix("persons/") for p in person.merged_persons))
        refs: dict[str, str] = {f"person:{pid}": "deterministic" for pid in ids}
        token = ""
        while True:
            page = self._call(self.stub.ListAccounts, ipb.ListAccountsRequest(parent=person.name, page_size=1000,
                                                                            page_token=token))
            for acc in page.accounts:
                level = ASSURANCE.get(acc.link_method, "unknown")
                _merge(refs, f"account:{self.blind.account_token(acc.ref.source, acc.ref.external_id)}", level)
                for ident in acc.identifiers:
                    kind = protos.IDENTIFIER_KINDS.get(ident.kind)
                    if kind:
                        _merge(refs, f"identifier:{self.blind.token(kind, ident.value)}", level)
            token = page.next_page_token
            if not token:
                break
        refs.setdefault(target, "deterministic")
        return Scope(target=target, refs=refs, person_ids=ids, person_id=person_id)


def _merge(refs: dict[str, str], ref: str, level: str) -> None:
    if STRENGTH.get(level, 0) >= STRENGTH.get(refs.get(ref, "unknown"), 0):
        refs[ref] = level


def follow_person_changes(stub: identity_pb2_grpc.IdentityServiceStub, on_change: Any, stop: Any) -> None:
    """Invalidates cached scopes as identity merges, splits and erases persons. Reconnects after
    errors, resuming after the last change seen; runs until `stop` is set."""
    after = 0
    while not stop.is_set():
        try:
            stream = stub.WatchPersonChanges(ipb.WatchPersonChangesRequest(after_sequence=after),
                                             metadata=[("x-tessera-caller", "tessera-consent")])
            for change in stream:
                after = change.sequence
                on_change({change.person.removeprefix("persons/"),
                           *(p.removeprefix("persons/") for p in change.related_persons)})
                if stop.is_set():
                    stream.cancel()
                    return
        except grpc.RpcError as exc:
            if stop.is_set():
                return
            log.warning("person_changes_reconnect", grpc_code=exc.code().name)
            time.sleep(1.0)
