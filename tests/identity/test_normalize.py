"""Normalisation of every identifier kind and attribute."""

from __future__ import annotations

import datetime as dt

import pytest

from services.identity.domain.normalize import (
    InvalidAccount,
    cologne_phonetic,
    fold,
    normalize_account,
    normalize_date,
    normalize_email,
    normalize_loyalty,
    normalize_phone,
    normalize_postcode,
    normalize_social,
    normalize_street,
    to_match_record,
)


@pytest.mark.parametrize(("raw", "expected"), [
    (" Anna.Schmidt@Example.ORG ", "anna.schmidt@example.org"),
    ("a.n.n.a+shop@gmail.com", "anna@gmail.com"),
    ("Anna.Schmidt@googlemail.com", "annaschmidt@gmail.com"),
    ("max+news@outlook.com", "max@outlook.com"),
    ("max+news@web.de", "max+news@web.de"),  # web.de does not document plus addressing: kept
    ("first.last@t-online.de", "first.last@t-online.de"),
    ("jörg@müller.de", "jörg@xn--mller-kva.de"),
    ("mailto:x@y.de", "x@y.de"),
])
def test_email(raw, expected):
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", ["", "no-at-sign", "a@b", "a@@b.de", "a b@c.de", "+tag@gmail.com"])
def test_bad_email(raw):
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked where it matters
        normalize_email(raw)


@pytest.mark.parametrize(("raw", "expected"), [
    ("+49 151 2345678", "+491512345678"),
    ("0151/2345678", "+491512345678"),
    ("0049 151 2345678", "+491512345678"),
    ("(030) 1234 5678", "+493012345678"),
    ("+43 1 5880000", "+4315880000"),
])
def test_phone_to_e164(raw, expected):
    assert normalize_phone(raw, "DE")[0] == expected


def test_phone_line_type_and_region():
    assert normalize_phone("030 12345678")[1] == "fixed"
    assert normalize_phone("0170 1234567")[1] == "mobile"
    assert normalize_phone("01 5880000", "AT")[0] == "+4315880000"
    for bad in ("123", "abc", "+49"):
        with pytest.raises(ValueError):  # noqa: PT011
            normalize_phone(bad)


def test_social_login_and_loyalty():
    assert normalize_social("IG", "@Anna.S") == "instagram:anna.s"
    assert normalize_social("Facebook", "max_m") == "facebook:max_m"
    with pytest.raises(ValueError, match="handle"):
        normalize_social("instagram", "bad handle!")
    assert normalize_loyalty("6001 2345 6789") == "600123456789"  # 12 digits: no check digit
    assert normalize_loyalty("4111-1111-1111-1111") == "4111111111111111"  # Luhn ok
    with pytest.raises(ValueError, match="check digit"):
        normalize_loyalty("4111 1111 1111 1112")
    with pytest.raises(ValueError, match="digits"):
        normalize_loyalty("12AB34")


def test_names_fold_case_accents_and_umlaut_spellings():
    assert fold("Müller") == fold("MUELLER") == fold("mueller") == "mueller"
    assert fold("Straße") == "strasse"
    assert fold("José-María") == "jose maria"
    assert fold("Zoë") == "zoe"
    assert cologne_phonetic(fold("Müller")) == cologne_phonetic(fold("Mueller"))
    assert cologne_phonetic(fold("Meyer")) == cologne_phonetic(fold("Maier"))
    assert cologne_phonetic("wikipedia") == "3412"


def test_dates_postcodes_streets():
    today = dt.date(2026, 11, 22)
    for raw in ("1988-04-09", "09.04.1988", "9.4.1988", "1988/04/09", "19880409"):
        assert normalize_date(raw, today) == "1988-04-09"
    for bad in ("31.02.1988", "1850-01-01", "2030-01-01", "yesterday"):
        with pytest.raises(ValueError):  # noqa: PT011
            normalize_date(bad, today)
    assert normalize_postcode(" 10115 ", "DE") == "10115"
    with pytest.raises(ValueError, match="DE postcode"):
        normalize_postcode("1011", "DE")
    assert normalize_postcode("sw1a 1aa", "GB") == "SW1A1AA"
    assert normalize_street("Hauptstraße 5a") == ("hauptstr", "5a")
    assert normalize_street("Hauptstr. 5 A") == ("hauptstr", "5a")
    assert normalize_street("Am Markt") == ("ammarkt", None)


def test_account_reports_problems_instead_of_failing():
    acc = normalize_account({
        "source": "till", "id": "T-1", "emails": ["broken", "ok@example.org"], "phones": ["12"],
        "loyalty_cards": ["4111 1111 1111 1112"], "birth_date": "31.02.1990", "given_name": "Jürgen",
        "address": {"postcode": "ABC", "city": "Köln"},
    }, today=dt.date(2026, 1, 1))
    assert [i.value for i in acc.identifiers] == ["ok@example.org"]
    assert {p.field for p in acc.problems} == {"emails[0]", "phones[0]", "loyalty_cards[0]", "birth_date",
                                              "address.postcode"}
    record = to_match_record(acc)
    assert record["given_name"] == "juergen"
    assert record["city"] == "koeln"
    assert record["birth_date"] is None


def test_duplicate_identifiers_collapse():
    acc = normalize_account({"source": "s", "id": "1", "emails": ["A@x.de", "a@X.de "]})
    assert len(acc.identifiers) == 1


@pytest.mark.parametrize(("raw", "fields"), [
    ({"id": "1"}, {"source"}),
    ({"source": "s", "id": ""}, {"id"}),
    ({"source": "s", "id": "1", "emails": "a@b.de"}, {"emails"}),
    ({"source": "s", "id": "1", "address": "Berlin"}, {"address"}),
    ({"source": "s", "id": "1", "given_name": 5}, {"given_name"}),
])
def test_malformed_records_raise_with_fields(raw, fields):
    with pytest.raises(InvalidAccount) as err:
        normalize_account(raw)
    assert {f for f, _ in err.value.violations} == fields


def test_single_identifier_lookup_spellings():
    from services.identity.domain.normalize import normalize_identifier

    assert normalize_identifier("email", "A.B+x@gmail.com") == "ab@gmail.com"
    assert normalize_identifier("phone", "0151 2345678") == "+491512345678"
    assert normalize_identifier("social", "IG:@Anna.S") == "instagram:anna.s"
    assert normalize_identifier("login", "webshop:AnnaS") == "webshop:annas"
    assert normalize_identifier("loyalty", "4111 1111 1111 1111") == "4111111111111111"
    with pytest.raises(ValueError, match="source:login"):
        normalize_identifier("login", "annas")
