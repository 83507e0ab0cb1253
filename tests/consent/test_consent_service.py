"""Consent through real gRPC servers (identity + consent, two consent replicas) on a real FalkorDB."""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import time

import grpc
import pytest
from google.protobuf import timestamp_pb2
from tessera.consent.v1 import consent_pb2 as cpb
from tessera.consent.v1 import consent_pb2_grpc
from tessera.identity.v1 import identity_pb2 as ipb
from tessera.identity.v1 import identity_pb2_grpc
from tessera.type.v1 import subject_pb2

from services.common import protos
from services.common.graph.statements import Statement
from services.consent.app import build_consent
from services.consent.async_checks import AsyncChecks
from services.consent.domain.receipts import Receipt, verify_receipt
from services.consent.service import CHECK_CHUNK
from tests.conftest import Stack
from tests.helpers import error_details, status_details

NOTICE = "Wir senden Ihnen unseren Newsletter. Widerruf jederzeit möglich."
PROV = cpb.Provenance(source_system="webshop", collection_method=cpb.COLLECTION_METHOD_WEB_FORM,
                      notice_version="2026-01", notice_sha256=hashlib.sha256(NOTICE.encode()).hexdigest(),
                      evidence_ref="form-4711")
NEWS = "purposes/newsletter-email"


def acct(source: str, ext: str) -> subject_pb2.Subject:
    return subject_pb2.Subject(account=subject_pb2.AccountRef(source=source, external_id=ext))


@pytest.fixture
def stack(stack_factory) -> Stack:
    return stack_factory("identity", "consent")


@pytest.fixture
def identity(stack):
    return identity_pb2_grpc.IdentityServiceStub(stack.channel("identity"))


@pytest.fixture
def consent(stack):
    return consent_pb2_grpc.ConsentServiceStub(stack.channel("consent"))


def link(identity, source, ext, email=None, given="Anna", birth="1990-01-01"):
    acc = ipb.AccountInput(ref=subject_pb2.AccountRef(source=source, external_id=ext))
    acc.attributes.given_name = given
    acc.attributes.birth_date = birth
    if email:
        acc.identifiers.add(kind=subject_pb2.IDENTIFIER_KIND_EMAIL, value=email)
    return identity.LinkAccount(ipb.LinkAccountRequest(account=acc))


def grant(consent, subject, purpose=NEWS, channel=cpb.CHANNEL_UNSPECIFIED, **kw):
    return consent.RecordConsent(cpb.RecordConsentRequest(subject=subject, purpose=purpose, channel=channel,
                                                          kind=cpb.DECISION_KIND_GRANT, provenance=PROV, **kw))


def check(consent, subject, purpose=NEWS, channel=cpb.CHANNEL_UNSPECIFIED):
    return consent.CheckConsent(cpb.CheckConsentRequest(subject=subject, purpose=purpose, channel=channel))


def test_default_catalogue_is_installed(consent):
    names = {p.name for p in consent.ListPurposes(cpb.ListPurposesRequest(page_size=100)).purposes}
    assert {NEWS, "purposes/order-fulfilment", "purposes/tax-records"} <= names


def test_grant_then_withdraw_is_visible_at_once_on_another_replica(stack, identity, consent):
    link(identity, "webshop", "A1", "anna@example.org")
    replica = Stack(stack.home, stack.graph_uri, stack.graph_name)
    replica.ports["identity"] = stack.ports["identity"]
    replica.start("consent")
    try:
        other = consent_pb2_grpc.ConsentServiceStub(replica.channel("consent"))
        assert not check(other, acct("webshop", "A1")).allowed
        record = grant(consent, acct("webshop", "A1"))
        result = check(other, acct("webshop", "A1"), channel=cpb.CHANNEL_EMAIL)
        assert result.allowed
        assert result.deciding_record == record.name
        consent.WithdrawConsent(cpb.WithdrawConsentRequest(subject=acct("webshop", "A1"), purpose=NEWS,
                                                           provenance=PROV))
        denied = check(other, acct("webshop", "A1"), channel=cpb.CHANNEL_EMAIL)
        assert (denied.allowed, denied.reason) == (False, "withdrawn")
    finally:
        replica.stop()


