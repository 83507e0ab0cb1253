"""The identity-aware consent decision, case by case."""

from __future__ import annotations

import itertools

import pytest

from services.consent.domain.ledger import genesis_hash, seal
from services.consent.domain.policy import decide
from services.consent.domain.purposes import Channel, LawfulBasis, Purpose

NOW = 1_800_000_000_000
_seq = itertools.count(1)


def purpose(basis: LawfulBasis = LawfulBasis.CONSENT, version: int = 1, channels=("email", "sms"),
            categories=("contact",), retention=365) -> Purpose:
    return Purpose("newsletter-email", version, "News", "", basis, frozenset(categories),
                   frozenset(Channel(c) for c in channels), retention)


def ev(kind: str, ref: str, *, channel: str | None = None, at: int = NOW - 1000, expires: int | None = None,
       version: int = 1) -> dict:
    seq = next(_seq)
    return {"seq": seq, "event_id": f"e{seq}", "kind": kind, "subject_ref": ref, "purpose_id": "newsletter-email",
            "purpose_version": version, "channel": channel, "effective_at": at, "recorded_at": at,
            "expires_at": expires}


STRONG = {"account:a": "deterministic", "account:b": "deterministic", "account:p": "probabilistic"}


def check(events, *, target="account:a", channel=None, p=None, scope=STRONG, at=NOW, versions=None):
    p = p or purpose()
    return decide(p, versions or {p.version: p}, events, scope, target=target, channel=channel, at_ms=at)


def test_unknown_purpose_subject_and_channel_deny():
    assert check([], p=None).reason == "no_consent_recorded"  # sanity: default purpose
    assert decide(None, {}, [], STRONG, target=None, channel=None, at_ms=NOW).reason == "unknown_purpose"
    assert check([], scope={}).reason == "unknown_subject"
    assert check([ev("grant", "account:a")], channel="push").reason == "channel_not_allowed_for_purpose"


def test_grant_allows_with_deciding_event_and_withdrawal_denies_at_once():
    grant = ev("grant", "account:a")
    d = check([grant])
    assert (d.allowed, d.reason, d.deciding_event_id) == (True, "consent_granted", grant["event_id"])
    withdraw = ev("withdraw", "account:a")
    d = check([grant, withdraw])
    assert (d.allowed, d.reason, d.deciding_event_id) == (False, "withdrawn", withdraw["event_id"])


def test_newer_grant_on_same_account_supersedes_denial_but_not_on_another_account():
    deny = ev("deny", "account:a")
    assert check([deny, ev("grant", "account:a")]).allowed
    d = check([deny, ev("grant", "account:b")], target="account:b")
    assert (d.allowed, d.reason) == (False, "denied")


def test_withdrawal_on_weakly_linked_account_still_binds_the_person():
    d = check([ev("grant", "account:a"), ev("withdraw", "account:p")])
    assert (d.allowed, d.reason) == (False, "withdrawn")


def test_grants_do_not_cross_probabilistic_links():
    # Captured on the probabilistic account: does not reach the others, nor the person as a whole.
    grant_p = ev("grant", "account:p")
    assert not check([grant_p], target="account:a").allowed
    assert not check([grant_p], target=None).allowed
    assert check([grant_p], target="account:p").allowed
    # Captured on a strong account: does not reach the probabilistic one.
    grant_a = ev("grant", "account:a")
    assert check([grant_a], target="account:b").allowed
    assert not check([grant_a], target="account:p").allowed


def test_channel_scoping():
    email_grant = ev("grant", "account:a", channel="email")
    assert check([email_grant], channel="email").allowed
    assert not check([email_grant], channel="sms").allowed
    all_grant = ev("grant", "account:a")
    sms_withdraw = ev("withdraw", "account:a", channel="sms")
    assert check([all_grant, sms_withdraw], channel="email").allowed
    assert check([all_grant, sms_withdraw], channel="sms").reason == "withdrawn"
    assert check([all_grant, ev("withdraw", "account:b")], channel="email").reason == "withdrawn"


