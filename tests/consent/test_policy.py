"""The identity-aware consent decision, case by case."""

from __future__ import annotations

import itertools

import pytest

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
