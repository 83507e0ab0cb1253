"""ConsentService servicer: protos in, domain calls, protos out."""

from __future__ import annotations

import re
from typing import Any

import grpc
from google.protobuf import duration_pb2
from tessera.consent.v1 import consent_pb2 as pb
from tessera.consent.v1 import consent_pb2_grpc

from services.common import client_ids, protos
from services.common.auth import current_caller
from services.common.errors import FieldViolation, InvalidArgument, TesseraError
from services.common.interceptors import to_status
from services.common.unimplemented import not_yet
from services.consent.async_checks import AsyncChecks
from services.consent.domain.purposes import Channel, LawfulBasis, Purpose
from services.consent.service import ConsentService, Provenance, Recorded

BASES = {
    pb.LAWFUL_BASIS_CONSENT: LawfulBasis.CONSENT, pb.LAWFUL_BASIS_CONTRACT: LawfulBasis.CONTRACT,
    pb.LAWFUL_BASIS_LEGAL_OBLIGATION: LawfulBasis.LEGAL_OBLIGATION,
    pb.LAWFUL_BASIS_VITAL_INTERESTS: LawfulBasis.VITAL_INTERESTS,
    pb.LAWFUL_BASIS_PUBLIC_TASK: LawfulBasis.PUBLIC_TASK,
    pb.LAWFUL_BASIS_LEGITIMATE_INTERESTS: LawfulBasis.LEGITIMATE_INTERESTS,
}
BASIS_ENUM = {v: k for k, v in BASES.items()}
CHANNELS = {
    pb.CHANNEL_EMAIL: Channel.EMAIL, pb.CHANNEL_SMS: Channel.SMS, pb.CHANNEL_PUSH: Channel.PUSH,
    pb.CHANNEL_PHONE: Channel.PHONE, pb.CHANNEL_POST: Channel.POST, pb.CHANNEL_IN_APP: Channel.IN_APP,
    pb.CHANNEL_PERSONALISATION: Channel.PERSONALISATION,
}
CHANNEL_ENUM = {v.value: k for k, v in CHANNELS.items()}
METHODS = {
    pb.COLLECTION_METHOD_WEB_FORM: "web_form", pb.COLLECTION_METHOD_APP: "app", pb.COLLECTION_METHOD_TILL: "till",
    pb.COLLECTION_METHOD_CALL_CENTRE: "call_centre", pb.COLLECTION_METHOD_IMPORT: "import",
    pb.COLLECTION_METHOD_GLOBAL_PRIVACY_CONTROL: "gpc",
}
METHOD_ENUM = {v: k for k, v in METHODS.items()}
KINDS = {
    pb.DECISION_KIND_GRANT: "grant", pb.DECISION_KIND_DENY: "deny", pb.DECISION_KIND_WITHDRAW: "withdraw",
    pb.DECISION_KIND_OBJECTION: "objection", pb.DECISION_KIND_RESTRICTION: "restriction",
    pb.DECISION_KIND_RESTRICTION_LIFTED: "restriction_lifted",
}
KIND_ENUM = {v: k for k, v in KINDS.items()}
PURPOSE_NAME = re.compile(r"^purposes/([a-z][a-z0-9-]{2,62})$")
MAX_BATCH = 10_000
DAY_SECONDS = 86_400


def purpose_id_of(name: str, field: str = "purpose") -> str:
    m = PURPOSE_NAME.match(name or "")
    if not m:
        raise InvalidArgument.single(field, "must be a purpose name like 'purposes/newsletter-email'")
    return m.group(1)


def channel_of(value: int, field: str = "channel") -> str | None:
    if value == pb.CHANNEL_UNSPECIFIED:
        return None
    if value not in CHANNELS:
        raise InvalidArgument.single(field, "unknown channel")
    return CHANNELS[value].value


def purpose_to_proto(p: Purpose) -> pb.Purpose:
    return pb.Purpose(
        name=f"purposes/{p.purpose_id}", version=p.version, display_name=p.display_name, description=p.description,
        lawful_basis=BASIS_ENUM[p.lawful_basis], data_categories=sorted(p.data_categories),
        channels=sorted(CHANNEL_ENUM[c.value] for c in p.channels),
        retention=duration_pb2.Duration(seconds=p.retention_days * DAY_SECONDS),
        requires_fresh_consent=p.requires_fresh_consent, create_time=protos.timestamp(p.created_at_ms or None))