def test_check_by_identifier_and_person_and_unknown_subjects(identity, consent):
    person = link(identity, "newsletter", "N1", "Carla.X@Example.org").person
    grant(consent, acct("newsletter", "N1"))
    by_email = subject_pb2.Subject(identifier=subject_pb2.Identifier(kind=subject_pb2.IDENTIFIER_KIND_EMAIL,
                                                                     value="carla.x@example.org"))
    assert check(consent, by_email).allowed
    assert check(consent, subject_pb2.Subject(person=person.name)).allowed
    unknown = check(consent, acct("webshop", "nobody"))
    assert (unknown.allowed, unknown.reason) == (False, "no_consent_recorded")
    missing_purpose = check(consent, acct("newsletter", "N1"), purpose="purposes/no-such-purpose")
    assert (missing_purpose.allowed, missing_purpose.reason) == (False, "unknown_purpose")


def test_lawful_basis_other_than_consent(identity, consent):
    link(identity, "webshop", "C1")
    result = check(consent, acct("webshop", "C1"), purpose="purposes/order-fulfilment")
    assert (result.allowed, result.reason, result.lawful_basis) == (True, "lawful_basis:contract",
                                                                    cpb.LAWFUL_BASIS_CONTRACT)
    consent.RecordConsent(cpb.RecordConsentRequest(subject=acct("webshop", "C1"), purpose="purposes/fraud-prevention",
                                                   kind=cpb.DECISION_KIND_OBJECTION, provenance=PROV))
    assert check(consent, acct("webshop", "C1"), purpose="purposes/fraud-prevention").reason == "objection"


def test_expiry(identity, consent):
    link(identity, "app", "E1")
    soon = timestamp_pb2.Timestamp()
    soon.GetCurrentTime()
    soon.seconds += 3600
    grant(consent, acct("app", "E1"), expire_time=soon)
    result = check(consent, acct("app", "E1"))
    assert result.allowed
    assert result.expire_time.seconds == soon.seconds
    later = cpb.CheckConsentRequest(subject=acct("app", "E1"), purpose=NEWS,
                                    read_time=timestamp_pb2.Timestamp(seconds=soon.seconds + 1))
    assert consent.CheckConsent(later).reason == "expired"


def test_merge_spreads_a_withdrawal_and_split_gives_each_part_its_own(identity, consent):
    a = link(identity, "webshop", "M1", given="Berta").person
    b = link(identity, "loyalty", "M2", given="Berta").person
    assert a.name != b.name
    grant(consent, acct("webshop", "M1"))
    consent.WithdrawConsent(cpb.WithdrawConsentRequest(subject=acct("loyalty", "M2"), purpose=NEWS, provenance=PROV))
    assert check(consent, acct("webshop", "M1")).allowed
    merged = identity.MergePersons(ipb.MergePersonsRequest(names=[a.name, b.name], reason="same customer"))
    # Cached scopes follow identity's change stream: the merge reaches the check within moments.
    _eventually(lambda: check(consent, acct("webshop", "M1")).reason == "withdrawn")
    identity.SplitPerson(ipb.SplitPersonRequest(name=merged.name, accounts=[subject_pb2.AccountRef(
        source="loyalty", external_id="M2")], reason="not the same"))
    _eventually(lambda: check(consent, acct("webshop", "M1")).allowed)
    assert check(consent, acct("loyalty", "M2")).reason == "withdrawn"