def test_expiry_and_state_at_time_t():
    grant = ev("grant", "account:a", at=NOW - 10_000, expires=NOW - 1)
    d = check([grant])
    assert (d.allowed, d.reason, d.expires_at_ms) == (False, "expired", NOW - 1)
    assert check([grant], at=NOW - 5_000).allowed
    later = ev("withdraw", "account:a", at=NOW - 2_000)
    live = ev("grant", "account:a", at=NOW - 10_000)
    assert check([live, later], at=NOW - 5_000).allowed
    assert not check([live, later], at=NOW).allowed


@pytest.mark.parametrize("basis", [LawfulBasis.CONTRACT, LawfulBasis.LEGAL_OBLIGATION, LawfulBasis.VITAL_INTERESTS,
                                   LawfulBasis.PUBLIC_TASK, LawfulBasis.LEGITIMATE_INTERESTS])
def test_other_lawful_bases_allow_without_consent_but_not_under_restriction(basis):
    p = purpose(basis)
    d = check([], p=p)
    assert (d.allowed, d.reason, d.lawful_basis) == (True, f"lawful_basis:{basis.value}", basis)
    restricted = check([ev("restriction", "account:b")], p=p)
    assert (restricted.allowed, restricted.reason) == (False, "restricted")
    lifted = check([ev("restriction", "account:b"), ev("restriction_lifted", "account:b")], p=p)
    assert lifted.allowed


def test_objection_stops_legitimate_interests_and_public_task_but_not_contract():
    obj = ev("objection", "account:a")
    assert check([obj], p=purpose(LawfulBasis.LEGITIMATE_INTERESTS)).reason == "objection"
    assert check([obj], p=purpose(LawfulBasis.PUBLIC_TASK)).reason == "objection"
    assert check([obj], p=purpose(LawfulBasis.CONTRACT)).allowed
    assert check([obj], p=purpose(LawfulBasis.LEGAL_OBLIGATION)).allowed
    assert check([ev("grant", "account:a"), ev("objection", "account:a")]).reason == "objection"
    assert check([obj, ev("grant", "account:a")]).allowed  # a newer grant on the same account lifts it


def test_new_purpose_version_that_widens_use_requires_fresh_consent():
    v1, v2 = purpose(version=1), purpose(version=2, channels=("email", "sms", "push"))
    grant = ev("grant", "account:a", version=1)
    d = decide(v2, {1: v1, 2: v2}, [grant], STRONG, target="account:a", channel=None, at_ms=NOW)
    assert (d.allowed, d.reason) == (False, "purpose_changed_fresh_consent_required")
    narrower = purpose(version=2, channels=("email",))
    assert decide(narrower, {1: v1, 2: narrower}, [grant], STRONG, target="account:a", channel=None, at_ms=NOW).allowed


def test_merge_and_split_effects():
    """Merge: the withdrawal recorded on one side binds the merged person. Split: each part is
    judged on the decisions recorded on its own accounts only."""
    grant_a, withdraw_b = ev("grant", "account:a"), ev("withdraw", "account:b")
    merged = {"account:a": "deterministic", "account:b": "manual"}
    assert not check([grant_a, withdraw_b], scope=merged).allowed
    part_a, part_b = {"account:a": "deterministic"}, {"account:b": "deterministic"}
    assert check([grant_a, withdraw_b], scope=part_a).allowed
    assert check([grant_a, withdraw_b], scope=part_b, target="account:b").reason == "withdrawn"


# ---- further cases -----------------------------------------------------------------------------

def test_consent_basis_needs_a_grant():
    d = check([])
    assert (d.allowed, d.reason, d.lawful_basis, d.deciding_event_id) == (False, "no_consent_recorded",
                                                                          LawfulBasis.CONSENT, None)


def test_objection_does_not_stop_vital_interests_and_restriction_on_any_account_binds():
    obj = ev("objection", "account:p")  # even on a weakly linked account
    assert check([obj], p=purpose(LawfulBasis.VITAL_INTERESTS)).allowed
    assert check([obj], p=purpose(LawfulBasis.LEGITIMATE_INTERESTS)).reason == "objection"
    restriction = ev("restriction", "account:p")
    d = check([restriction], p=purpose(LawfulBasis.LEGAL_OBLIGATION))
    assert (d.allowed, d.reason, d.deciding_event_id) == (False, "restricted", restriction["event_id"])
    # Lifting on another account does not lift it; a grant does not lift a restriction either.
    assert not check([restriction, ev("restriction_lifted", "account:a"), ev("grant", "account:p")]).allowed