def provenance_of(p: pb.Provenance) -> Provenance:
    return Provenance(source_system=p.source_system, collection_method=METHODS.get(p.collection_method, ""),
                      notice_version=p.notice_version, notice_sha256=p.notice_sha256.lower(),
                      evidence_ref=p.evidence_ref,
                      decision_at_ms=protos.millis(p.decision_time) if p.HasField("decision_time") else None)


def _collect(violations: list[FieldViolation], parse: Any) -> Any:
    """Runs one field's parser, gathering its violations so all fields are reported together."""
    try:
        return parse()
    except InvalidArgument as exc:
        violations.extend(exc.violations)
        return None


def record_to_proto(rec: Recorded) -> pb.ConsentRecord:
    e = rec.event
    out = pb.ConsentRecord(
        name=f"consentRecords/{e['event_id']}", person=f"persons/{e['person_id']}" if e.get("person_id") else "",
        purpose=f"purposes/{e['purpose_id']}", purpose_version=int(e["purpose_version"]),
        channel=CHANNEL_ENUM.get(e.get("channel") or "", pb.CHANNEL_UNSPECIFIED),
        kind=KIND_ENUM.get(e["kind"], pb.DECISION_KIND_UNSPECIFIED),
        provenance=pb.Provenance(source_system=e["source_system"],
                                 collection_method=METHOD_ENUM.get(e["collection_method"], 0),
                                 notice_version=e["notice_version"], notice_sha256=e["notice_sha256"],
                                 decision_time=protos.timestamp(int(e["effective_at"]))),
        record_time=protos.timestamp(int(e["recorded_at"])), sequence=int(e["seq"]),
        receipt=pb.Receipt(event_id=rec.receipt.event_id, sequence=rec.receipt.seq,
                           event_hash=rec.receipt.event_hash, key_id=rec.receipt.key_id,
                           signature=rec.receipt.signature, sign_time=protos.timestamp(rec.receipt.signed_at_ms)),
    )
    if e.get("expires_at"):
        out.expire_time.CopyFrom(protos.timestamp(int(e["expires_at"])))
    if rec.subject is not None:
        out.subject.CopyFrom(protos.subject_to_proto(rec.subject))
    return out