def _eventually(condition, timeout: float = 3.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_an_account_checked_before_identity_knew_it_sees_its_person_once_linked(identity, consent):
    link(identity, "webshop", "U1", email="uta@example.org")
    grant(consent, acct("app", "U7"))  # identity does not know the app account yet
    assert check(consent, acct("app", "U7")).allowed
    link(identity, "app", "U7", email="uta@example.org")  # now one person with U1; no change is announced
    consent.WithdrawConsent(cpb.WithdrawConsentRequest(subject=acct("webshop", "U1"), purpose=NEWS, provenance=PROV))
    after = check(consent, acct("app", "U7"))
    assert (after.allowed, after.reason) == (False, "withdrawn")


def test_receipts_verify_with_the_published_key(identity, consent):
    link(identity, "webshop", "R1")
    record = grant(consent, acct("webshop", "R1"))
    key = consent.GetReceiptKey(cpb.GetReceiptKeyRequest())
    r = record.receipt
    receipt = Receipt(r.event_id, r.sequence, r.event_hash, r.sign_time.ToMilliseconds(), r.key_id, r.signature)
    assert verify_receipt(receipt, key.public_key_pem)
    assert not verify_receipt(Receipt(r.event_id, r.sequence + 1, r.event_hash, r.sign_time.ToMilliseconds(),
                                      r.key_id, r.signature), key.public_key_pem)


def test_idempotent_on_request_id(identity, consent):
    link(identity, "webshop", "I1")
    first = grant(consent, acct("webshop", "I1"), request_id="req-1")
    again = grant(consent, acct("webshop", "I1"), request_id="req-1")
    assert first.name == again.name
    assert first.sequence == again.sequence
    assert consent.VerifyLedger(cpb.VerifyLedgerRequest()).checked_events == 1
    # The same request id for another subject or channel is another decision: refused, not dropped.
    link(identity, "webshop", "I2")
    others = ((acct("webshop", "I2"), cpb.CHANNEL_UNSPECIFIED), (acct("webshop", "I1"), cpb.CHANNEL_EMAIL))
    for subject, channel in others:
        with pytest.raises(grpc.RpcError) as err:
            grant(consent, subject, channel=channel, request_id="req-1")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_details(err.value)[0] == "REQUEST_ID_REUSED"
    assert consent.VerifyLedger(cpb.VerifyLedgerRequest()).checked_events == 1


def test_request_ids_a_store_index_cannot_find_are_refused_and_nothing_stored(identity, consent):
    """FalkorDB's index finds no value that starts or ends with whitespace or holds U+0001: such
    a request id would record every retry again. Ids with inner spaces and any other text are
    fine, and their retries replay."""
    link(identity, "webshop", "R1")
    for bad in (" req", "req ", "req\t", "re\u0001q", "re\nq", "r" * 129):
        with pytest.raises(grpc.RpcError) as err:
            grant(consent, acct("webshop", "R1"), request_id=bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(error_details(err.value)[1]) == {"request_id"}
        with pytest.raises(grpc.RpcError) as err:
            consent.WithdrawConsent(cpb.WithdrawConsentRequest(subject=acct("webshop", "R1"), purpose=NEWS,
                                                               provenance=PROV, request_id=bad))
        assert set(error_details(err.value)[1]) == {"request_id"}
        with pytest.raises(grpc.RpcError) as err:
            consent.CreatePurpose(cpb.CreatePurposeRequest(purpose_id="bad-request-id", request_id=bad,
                                                           purpose=cpb.Purpose(display_name="x")))
        assert set(error_details(err.value)[1]) == {"request_id"}
    assert consent.VerifyLedger(cpb.VerifyLedgerRequest()).checked_events == 0
    with pytest.raises(grpc.RpcError) as err:
        consent.GetPurpose(cpb.GetPurposeRequest(name="purposes/bad-request-id"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    for good in ("Anfrage 1 – Ümlaut \"quoted\" \\ 😀", "r" * 128):
        first = grant(consent, acct("webshop", "R1"), request_id=good)
        assert grant(consent, acct("webshop", "R1"), request_id=good).sequence == first.sequence
    assert consent.VerifyLedger(cpb.VerifyLedgerRequest()).checked_events == 2


def test_a_decision_time_ahead_of_the_clock_is_refused_or_takes_effect_when_recorded(identity, consent):
    import time

    link(identity, "webshop", "T1")
    grant(consent, acct("webshop", "T1"))
    ahead = cpb.Provenance()
    ahead.CopyFrom(PROV)
    ahead.decision_time.FromMilliseconds(int(time.time() * 1000) + 3_600_000)
    with pytest.raises(grpc.RpcError) as err:
        consent.WithdrawConsent(cpb.WithdrawConsentRequest(subject=acct("webshop", "T1"), purpose=NEWS,
                                                           provenance=ahead))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error_details(err.value)[1]) == {"provenance.decision_time"}
    # A till's clock a minute fast: accepted, and in force at once.
    ahead.decision_time.FromMilliseconds(int(time.time() * 1000) + 60_000)
    consent.WithdrawConsent(cpb.WithdrawConsentRequest(subject=acct("webshop", "T1"), purpose=NEWS,
                                                       provenance=ahead))
    assert check(consent, acct("webshop", "T1")).reason == "withdrawn"


def test_bad_input_is_rejected_with_field_violations_and_nothing_stored(identity, consent):
    link(identity, "webshop", "B1")
    cases = [
        (cpb.RecordConsentRequest(subject=acct("webshop", "B1"), purpose="purposes/no-such", provenance=PROV,
                                  kind=cpb.DECISION_KIND_GRANT), {"purpose"}),
        (cpb.RecordConsentRequest(subject=acct("webshop", "B1"), purpose=NEWS, channel=cpb.CHANNEL_PUSH,
                                  provenance=PROV, kind=cpb.DECISION_KIND_GRANT), {"channel"}),
        (cpb.RecordConsentRequest(subject=acct("webshop", "B1"), purpose=NEWS, kind=cpb.DECISION_KIND_GRANT),
         {"provenance"}),
        (cpb.RecordConsentRequest(subject=acct("", ""), purpose="bad", channel=99, kind=cpb.DECISION_KIND_GRANT,
                                  provenance=cpb.Provenance(source_system="x")),
         {"subject.account.source", "subject.account.external_id", "purpose", "channel",
          "provenance.collection_method", "provenance.notice_version", "provenance.notice_sha256"}),
    ]
    nul = cpb.Provenance()
    nul.CopyFrom(PROV)
    nul.source_system, nul.evidence_ref = "till\x00 7", "form\x00"
    cases.append((cpb.RecordConsentRequest(subject=acct("webshop", "B1"), purpose=NEWS, provenance=nul,
                                           kind=cpb.DECISION_KIND_GRANT),
                  {"provenance.source_system", "provenance.evidence_ref"}))
    for request, fields in cases:
        with pytest.raises(grpc.RpcError) as err:
            consent.RecordConsent(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(error_details(err.value)[1]) == fields
    assert consent.VerifyLedger(cpb.VerifyLedgerRequest()).checked_events == 0
    # Any other text holding U+0000, which FalkorDB cannot keep, is bad input too, not an internal error.
    with pytest.raises(grpc.RpcError) as err:
        consent.CreatePurpose(cpb.CreatePurposeRequest(purpose_id="nul-name",
                                                       purpose=cpb.Purpose(display_name="a\x00b")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        consent.GetPurpose(cpb.GetPurposeRequest(name="purposes/nul-name"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_history_spans_all_accounts_of_the_person(identity, consent):
    link(identity, "webshop", "H1", "hanna@example.org")
    link(identity, "app", "H2", "hanna@example.org")
    grant(consent, acct("webshop", "H1"))
    consent.WithdrawConsent(cpb.WithdrawConsentRequest(subject=acct("app", "H2"), purpose=NEWS, provenance=PROV))
    page1 = consent.ListConsentRecords(cpb.ListConsentRecordsRequest(subject=acct("webshop", "H1"), page_size=1))
    page2 = consent.ListConsentRecords(cpb.ListConsentRecordsRequest(subject=acct("webshop", "H1"), page_size=1,
                                                                     page_token=page1.next_page_token))
    kinds = [r.kind for r in [*page1.consent_records, *page2.consent_records]]
    assert kinds == [cpb.DECISION_KIND_GRANT, cpb.DECISION_KIND_WITHDRAW]
    assert page1.consent_records[0].provenance.notice_sha256 == PROV.notice_sha256
    assert not page2.next_page_token


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "retype", "list"])
def test_tampered_ledger_is_detected(stack, identity, consent, tamper):
    link(identity, "webshop", "T1")
    for _ in range(3):
        grant(consent, acct("webshop", "T1"))
    assert consent.VerifyLedger(cpb.VerifyLedgerRequest()).valid
    graph = stack.runtimes["consent"].graph
    statements = {
        "edit": "MATCH (e:ConsentEvent {seq: 2}) SET e.kind = 'deny' RETURN e.seq AS seq",
        "delete": "MATCH (e:ConsentEvent {seq: 2}) DELETE e RETURN 1 AS done",
        "reorder": "MATCH (a:ConsentEvent {seq: 1}) SET a.seq = -1 WITH a "
                   "MATCH (b:ConsentEvent {seq: 2}) SET b.seq = 1 WITH a SET a.seq = 2 RETURN 1 AS done",
        # Same text, other type: verification reads a packed form, which must not paper over these.
        "retype": "MATCH (e:ConsentEvent {seq: 2}) SET e.purpose_version = toString(e.purpose_version) "
                  "RETURN 1 AS done",
        "list": "MATCH (e:ConsentEvent {seq: 2}) SET e.kind = [e.kind] RETURN 1 AS done",
    }
    graph.run(Statement(f"test.tamper_{tamper}", statements[tamper], write=True), {})
    result = consent.VerifyLedger(cpb.VerifyLedgerRequest())
    assert not result.valid
    assert result.first_invalid_sequence in (1, 2)
    assert result.reason


def test_callers_may_only_check_the_purposes_their_policy_names(tmp_path, graph_uri, graph_name):
    policy = tmp_path / "policy.yaml"
    policy.write_text("callers:\n  crm-mailer:\n    purposes: [newsletter-email]\n"
                      "  tessera-consent: {purposes: []}\n  tessera-profile: {purposes: []}\n")
    stack = Stack(tmp_path / "home", graph_uri, graph_name, auth={"policy_file": str(policy)})
    try:
        stack.start("identity")
        stack.start("consent")
        consent = consent_pb2_grpc.ConsentServiceStub(stack.channel("consent"))
        allowed = [("x-tessera-caller", "crm-mailer")]
        result = consent.CheckConsent(cpb.CheckConsentRequest(subject=acct("webshop", "P1"), purpose=NEWS),
                                      metadata=allowed)
        assert result.reason == "no_consent_recorded"
        with pytest.raises(grpc.RpcError) as err:
            consent.CheckConsent(cpb.CheckConsentRequest(subject=acct("webshop", "P1"),
                                                         purpose="purposes/sms-marketing"), metadata=allowed)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_details(err.value)[0] == "PURPOSE_NOT_ALLOWED_FOR_CALLER"
        with pytest.raises(grpc.RpcError) as err:
            consent.CheckConsent(cpb.CheckConsentRequest(subject=acct("webshop", "P1"), purpose=NEWS),
                                 metadata=[("x-tessera-caller", "stranger")])
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_details(err.value)[0] == "UNKNOWN_CALLER"
        # On a stream the caller's policy holds per request; an unknown caller gets no stream.
        answers = list(consent.StreamCheckConsent(iter([
            cpb.StreamCheckConsentRequest(subject=acct("webshop", "P1"), purpose=NEWS),
            cpb.StreamCheckConsentRequest(subject=acct("webshop", "P1"), purpose="purposes/sms-marketing"),
        ]), metadata=allowed))
        assert answers[0].result.reason == "no_consent_recorded"
        assert answers[1].error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert status_details(answers[1].error)[0] == "PURPOSE_NOT_ALLOWED_FOR_CALLER"
        with pytest.raises(grpc.RpcError) as err:
            list(consent.StreamCheckConsent(iter([cpb.StreamCheckConsentRequest(subject=acct("webshop", "P1"),
                                                                                purpose=NEWS)]),
                                            metadata=[("x-tessera-caller", "stranger")]))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        stack.stop()


def test_batch_check_answers_in_request_order(identity, consent):
    for i in range(4):
        link(identity, "webshop", f"BC{i}", given=f"Name{i}")
    grant(consent, acct("webshop", "BC1"))
    grant(consent, acct("webshop", "BC3"), channel=cpb.CHANNEL_EMAIL)
    subjects = [acct("webshop", f"BC{i}") for i in range(4)] + [acct("webshop", "unknown")]
    results = consent.BatchCheckConsent(cpb.BatchCheckConsentRequest(subjects=subjects, purpose=NEWS,
                                                                      channel=cpb.CHANNEL_EMAIL)).results
    assert [r.allowed for r in results] == [False, True, False, True, False]
    assert results[1].person.startswith("persons/")
    # Large batches are checked in chunks (`CHECK_CHUNK`), several at a time: answers stay in order.
    many = [acct("webshop", f"BC{i % 4}") if i % 499 == 0 else acct("webshop", f"nobody-{i}") for i in range(2500)]
    answers = consent.BatchCheckConsent(cpb.BatchCheckConsentRequest(subjects=many, purpose=NEWS,
                                                                      channel=cpb.CHANNEL_EMAIL)).results
    expected = [i % 499 == 0 and (i % 4) in (1, 3) for i in range(2500)]
    assert [r.allowed for r in answers] == expected
    assert [i for i, yes in enumerate(expected) if yes] == [499, 1497, 2495]  # in three different chunks
    with pytest.raises(grpc.RpcError) as err:
        consent.BatchCheckConsent(cpb.BatchCheckConsentRequest(subjects=[acct("webshop", "BC1"), acct("", "x")],
                                                               purpose=NEWS))
    assert set(error_details(err.value)[1]) == {"subjects[1].account.source"}


def test_purpose_round_trip_keeps_hostile_strings_and_versions(consent):
    description = "Angebote für \"Stammkunden\" – O'Brien's \\ 東京 " + "x" * 10_000
    created = consent.CreatePurpose(cpb.CreatePurposeRequest(purpose_id="loyalty-offers", purpose=cpb.Purpose(
        display_name="Treue'\"\\", description=description, lawful_basis=cpb.LAWFUL_BASIS_CONSENT,
        data_categories=["contact"], channels=[cpb.CHANNEL_EMAIL], retention={"seconds": 30 * 86400})))
    assert (created.name, created.version) == ("purposes/loyalty-offers", 1)
    fetched = consent.GetPurpose(cpb.GetPurposeRequest(name="purposes/loyalty-offers"))
    assert fetched.description == description
    assert fetched.display_name == "Treue'\"\\"
    wider = consent.UpdatePurpose(cpb.UpdatePurposeRequest(
        purpose=cpb.Purpose(name="purposes/loyalty-offers", channels=[cpb.CHANNEL_EMAIL, cpb.CHANNEL_SMS]),
        update_mask={"paths": ["channels"]}))
    assert (wider.version, wider.requires_fresh_consent) == (2, True)
    assert consent.GetPurpose(cpb.GetPurposeRequest(name="purposes/loyalty-offers", version=1)).description == \
        description
    with pytest.raises(grpc.RpcError) as err:
        consent.CreatePurpose(cpb.CreatePurposeRequest(purpose_id="Bad Id", purpose=cpb.Purpose()))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error_details(err.value)[1]) == {"purpose_id", "purpose.display_name", "purpose.lawful_basis",
                                                "purpose.retention"}
    with pytest.raises(grpc.RpcError) as err:
        consent.CreatePurpose(cpb.CreatePurposeRequest(purpose_id="loyalty-offers", purpose=created))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_the_latest_of_many_decisions_decides(identity, consent):
    link(identity, "app", "L1")
    base = timestamp_pb2.Timestamp()
    base.GetCurrentTime()
    for hours in (5, 1, 9, 3, 7):  # recorded out of order of expiry; the last recorded grant counts
        expiry = timestamp_pb2.Timestamp(seconds=base.seconds + hours * 3600)
        grant(consent, acct("app", "L1"), expire_time=expiry)
    result = check(consent, acct("app", "L1"))
    assert result.allowed
    assert result.expire_time.seconds == base.seconds + 7 * 3600
    history = consent.ListConsentRecords(cpb.ListConsentRecordsRequest(subject=acct("app", "L1")))
    assert result.deciding_record == history.consent_records[-1].name


def test_single_checks_answer_as_a_batch_of_one_does_before_and_after_scopes_are_cached(identity, consent):
    """CheckConsent takes a shorter path than BatchCheckConsent; both must decide alike, for fresh
    and cached scopes, and a cached scope must still see a withdrawal recorded on an account that
    was linked to the person after the scope was cached (through the person's id)."""
    link(identity, "webshop", "S1", "sina@example.org", given="Sina")
    person = link(identity, "newsletter", "S2", "sina@example.org", given="Sina").person
    link(identity, "app", "S3", given="Udo", birth="1970-02-02")
    offers = "purposes/personalised-offers"  # consent, on email, push, in-app and personalisation
    grant(consent, acct("webshop", "S1"), purpose=offers)
    expiry = timestamp_pb2.Timestamp(seconds=int(time.time()) + 86_400, nanos=250_000_000)
    grant(consent, acct("app", "S3"), purpose=offers, channel=cpb.CHANNEL_PUSH, expire_time=expiry)
    email = subject_pb2.Subject(identifier=subject_pb2.Identifier(kind=subject_pb2.IDENTIFIER_KIND_EMAIL,
                                                                  value="sina@example.org"))
    subjects = [acct("webshop", "S1"), acct("newsletter", "S2"), acct("app", "S3"), acct("webshop", "nobody"),
                email, subject_pb2.Subject(person=person.name)]
    cases = [(purpose, channel) for purpose in (offers, "purposes/order-fulfilment", "purposes/no-such-purpose")
             for channel in (cpb.CHANNEL_UNSPECIFIED, cpb.CHANNEL_EMAIL, cpb.CHANNEL_PUSH, cpb.CHANNEL_SMS)]

    def answers() -> list[list[tuple]]:
        out = []
        for purpose, channel in cases:
            single = [check(consent, s, purpose=purpose, channel=channel) for s in subjects]
            batch = consent.BatchCheckConsent(cpb.BatchCheckConsentRequest(subjects=subjects, purpose=purpose,
                                                                            channel=channel)).results
            assert [r.SerializeToString(deterministic=True) for r in single] == \
                [r.SerializeToString(deterministic=True) for r in batch]
            out.append([(r.allowed, r.reason) for r in single])
        return out

    first = answers()  # scopes resolved now
    assert first[1][:4] == [(True, "consent_granted"), (True, "consent_granted"), (False, "no_consent_recorded"),
                            (False, "no_consent_recorded")]
    assert first[2][2] == (True, "consent_granted")  # the push-only grant, checked for push
    pushed = check(consent, acct("app", "S3"), purpose=offers, channel=cpb.CHANNEL_PUSH)
    assert pushed.expire_time.ToMilliseconds() == expiry.ToMilliseconds()  # in the batch's answer too
    assert first[3][0] == (False, "channel_not_allowed_for_purpose")
    assert first[4][0] == (True, "lawful_basis:contract")
    assert first[8][0] == (False, "unknown_purpose")
    assert answers() == first  # the same from cached scopes
    # A new account of Sina's person, unknown to the cached scopes, and a withdrawal recorded on it.
    link(identity, "loyalty", "S4", "sina@example.org", given="Sina")
    consent.WithdrawConsent(cpb.WithdrawConsentRequest(subject=acct("loyalty", "S4"), purpose=offers,
                                                       provenance=PROV))
    after = answers()
    assert after[1][0] == (False, "withdrawn")
    assert after[1][1] == (False, "withdrawn")
    assert after[2][2] == (True, "consent_granted")  # another person: untouched


def test_a_check_is_answered_from_memory_only_while_nothing_it_read_changed(stack, identity, consent):
    """The event loop answers from memory what a check on a thread answered before, and hands a
    check back to a thread once anything it needs is not in memory: a subject never resolved, one
    with a decision recorded since (on another replica too), a check of a past time."""
    link(identity, "webshop", "M1", "mara@example.org", given="Mara")
    grant(consent, acct("webshop", "M1"))
    service, _stub = build_consent(stack.runtimes["consent"])  # a second replica, in process
    service.prepare_states()
    subject, purpose = protos.parse_subject(acct("webshop", "M1")), "newsletter-email"

    def from_memory():
        return service.check_from_memory(subject, purpose, None, service.events.sync())

    assert from_memory() is None  # never resolved here
    granted = service.check(subject, purpose, None)  # resolves and caches the scope
    assert granted[0].allowed
    # A cached scope may miss an account linked since: its person id's events are read once too.
    assert from_memory() is None
    assert service.check(subject, purpose, None) == granted
    assert from_memory() == granted
    before_withdrawal = int(time.time() * 1000)
    time.sleep(0.005)
    consent.WithdrawConsent(cpb.WithdrawConsentRequest(subject=acct("webshop", "M1"), purpose=NEWS,
                                                       provenance=PROV))
    assert from_memory() is None  # the withdrawal made what it had read stale
    checks = AsyncChecks(service)

    def check_on_a_loop(at_ms):
        async def check():
            try:
                return await checks.check(subject, purpose, None, at_ms)
            finally:
                await service.store.graph.close_async()

        return asyncio.run(check())

    withdrawn = check_on_a_loop(None)
    assert (withdrawn[0].allowed, withdrawn[0].reason) == (False, "withdrawn")
    assert from_memory() == withdrawn
    past = check_on_a_loop(before_withdrawal)
    assert (past[0].allowed, past[0].deciding_event_id) == (True, granted[0].deciding_event_id)
    assert check_on_a_loop(None) == withdrawn


def test_a_check_that_asks_identity_is_one_trace_across_both_services(identity, consent, spans):
    link(identity, "webshop", "T1", "tina@example.org", given="Tina")
    spans.clear()
    consent.CheckConsent(cpb.CheckConsentRequest(subject=acct("webshop", "T1"), purpose=NEWS))  # a cold scope
    subjects = [acct("webshop", "T1"), *(acct("webshop", f"unknown-{i}") for i in range(2 * CHECK_CHUNK))]
    consent.BatchCheckConsent(cpb.BatchCheckConsentRequest(subjects=subjects, purpose=NEWS))  # three chunks

    def named(suffix: str) -> list:
        return [s for s in spans.get_finished_spans() if s.name.endswith(suffix)]

    deadline = time.monotonic() + 5  # the asyncio server may answer before its span ends
    while not (named("/CheckConsent") and named("/BatchCheckConsent")) and time.monotonic() < deadline:
        time.sleep(0.01)
    [check], [batch] = named("/CheckConsent"), named("/BatchCheckConsent")
    resolves = named("/BatchResolveSubjects")
    children = {(s.context.trace_id, s.parent.span_id) for s in resolves if s.parent is not None}
    assert (check.context.trace_id, check.context.span_id) in children
    # Each chunk asks identity on a thread of its own, still within the batch's trace.
    assert sum(s.context.trace_id == batch.context.trace_id and s.parent.span_id == batch.context.span_id
               for s in resolves) == 3
    assert len(resolves) == 4


def stream_request(subject, purpose=NEWS, channel=cpb.CHANNEL_UNSPECIFIED) -> cpb.StreamCheckConsentRequest:
    return cpb.StreamCheckConsentRequest(subject=subject, purpose=purpose, channel=channel)


def test_a_check_stream_answers_every_request_in_order_as_check_consent_does(identity, consent):
    link(identity, "webshop", "K1", "kai@example.org", given="Kai")
    link(identity, "newsletter", "K2", "kai@example.org", given="Kai")
    grant(consent, acct("webshop", "K1"), channel=cpb.CHANNEL_EMAIL)
    consent.WithdrawConsent(cpb.WithdrawConsentRequest(subject=acct("app", "K9"), purpose=NEWS, provenance=PROV))
    cases = [(subject, purpose, channel)
             for subject in (acct("webshop", "K1"), acct("newsletter", "K2"), acct("app", "K9"), acct("app", "none"))
             for purpose in (NEWS, "purposes/order-fulfilment", "purposes/no-such-purpose")
             for channel in (cpb.CHANNEL_UNSPECIFIED, cpb.CHANNEL_EMAIL, cpb.CHANNEL_SMS)]
    answers = list(consent.StreamCheckConsent(iter([stream_request(*case) for case in cases])))
    assert [a.WhichOneof("outcome") for a in answers] == ["result"] * len(cases)
    singles = [check(consent, *case) for case in cases]
    assert [a.result.SerializeToString(deterministic=True) for a in answers] == \
        [r.SerializeToString(deterministic=True) for r in singles]
    assert {(r.allowed, r.reason) for r in singles} >= {
        (True, "consent_granted"), (False, "withdrawn"), (False, "no_consent_recorded"),
        (True, "lawful_basis:contract"), (False, "unknown_purpose"), (False, "channel_not_allowed_for_purpose")}


def test_a_withdrawal_denies_the_next_request_on_an_open_stream(identity, consent):
    """Read-your-writes on a stream held open: each request sees what was recorded before it."""
    link(identity, "webshop", "O1", "ola@example.org", given="Ola")
    grant(consent, acct("webshop", "O1"))
    requests: queue.Queue = queue.Queue()
    answers = consent.StreamCheckConsent(iter(requests.get, None))
    try:
        requests.put(stream_request(acct("webshop", "O1")))
        assert next(answers).result.reason == "consent_granted"
        consent.WithdrawConsent(cpb.WithdrawConsentRequest(subject=acct("webshop", "O1"), purpose=NEWS,
                                                           provenance=PROV))
        requests.put(stream_request(acct("webshop", "O1")))
        assert next(answers).result.reason == "withdrawn"
        grant(consent, acct("webshop", "O1"))
        requests.put(stream_request(acct("webshop", "O1")))
        assert next(answers).result.reason == "consent_granted"
    finally:
        requests.put(None)
    assert list(answers) == []


def test_a_bad_request_on_a_stream_gets_its_field_violations_and_the_stream_goes_on(identity, consent, log_buffer):
    link(identity, "webshop", "B1", "bea@example.org", given="Bea")
    requests = [stream_request(acct("webshop", "B1")),
                cpb.StreamCheckConsentRequest(purpose="newsletter", channel=99),
                stream_request(acct("", "x")),
                stream_request(acct("webshop", "B1"))]
    answers = list(consent.StreamCheckConsent(iter(requests)))
    assert [a.WhichOneof("outcome") for a in answers] == ["result", "error", "error", "result"]
    assert answers[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert set(status_details(answers[1].error)[1]) == {"subject", "purpose", "channel"}
    assert set(status_details(answers[2].error)[1]) == {"subject.account.source"}
    assert answers[3].result.reason == "no_consent_recorded"
    # One access line for the stream, counting its answers (the asyncio server may answer first).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        streams = [line for line in map(json.loads, log_buffer.getvalue().splitlines())
                   if line.get("event") == "rpc" and line.get("rpc_method", "").endswith("/StreamCheckConsent")]
        if streams:
            break
        time.sleep(0.01)
    assert [(line["grpc_code"], line["responses"]) for line in streams] == [("OK", 4)]