def test_objection_is_lifted_only_by_a_later_grant_on_the_same_account():
    obj = ev("objection", "account:a")
    assert check([obj, ev("grant", "account:b")]).reason == "objection"
    assert check([obj, ev("grant", "account:a")], p=purpose(LawfulBasis.LEGITIMATE_INTERESTS)).allowed


def test_withdrawal_then_regrant_on_same_account_versus_another_account():
    grant, withdraw = ev("grant", "account:a", at=NOW - 3000), ev("withdraw", "account:a", at=NOW - 2000)
    regrant_same = ev("grant", "account:a", at=NOW - 1000)
    d = check([grant, withdraw, regrant_same])
    assert (d.allowed, d.deciding_event_id) == (True, regrant_same["event_id"])
    regrant_other = ev("grant", "account:b", at=NOW - 1000)
    for target in ("account:a", "account:b", None):
        d = check([grant, withdraw, regrant_other], target=target)
        assert (d.allowed, d.reason, d.deciding_event_id) == (False, "withdrawn", withdraw["event_id"])


def test_imported_older_grant_does_not_override_a_newer_withdrawal():
    withdraw = ev("withdraw", "account:a", at=NOW - 1000)
    imported = ev("grant", "account:a", at=NOW - 5000)  # recorded later (higher seq), decided earlier
    assert check([withdraw, imported]).reason == "withdrawn"


def test_channel_specific_regrant_after_full_withdrawal_allows_only_that_channel():
    events = [ev("grant", "account:a", at=NOW - 3000), ev("withdraw", "account:a", at=NOW - 2000),
              ev("grant", "account:a", channel="email", at=NOW - 1000)]
    assert check(events, channel="email").allowed
    assert check(events, channel="sms").reason == "withdrawn"
    assert check(events, channel=None).reason == "withdrawn"


def test_check_without_channel_means_the_purpose_as_a_whole():
    all_grant = ev("grant", "account:a")
    assert check([all_grant]).allowed
    assert check([ev("grant", "account:a", channel="email")]).reason == "no_consent_recorded"
    d = check([all_grant, ev("withdraw", "account:b", channel="sms")])
    assert (d.allowed, d.reason) == (False, "withdrawn")


def test_grant_reach_follows_the_configured_assurance():
    scope = {"account:a": "deterministic", "account:m": "manual", "account:r": "review"}
    grant_m = ev("grant", "account:m")
    assert check([grant_m], scope=scope, target="account:a").allowed
    assert not check([grant_m], scope=scope, target="account:r").allowed
    assert not check([ev("grant", "account:r")], scope=scope, target="account:a").allowed
    strict = decide(purpose(), None, [grant_m], scope, target="account:a", channel=None, at_ms=NOW,
                    propagation=frozenset({"deterministic"}))
    assert (strict.allowed, strict.reason) == (False, "no_consent_recorded")


def test_split_gives_each_part_exactly_its_own_decisions():
    grant_a, grant_b = ev("grant", "account:a"), ev("grant", "account:b", channel="sms")
    objection_b = ev("objection", "account:b", at=NOW - 500)
    events = [grant_a, grant_b, objection_b]
    merged = {"account:a": "deterministic", "account:b": "verified"}
    assert check(events, scope=merged, target="account:a").reason == "objection"
    # After the split the objection stays with b's part; a's part is judged on a's grant alone.
    part_a, part_b = {"account:a": "deterministic"}, {"account:b": "deterministic"}
    d = check(events, scope=part_a, target="account:a")
    assert (d.allowed, d.deciding_event_id) == (True, grant_a["event_id"])
    assert check(events, scope=part_b, target="account:b", channel="sms").reason == "objection"
    # Before the merge, b's grant alone never reached a.
    assert not check([grant_b], scope=part_a, target="account:a", channel="sms").allowed


