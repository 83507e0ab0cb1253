"""Purpose model: validation, fresh-consent rule, default catalogue."""

from __future__ import annotations

import dataclasses

import pytest

from services.consent.domain.purposes import (
    DEFAULT_CATALOGUE,
    Channel,
    LawfulBasis,
    Purpose,
    ValidationError,
    ensure_valid,
    load_catalogue,
    requires_fresh_consent,
    validate_purpose,
)


def news(**changes) -> Purpose:
    base = Purpose("newsletter-email", 1, "Newsletter", "News by e-mail", LawfulBasis.CONSENT,
                   frozenset({"contact"}), frozenset({Channel.EMAIL}), 730, notice_version="2024-05")
    return dataclasses.replace(base, **changes)


def test_enums_cover_the_lawful_bases_and_channels():
    assert {b.value for b in LawfulBasis} == {"consent", "contract", "legal_obligation", "vital_interests",
                                              "public_task", "legitimate_interests"}
    assert {c.value for c in Channel} == {"email", "sms", "push", "phone", "post", "in_app", "personalisation"}


def test_valid_purpose_passes_and_is_frozen():
    p = ensure_valid(news())
    assert p.notice_version == "2024-05"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.version = 2  # type: ignore[misc]


@pytest.mark.parametrize(("changes", "field"), [
    ({"purpose_id": "News"}, "purpose.purpose_id"),
    ({"purpose_id": "ab"}, "purpose.purpose_id"),
    ({"purpose_id": "a" * 64}, "purpose.purpose_id"),
    ({"version": 0}, "purpose.version"),
    ({"display_name": "  "}, "purpose.display_name"),
    ({"lawful_basis": "whim"}, "purpose.lawful_basis"),
    ({"data_categories": frozenset({"Contact Data"})}, "purpose.data_categories[0]"),
    ({"channels": frozenset({Channel.EMAIL, "fax"})}, "purpose.channels[1]"),
    ({"retention_days": 0}, "purpose.retention"),
    ({"notice_version": ""}, "purpose.notice_version"),
])
def test_each_invalid_field_is_named(changes, field):
    with pytest.raises(ValidationError) as err:
        ensure_valid(news(**changes))
    assert [f for f, _ in err.value.violations] == [field]


def test_all_violations_are_reported_together():
    problems = validate_purpose(news(purpose_id="X", version=0, retention_days=-1))
    assert {f for f, _ in problems} == {"purpose.purpose_id", "purpose.version", "purpose.retention"}


def test_fresh_consent_needed_only_when_use_widens():
    old = news()
    assert not requires_fresh_consent(old, news(version=2, description="reworded", display_name="News"))
    assert not requires_fresh_consent(old, news(version=2, retention_days=365))
    assert not requires_fresh_consent(old, news(version=2, data_categories=frozenset()))
    assert requires_fresh_consent(old, news(version=2, data_categories=frozenset({"contact", "behaviour"})))
    assert requires_fresh_consent(old, news(version=2, channels=frozenset({Channel.EMAIL, Channel.SMS})))
    assert requires_fresh_consent(old, news(version=2, retention_days=731))
    li = news(lawful_basis=LawfulBasis.LEGITIMATE_INTERESTS)
    assert requires_fresh_consent(li, news(version=2))
    assert not requires_fresh_consent(old, news(version=2, lawful_basis=LawfulBasis.CONTRACT))


def test_default_catalogue():
    purposes = {p.purpose_id: p for p in load_catalogue(DEFAULT_CATALOGUE)}
    assert set(purposes) == {"newsletter-email", "sms-marketing", "push-offers", "personalised-offers",
                             "order-fulfilment", "fraud-prevention", "tax-records", "analytics-profiling",
                             "customer-service"}
    bases = {pid: p.lawful_basis for pid, p in purposes.items()}
    assert bases["order-fulfilment"] == bases["customer-service"] == LawfulBasis.CONTRACT
    assert bases["fraud-prevention"] == LawfulBasis.LEGITIMATE_INTERESTS
    assert bases["tax-records"] == LawfulBasis.LEGAL_OBLIGATION
    assert purposes["tax-records"].retention_days >= 3652  # ten years
    for pid in ("newsletter-email", "sms-marketing", "push-offers", "personalised-offers", "analytics-profiling"):
        assert bases[pid] == LawfulBasis.CONSENT
    assert purposes["newsletter-email"].channels == frozenset({Channel.EMAIL})
    assert all(not validate_purpose(p) and p.version == 1 for p in purposes.values())


def test_catalogue_errors_name_the_entry_and_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("""
purposes:
  - id: ok-purpose
    display_name: Fine
    lawful_basis: consent
    channels: [email]
    retention_days: 30
  - id: Bad
    display_name: ""
    lawful_basis: vibes
    channels: [email, fax]
    data_categories: [contact]
    retention_days: 0
    colour: blue
  - id: ok-purpose
    display_name: Again
    lawful_basis: contract
    retention_days: 10
""")
    with pytest.raises(ValidationError) as err:
        load_catalogue(path)
    fields = {f for f, _ in err.value.violations}
    assert fields == {"purposes[1].id", "purposes[1].display_name", "purposes[1].lawful_basis",
                      "purposes[1].channels[1]", "purposes[1].retention_days", "purposes[1].colour",
                      "purposes[2].id"}
    path.write_text("purposes: 3\n")
    with pytest.raises(ValidationError):
        load_catalogue(path)
    path.write_text("purposes:\n  - id: x-y-z\n    display_name: X\n    lawful_basis: consent\n"
                    "    channels: email\n    retention_days: 5\n")
    with pytest.raises(ValidationError) as err:
        load_catalogue(path)
    assert err.value.violations == [("purposes[0].channels", "a list is required")]
