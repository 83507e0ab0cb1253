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
from services.common.errors import InvalidArgument, NotFound
from services.common.protos import SubjectRef
from services.consent.service import Scope
from services.identity.domain.normalize import normalize_identifier

ASSURANCE = {ipb.LINK_METHOD_NEW_PERSON: "deterministic", ipb.LINK_METHOD_DETERMINISTIC: "deterministic",
             ipb.LINK_METHOD_PROBABILISTIC: "probabilistic", ipb.LINK_METHOD_MANUAL: "manual"}
REFERENCE_PREFIX = {ipb.LinkedReference.KIND_ACCOUNT: "account:", ipb.LinkedReference.KIND_IDENTIFIER: "identifier:"}
BATCH = 1000  # subjects per BatchResolveSubjects call (identity's limit)
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
        found = self.scopes([subject])[0]
        if found is None:
            raise NotFound(f"person {subject.person_id!r} not found", reason="PERSON_NOT_FOUND",
                           metadata={"person": f"persons/{subject.person_id}"})
        return found

    def scopes(self, subjects: list[SubjectRef]) -> list[Scope | None]:
        """One identity round trip per thousand subjects. A person subject identity does not know
        is None (an unknown subject); an account or identifier that is not linked (yet), or an
        identifier several persons share, stands alone."""
        out: list[Scope | None] = []
        for start in range(0, len(subjects), BATCH):
            chunk = subjects[start:start + BATCH]
            targets = [self.target(s) for s in chunk]  # validates identifiers before identity sees them
            request = ipb.BatchResolveSubjectsRequest(subjects=[protos.subject_to_proto(s) for s in chunk])
            response = self._call(self.stub.BatchResolveSubjects, request)
            for subject, target, resolution in zip(chunk, targets, response.resolutions, strict=True):
                out.append(self._scope_of(subject, target, resolution))
        return out

    def target(self, subject: SubjectRef) -> str:
        """The ref a decision about `subject` is recorded on; no identity call."""
        if subject.person_id:
            return f"person:{subject.person_id}"
        if subject.account:
            return f"account:{self.blind.account_token(*subject.account)}"
        assert subject.identifier
        return self.identifier_ref(*subject.identifier)

    def _scope_of(self, subject: SubjectRef, target: str, resolution: ipb.SubjectResolution) -> Scope | None:
        if resolution.state != ipb.SubjectResolution.STATE_RESOLVED:
            if subject.person_id:
                return None
            return Scope(target=target, refs={target: "deterministic"}, person_ids=(), person_id=None)
        person = resolution.person
        person_id = person.name.removeprefix("persons/")
        ids = (person_id, *(p.removeprefix("persons/") for p in person.merged_persons))
        refs: dict[str, str] = {f"person:{pid}": "deterministic" for pid in ids}
        for ref in resolution.references:  # per reference the strongest link that holds it
            prefix = REFERENCE_PREFIX.get(ref.kind)
            if prefix:
                key = prefix + ref.token
                level = ASSURANCE.get(ref.link_method, "unknown")
                held = refs.get(key)
                if held is None or STRENGTH[level] >= STRENGTH[held]:
                    refs[key] = level
        refs.setdefault(target, "deterministic")
        return Scope(target=target, refs=refs, person_ids=ids, person_id=person_id)


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