def test_state_at_time_t_ignores_later_events():
    grant = ev("grant", "account:a", at=NOW - 10_000)
    withdraw = ev("withdraw", "account:a", at=NOW - 5_000)
    assert check([grant, withdraw], at=NOW - 20_000).reason == "no_consent_recorded"
    assert check([grant, withdraw], at=NOW - 7_000).allowed
    assert check([grant, withdraw], at=NOW - 5_000).reason == "withdrawn"
    d = decide(purpose(), None, [grant], STRONG, target="account:a", channel=None, now_ms=NOW)
    assert d.allowed
    with pytest.raises(TypeError):
        decide(purpose(), None, [grant], STRONG, target="account:a", channel=None)


def test_expired_grant_reports_expiry_and_an_unexpired_one_reports_it_too():
    grant = ev("grant", "account:a", at=NOW - 10_000, expires=NOW)
    assert (check([grant]).reason, check([grant]).expires_at_ms) == ("expired", NOW)  # expiry <= at
    d = check([grant], at=NOW - 1)
    assert (d.allowed, d.expires_at_ms) == (True, NOW)


def test_grant_version_is_compared_with_the_current_version_directly():
    v1 = purpose(version=1)
    v2 = purpose(version=2, channels=("email", "sms", "push"))
    v3 = purpose(version=3)  # back to v1's scope
    versions = {1: v1, 2: v2, 3: v3}
    grant_v1, grant_v2 = ev("grant", "account:a", version=1), ev("grant", "account:a", version=2)
    assert decide(v3, versions.get, [grant_v1], STRONG, target="account:a", channel=None, at_ms=NOW).allowed
    assert decide(v3, versions, [grant_v2], STRONG, target="account:a", channel=None, at_ms=NOW).allowed
    longer = purpose(version=3, retention=730)
    d = decide(longer, versions, [grant_v2], STRONG, target="account:a", channel=None, at_ms=NOW)
    assert d.reason == "purpose_changed_fresh_consent_required"
    basis_change = Purpose("newsletter-email", 2, "News", "", LawfulBasis.CONSENT, frozenset({"contact"}),
                           frozenset({Channel.EMAIL, Channel.SMS}), 365)
    li_v1 = purpose(LawfulBasis.LEGITIMATE_INTERESTS)
    assert decide(basis_change, {1: li_v1}, [], STRONG, target="account:a", channel=None,
                  at_ms=NOW).reason == "no_consent_recorded"
    assert not decide(basis_change, {1: li_v1}, [grant_v1], STRONG, target="account:a", channel=None,
                      at_ms=NOW).allowed
    # A granted version that cannot be looked up needs fresh consent.
    assert not decide(v3, {3: v3}, [grant_v1], STRONG, target="account:a", channel=None, at_ms=NOW).allowed


def test_erasure_tombstone_voids_earlier_grants_on_that_account():
    grant, erasure = ev("grant", "account:a", at=NOW - 3000), ev("erasure", "account:a", at=NOW - 2000)
    assert check([grant, erasure]).reason == "no_consent_recorded"
    assert check([grant, erasure, ev("grant", "account:a", at=NOW - 1000)]).allowed
    assert check([grant, erasure], target="account:b").reason == "no_consent_recorded"


def test_events_for_other_purposes_and_other_people_are_ignored():
    other_purpose = {**ev("withdraw", "account:a"), "purpose_id": "sms-marketing"}
    stranger = ev("withdraw", "account:z")
    assert check([ev("grant", "account:a", at=NOW - 5000), other_purpose, stranger]).allowed


def test_sealed_ledger_events_are_accepted():
    notice = "ab" * 32
    base = {"person_id": None, "purpose_id": "newsletter-email", "purpose_version": 1, "expires_at_ms": None,
            "source_system": "app", "collection_method": "app", "notice_version": "1", "notice_sha256": notice,
            "evidence_ref": None, "payload_ciphertext": None}
    grant = seal({**base, "event_id": "g", "kind": "grant", "subject_ref": "account:a", "channel": None,
                   "recorded_at_ms": NOW - 2000, "effective_at_ms": NOW - 2000, "request_id": "r1"}, genesis_hash(), 1)
    withdraw = seal({**base, "event_id": "w", "kind": "withdraw", "subject_ref": "account:p", "channel": "sms",
                     "recorded_at_ms": NOW - 1000, "effective_at_ms": NOW - 1000, "request_id": "r2"}, grant.hash, 2)
    assert check([grant, withdraw], channel="email").allowed
    d = check([grant, withdraw], channel="sms")
    assert (d.allowed, d.reason, d.deciding_event_id) == (False, "withdrawn", "w")