class ConsentServicer(consent_pb2_grpc.ConsentServiceServicer):
    def __init__(self, service: ConsentService):
        self.service = service
        self.checks = AsyncChecks(service)

    # purposes
    def CreatePurpose(self, request: pb.CreatePurposeRequest, context: grpc.ServicerContext) -> pb.Purpose:
        p = request.purpose
        violations = []
        basis = BASES.get(p.lawful_basis)
        channels = []
        for i, c in enumerate(p.channels):
            if c not in CHANNELS:
                violations.append(FieldViolation(f"purpose.channels[{i}]", "unknown channel"))
            else:
                channels.append(CHANNELS[c].value)
        violations.extend(client_ids.violations(request.request_id, "request_id"))
        if violations:
            raise InvalidArgument(violations)
        days = p.retention.seconds // DAY_SECONDS
        if p.HasField("retention") and p.retention.seconds % DAY_SECONDS:
            raise InvalidArgument.single("purpose.retention", "whole days only")
        created = self.service.create_purpose(request.purpose_id, p.display_name, p.description,
                                              basis.value if basis else None, list(p.data_categories), channels,
                                              days, request.request_id)
        return purpose_to_proto(created)

    def GetPurpose(self, request: pb.GetPurposeRequest, context: grpc.ServicerContext) -> pb.Purpose:
        if request.version < 0:
            raise InvalidArgument.single("version", "must not be negative")
        return purpose_to_proto(self.service.get_purpose(purpose_id_of(request.name, "name"), request.version))

    def ListPurposes(self, request: pb.ListPurposesRequest, context: grpc.ServicerContext
                     ) -> pb.ListPurposesResponse:
        items, token = protos.paginate(request.page_token, request.page_size, protos.fingerprint("ListPurposes"),
                                       self.service.list_purposes, lambda p: p.purpose_id)
        return pb.ListPurposesResponse(purposes=[purpose_to_proto(p) for p in items], next_page_token=token)

    def UpdatePurpose(self, request: pb.UpdatePurposeRequest, context: grpc.ServicerContext) -> pb.Purpose:
        purpose_id = purpose_id_of(request.purpose.name, "purpose.name")
        p = request.purpose
        paths = list(request.update_mask.paths) or ["display_name", "description", "lawful_basis",
                                                    "data_categories", "channels", "retention"]
        changes: dict[str, Any] = {}
        for path in paths:
            if path in ("display_name", "description"):
                changes[path] = getattr(p, path)
            elif path == "lawful_basis":
                changes[path] = BASES[p.lawful_basis].value if p.lawful_basis in BASES else None
            elif path == "data_categories":
                changes[path] = list(p.data_categories)
            elif path == "channels":
                if any(c not in CHANNELS for c in p.channels):
                    raise InvalidArgument.single("purpose.channels", "unknown channel")
                changes[path] = [CHANNELS[c].value for c in p.channels]
            elif path == "retention":
                changes["retention_days"] = p.retention.seconds // DAY_SECONDS
            else:
                raise InvalidArgument.single("update_mask", f"field {path!r} cannot be updated")
        return purpose_to_proto(self.service.update_purpose(purpose_id, changes))

    # decisions
    def _record(self, subject_msg: Any, purpose: str, channel: int, kind: str, prov: pb.Provenance,
                expire: Any, version: int, request_id: str, has_provenance: bool) -> pb.ConsentRecord:
        violations: list[FieldViolation] = []
        subject = _collect(violations, lambda: protos.parse_subject(subject_msg))
        purpose_id = _collect(violations, lambda: purpose_id_of(purpose))
        ch = _collect(violations, lambda: channel_of(channel))
        if not has_provenance:
            violations.append(FieldViolation("provenance", "required"))
        elif prov_violations := provenance_of(prov).violations():
            violations.extend(prov_violations)
        violations.extend(client_ids.violations(request_id, "request_id"))
        if violations:
            raise InvalidArgument(violations)
        rec = self.service.record(subject, purpose_id, ch, kind, provenance_of(prov),
                                  expires_at_ms=expire, purpose_version=version, request_id=request_id)
        if rec.subject is None:
            rec.subject = subject
        return record_to_proto(rec)

    def RecordConsent(self, request: pb.RecordConsentRequest, context: grpc.ServicerContext) -> pb.ConsentRecord:
        kind = KINDS.get(request.kind)
        if kind is None or kind == "withdraw":
            raise InvalidArgument.single("kind", "GRANT, DENY, OBJECTION, RESTRICTION or RESTRICTION_LIFTED "
                                                 "(withdraw with WithdrawConsent)")
        expire = protos.millis(request.expire_time) if request.HasField("expire_time") else None
        return self._record(request.subject, request.purpose, request.channel, kind, request.provenance, expire,
                            request.purpose_version, request.request_id, request.HasField("provenance"))

    def WithdrawConsent(self, request: pb.WithdrawConsentRequest, context: grpc.ServicerContext
                        ) -> pb.ConsentRecord:
        return self._record(request.subject, request.purpose, request.channel, "withdraw", request.provenance, None,
                            0, request.request_id, request.HasField("provenance"))

    @staticmethod
    def _result(decision: Any, person_id: str | None, make: Any = pb.CheckConsentResponse) -> pb.CheckConsentResponse:
        """The answer to one check; `make` is a batch's `results.add`, which fills the answer in
        place (building each and copying it into the batch costs twice as much)."""
        out = make(
            allowed=decision.allowed, reason=decision.reason,
            lawful_basis=BASIS_ENUM.get(decision.lawful_basis, pb.LAWFUL_BASIS_UNSPECIFIED),
            deciding_record=f"consentRecords/{decision.deciding_event_id}" if decision.deciding_event_id else "",
            purpose_version=decision.purpose_version, person=f"persons/{person_id}" if person_id else "")
        if decision.expires_at_ms:
            out.expire_time.FromMilliseconds(int(decision.expires_at_ms))
        return out

    async def CheckConsent(self, request: pb.CheckConsentRequest, context: grpc.aio.ServicerContext
                           ) -> pb.CheckConsentResponse:
        """A coroutine: the hot path, served on the asyncio server's event loop (the others are
        synchronous and run on its thread pool)."""
        subject = protos.parse_subject(request.subject)
        purpose_id = purpose_id_of(request.purpose)
        current_caller().require_purpose(purpose_id)
        at = protos.millis(request.read_time) if request.HasField("read_time") else None
        return self._result(*await self.checks.check(subject, purpose_id, channel_of(request.channel), at))

    async def StreamCheckConsent(self, requests: Any, context: grpc.aio.ServicerContext) -> Any:
        """Each request checked in turn as CheckConsent checks the present, on the event loop. A
        request that cannot be checked is answered with its error; the stream goes on."""
        caller = current_caller()
        async for request in requests:
            violations: list[FieldViolation] = []
            subject = _collect(violations, lambda r=request: protos.parse_subject(r.subject))
            purpose_id = _collect(violations, lambda r=request: purpose_id_of(r.purpose))
            channel = _collect(violations, lambda r=request: channel_of(r.channel))
            try:
                if violations:
                    raise InvalidArgument(violations)
                caller.require_purpose(purpose_id)
                answer = await self.checks.check(subject, purpose_id, channel, None)
            except TesseraError as exc:
                yield pb.StreamCheckConsentResponse(error=to_status(exc))
                continue
            yield pb.StreamCheckConsentResponse(result=self._result(*answer))

    def BatchCheckConsent(self, request: pb.BatchCheckConsentRequest, context: grpc.ServicerContext
                          ) -> pb.BatchCheckConsentResponse:
        if not request.subjects:
            raise InvalidArgument.single("subjects", "name at least one subject")
        if len(request.subjects) > MAX_BATCH:
            raise InvalidArgument.single("subjects", f"at most {MAX_BATCH} subjects")
        purpose_id = purpose_id_of(request.purpose)
        current_caller().require_purpose(purpose_id)
        channel = channel_of(request.channel)
        violations: list[FieldViolation] = []
        subjects = [_collect(violations, lambda s=s, i=i: protos.parse_subject(s, f"subjects[{i}]"))
                    for i, s in enumerate(request.subjects)]
        if violations:
            raise InvalidArgument(violations)
        out = pb.BatchCheckConsentResponse()
        add = out.results.add
        for decision, person_id in self.service.check_many(subjects, purpose_id, channel):
            self._result(decision, person_id, add)
        return out

    def ListConsentRecords(self, request: pb.ListConsentRecordsRequest, context: grpc.ServicerContext
                           ) -> pb.ListConsentRecordsResponse:
        subject = protos.parse_subject(request.subject)
        events, token = protos.paginate(
            request.page_token, request.page_size,
            protos.fingerprint("ListConsentRecords", request.subject.SerializeToString().hex()),
            lambda after, limit: self.service.history(subject, int(after), limit), lambda e: int(e["seq"]),
            default_size=100, first_cursor=0)
        records = [record_to_proto(Recorded(e, self.service.receipt_for(e))) for e in events]
        return pb.ListConsentRecordsResponse(consent_records=records, next_page_token=token)

    def VerifyLedger(self, request: pb.VerifyLedgerRequest, context: grpc.ServicerContext
                     ) -> pb.VerifyLedgerResponse:
        v = self.service.verify()
        return pb.VerifyLedgerResponse(valid=v.valid, checked_events=v.checked,
                                       first_invalid_sequence=v.first_invalid_seq, reason=v.reason,
                                       head_hash=v.head_hash)

    def GetReceiptKey(self, request: pb.GetReceiptKeyRequest, context: grpc.ServicerContext) -> pb.ReceiptKey:
        return pb.ReceiptKey(key_id=self.service.signer.key_id, public_key_pem=self.service.signer.public_key_pem())

    def CreatePrivacyRequest(self, request: pb.CreatePrivacyRequestRequest, context: grpc.ServicerContext
                             ) -> pb.PrivacyRequest:
        raise not_yet("CreatePrivacyRequest", "data-subject request handling is not built yet")

    def GetPrivacyRequest(self, request: pb.GetPrivacyRequestRequest, context: grpc.ServicerContext
                          ) -> pb.PrivacyRequest:
        raise not_yet("GetPrivacyRequest", "data-subject request handling is not built yet")

    def ListPrivacyRequests(self, request: pb.ListPrivacyRequestsRequest, context: grpc.ServicerContext
                            ) -> pb.ListPrivacyRequestsResponse:
        raise not_yet("ListPrivacyRequests", "data-subject request handling is not built yet")