class _Record:
    """An event as an object with attributes (ConsentEvent-like), read through the generic path."""

    def __init__(self, fields: dict):
        self.__dict__.update(fields)


def test_stored_records_and_objects_with_the_same_fields_decide_alike():
    """Plain dicts (what the store returns) take a shorter path than other records; it must read
    the same fields with the same fallbacks (effective_at_ms, recorded_at, expires_at_ms)."""
    histories = [
        [ev("grant", "account:a"), ev("withdraw", "account:b", at=NOW - 500)],
        [ev("grant", "account:a", expires=NOW - 1), ev("grant", "account:b", expires=NOW + 10_000)],
        [ev("grant", "account:a", channel="sms"), ev("objection", "account:p")],
        [ev("restriction", "account:b"), ev("restriction_lifted", "account:b", at=NOW - 10)],
        [ev("grant", "account:a", version=1), ev("deny", "account:p", at=NOW + 5)],
    ]
    aliased = {"seq": 99, "event_id": "alias", "kind": "grant", "subject_ref": "account:a",
               "purpose_id": "newsletter-email", "purpose_version": None, "channel": "",
               "effective_at": None, "effective_at_ms": None, "recorded_at": NOW - 7,
               "expires_at": None, "expires_at_ms": NOW + 99}
    histories.append([aliased])
    histories.append([{**aliased, "purpose_id": "another-purpose"}])
    wider = purpose(version=2, categories=("contact", "profile"))
    for events, channel, p in itertools.product(histories, (None, "email", "sms"), (purpose(), wider)):
        versions = {1: purpose(), 2: wider}
        as_dicts = check(events, channel=channel, p=p, versions=versions)
        as_objects = check([_Record(e) for e in events], channel=channel, p=p, versions=versions)
        assert as_dicts == as_objects
    alias = check([aliased], channel="email")
    assert (alias.allowed, alias.deciding_event_id, alias.expires_at_ms) == (True, "alias", NOW + 99)
    assert check([{**aliased, "purpose_id": "another-purpose"}]).reason == "no_consent_recorded"
    assert check([aliased], channel="push").reason == "channel_not_allowed_for_purpose"


def test_lifting_a_restriction_on_one_channel_lifts_that_channel_only():
    p = purpose(LawfulBasis.LEGITIMATE_INTERESTS)
    email, sms = ev("restriction", "account:a", channel="email"), ev("restriction", "account:a", channel="sms")
    sms_lifted = ev("restriction_lifted", "account:a", channel="sms")
    events = [email, sms, sms_lifted]
    assert check(events, p=p, channel="sms").allowed
    assert (check(events, p=p, channel="email").reason, check(events, p=p).reason) == ("restricted", "restricted")
    assert check(events, p=p).deciding_event_id == email["event_id"]
    # Restricted as a whole, lifted for e-mail: the purpose as a whole and sms stay restricted.
    everything = ev("restriction", "account:a")
    events = [everything, ev("restriction_lifted", "account:a", channel="email")]
    assert check(events, p=p, channel="email").allowed
    assert (check(events, p=p, channel="sms").reason, check(events, p=p).reason) == ("restricted", "restricted")
    # A lift without a channel ends them all.
    assert check([email, sms, everything, ev("restriction_lifted", "account:a")], p=p).allowed


def test_a_withdrawal_superseded_on_its_account_still_revokes_older_grants_elsewhere():
    old_grant = ev("grant", "account:b", at=NOW - 5000)
    withdraw = ev("withdraw", "account:a", at=NOW - 4000)
    regrant = ev("grant", "account:a", at=NOW - 3000, expires=NOW - 2000)
    events = [old_grant, withdraw, regrant]
    assert check(events, at=NOW - 2500).allowed  # the re-grant, while it lasts
    d = check(events, target="account:b")
    assert (d.allowed, d.reason, d.deciding_event_id) == (False, "expired", regrant["event_id"])
    assert check([*events, ev("grant", "account:b", at=NOW - 1000)], target="account:b").allowed
