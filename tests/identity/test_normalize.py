"""Normalisation of every identifier kind and attribute: good and bad values, umlauts, accents,
other scripts, and problems reported instead of raised."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from services.identity.domain.blocking import block_keys
from services.identity.domain.guards import Traits
from services.identity.domain.model_settings import prepare
from services.identity.domain.normalize import (
    EMAIL_RULES,
    Identifier,
    InvalidAccount,
    NormalizedAccount,
    Problem,
    cologne_phonetic,
    fold,
    luhn_ok,
    normalize_account,
    normalize_country,
    normalize_date,
    normalize_email,
    normalize_identifier,
    normalize_login,
    normalize_loyalty,
    normalize_name,
    normalize_phone,
    normalize_postcode,
    normalize_social,
    normalize_street,
    spelled_names,
    to_match_record,
)

TODAY = dt.date(2026, 11, 22)


# ---- e-mail -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    (" Anna.Schmidt@Example.ORG ", "anna.schmidt@example.org"),
    ("\tANNA@WEB.DE\n", "anna@web.de"),
    ("a.n.n.a+shop@gmail.com", "anna@gmail.com"),
    ("Anna.Schmidt@googlemail.com", "annaschmidt@gmail.com"),
    ("anna.schmidt+news+x@GoogleMail.com", "annaschmidt@gmail.com"),
    ("max+news@outlook.com", "max@outlook.com"),
    ("max.m+x@hotmail.de", "max.m@hotmail.de"),  # dots matter outside Gmail
    ("max+x@live.co.uk", "max@live.co.uk"),
    ("max+x@icloud.com", "max@icloud.com"),
    ("max+x@me.com", "max@me.com"),
    ("max+news@web.de", "max+news@web.de"),  # WEB.DE has no plus addressing: a different mailbox
    ("max+news@gmx.de", "max+news@gmx.de"),
    ("max+news@gmx.net", "max+news@gmx.net"),
    ("first.last@t-online.de", "first.last@t-online.de"),
    ("jörg@müller.de", "jörg@xn--mller-kva.de"),
    ("Info@Bäckerei-Schmidt.DE", "info@xn--bckerei-schmidt-0kb.de"),
    ("mailto:x@y.de", "x@y.de"),
    ("ａｎｎａ@ｗｅｂ.ｄｅ", "anna@web.de"),  # full-width letters (NFKC)
])
def test_email(raw, expected):
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", [
    "", "   ", "no-at-sign", "a@b", "a@@b.de", "a@b@c.de", "a b@c.de", "@web.de", "anna@.de", "anna@web.",
    "anna@web..de", "+tag@gmail.com", "...@gmail.com",
])
def test_bad_email(raw):
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked where it matters
        normalize_email(raw)


def test_email_rules_are_a_small_accurate_table():
    assert EMAIL_RULES["googlemail.com"].canonical_domain == "gmail.com"
    assert EMAIL_RULES["gmail.com"].ignore_dots
    assert {domain for domain, rule in EMAIL_RULES.items() if rule.ignore_dots} == {"gmail.com", "googlemail.com"}
    for no_subaddressing in ("gmx.de", "gmx.net", "web.de", "t-online.de", "yahoo.de", "yahoo.com"):
        assert no_subaddressing not in EMAIL_RULES


# ---- phone ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    ("+49 151 23456789", "+4915123456789"),
    ("0151/23456789", "+4915123456789"),
    ("0151-234 567 89", "+4915123456789"),
    ("0049 151 23456789", "+4915123456789"),
    ("0049151 23456789", "+4915123456789"),
    ("+49 (0)151 23456789", "+4915123456789"),
    ("(030) 1234 5678", "+493012345678"),
    ("+49 30 12345678", "+493012345678"),
    ("+43 1 5880000", "+4315880000"),
])
def test_phone_to_e164(raw, expected):
    assert normalize_phone(raw, "DE")[0] == expected


def test_phone_line_type_and_region():
    assert normalize_phone("030 12345678") == ("+493012345678", "fixed")
    assert normalize_phone("0170 1234567") == ("+491701234567", "mobile")
    assert normalize_phone("01 5880000", "AT")[0] == "+4315880000"
    assert normalize_phone("020 7946 0018", "GB")[0] == "+442079460018"


@pytest.mark.parametrize("raw", ["", "123", "abc", "+49", "0151 23", "+49 30 0", "+999 1234567"])
def test_bad_phone(raw):
    with pytest.raises(ValueError):  # noqa: PT011
        normalize_phone(raw)


# ---- social, login, loyalty -------------------------------------------------------------------
@pytest.mark.parametrize(("provider", "handle", "expected"), [
    ("IG", "@Anna.S", "instagram:anna.s"),
    ("insta", "anna.s", "instagram:anna.s"),
    ("Instagram", " @@anna_s ", "instagram:anna_s"),
    ("Facebook", "max_m", "facebook:max_m"),
    ("fb", "Max.M", "facebook:max.m"),
    ("TikTok", "max-m", "tiktok:max-m"),
])
def test_social(provider, handle, expected):
    assert normalize_social(provider, handle) == expected


@pytest.mark.parametrize(("provider", "handle"), [
    ("instagram", "bad handle!"), ("instagram", ""), ("instagram", "@"), ("instagram", "änna"),
    ("", "anna"), ("?", "anna"), ("instagram", "x" * 65),
])
def test_bad_social(provider, handle):
    with pytest.raises(ValueError):  # noqa: PT011
        normalize_social(provider, handle)


def test_login():
    assert normalize_login("webshop", "  AnnaS ") == "webshop:annas"
    assert normalize_login("webshop", "STRASSE") == normalize_login("webshop", "Straße")  # casefold
    for bad in ("", "   ", "x" * 129):
        with pytest.raises(ValueError, match="login"):
            normalize_login("webshop", bad)


def test_loyalty_cards():
    assert normalize_loyalty("6001 2345 6789") == "600123456789"  # 12 digits: in-house, no check digit
    assert normalize_loyalty("4111-1111-1111-1111") == "4111111111111111"  # Luhn ok
    assert normalize_loyalty(" 4111.1111.1111.1111 ") == "4111111111111111"
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")
    with pytest.raises(ValueError, match="check digit"):
        normalize_loyalty("4111 1111 1111 1112")
    with pytest.raises(ValueError, match="digits"):
        normalize_loyalty("12AB34")
    with pytest.raises(ValueError, match="digits"):
        normalize_loyalty("١٢٣٤٥٦٧")  # Arabic-Indic digits are not card digits
    with pytest.raises(ValueError, match="6–19"):
        normalize_loyalty("12345")
    with pytest.raises(ValueError, match="6–19"):
        normalize_loyalty("1" * 20)


def test_loyalty_check_digit_is_configurable():
    assert normalize_loyalty("4111 1111 1111 1112", luhn_min_digits=None) == "4111111111111112"
    with pytest.raises(ValueError, match="check digit"):
        normalize_loyalty("79927398710", luhn_min_digits=10)
    acc = normalize_account({"source": "till", "id": "1", "loyalty_cards": ["4111111111111112"]},
                            luhn_min_digits=None)
    assert acc.identifiers == (Identifier("loyalty", "4111111111111112"),)


# ---- names ------------------------------------------------------------------------------------
def test_names_fold_case_accents_and_umlaut_spellings():
    assert fold("Müller") == fold("MUELLER") == fold("mueller") == fold("MÜLLER") == "mueller"
    assert fold("Straße") == fold("STRASSE") == "strasse"
    assert fold("José-María") == "jose maria"
    assert fold("  Anna -  Lena ") == "anna lena"
    assert fold("O'Brien") == "o brien"
    assert fold("Zoë") == "zoe"
    assert fold("Yılmaz") == fold("Yilmaz") == "yilmaz"
    assert fold("Łukasz Wałęsa") == "lukasz walesa"
    assert fold("François") == "francois"
    assert fold("Ｍüller") == "mueller"  # full-width capital M
    assert fold("Müller") == fold("Mu\u0308ller")  # decomposed umlaut
    assert fold("Ørsted") == "oersted"
    assert fold("Иван") == "иван"  # other scripts are kept, only case-folded


def test_normalize_name_rejects_names_without_letters():
    assert normalize_name(" Anna-Lena ") == "anna lena"
    for bad in ("---", "123", "  .  "):
        with pytest.raises(ValueError, match="letters"):
            normalize_name(bad)


@pytest.mark.parametrize(("a", "b"), [
    ("Müller", "Mueller"), ("Müller", "Muller"), ("Meyer", "Maier"), ("Meier", "Mayer"), ("Schmidt", "Schmitt"),
    ("Schmidt", "Schmid"), ("Christoph", "Kristof"), ("Philipp", "Filip"), ("Jürgen", "Juergen"), ("Weiß", "Weiss"),
])
def test_cologne_phonetic_groups_german_spellings(a, b):
    assert cologne_phonetic(a) == cologne_phonetic(b)


def test_cologne_phonetic_reference_codes():
    assert cologne_phonetic("Wikipedia") == "3412"
    assert cologne_phonetic("Müller-Lüdenscheidt") == "65752682"
    assert cologne_phonetic("Breschnew") == "17863"
    assert cologne_phonetic("Xaver") == "4837"  # X at the start: 48
    assert cologne_phonetic("Cäsar") == "487"  # C at the start before a: 4
    assert cologne_phonetic("Celine") == "856"  # C at the start before e: 8
    assert cologne_phonetic("Bach") == "14"
    assert cologne_phonetic("Anna") == "06"  # a leading vowel keeps its 0
    assert cologne_phonetic("Schmidt") != cologne_phonetic("Schneider")
    assert cologne_phonetic(None) is None
    assert cologne_phonetic("") is None
    assert cologne_phonetic("123") is None


# ---- dates, postcodes, streets, cities, countries ---------------------------------------------
@pytest.mark.parametrize("raw", ["1988-04-09", "09.04.1988", "9.4.1988", "1988/04/09", "19880409", " 1988-4-9 ",
                                 "09/04/1988", "9. 4. 1988"])
def test_dates(raw):
    assert normalize_date(raw, TODAY) == "1988-04-09"


@pytest.mark.parametrize("raw", ["31.02.1988", "29.02.1987", "1988-13-01", "00.01.1988", "1850-01-01",
                                 "31.12.1899", "2030-01-01", "23.11.2026", "yesterday", "", "88-04-09",
                                 "9.4.88", "1988409", "1988-04-09T10:00"])
def test_bad_dates(raw):
    with pytest.raises(ValueError):  # noqa: PT011
        normalize_date(raw, TODAY)


def test_date_limits():
    assert normalize_date("29.02.1988", TODAY) == "1988-02-29"
    assert normalize_date("1900-01-01", TODAY) == "1900-01-01"
    assert normalize_date("22.11.2026", TODAY) == "2026-11-22"


def test_postcodes():
    assert normalize_postcode(" 10115 ", "DE") == "10115"
    assert normalize_postcode("01067", "DE") == "01067"  # leading zero kept
    for bad in ("1011", "101155", "1067", "D-10115", "ABCDE", "10 11"):
        with pytest.raises(ValueError, match="DE postcode"):
            normalize_postcode(bad, "DE")
    assert normalize_postcode("1010", "AT") == "1010"
    assert normalize_postcode("1234 ab", "NL") == "1234AB"
    assert normalize_postcode("sw1a 1aa", "GB") == "SW1A1AA"
    with pytest.raises(ValueError, match="postcode"):
        normalize_postcode("!!", "GB")


@pytest.mark.parametrize(("raw", "expected"), [
    ("Hauptstraße 5a", ("hauptstr", "5a")),
    ("Hauptstr. 5a", ("hauptstr", "5a")),
    ("Hauptstr 5 A", ("hauptstr", "5a")),
    ("HAUPTSTRASSE 5a", ("hauptstr", "5a")),
    ("Lange Straße 12-14", ("langestr", "12-14")),
    ("Langestr. 12 - 14", ("langestr", "12-14")),
    ("Müllerstraße 3/1", ("muellerstr", "3/1")),
    ("Friedrich-Ebert-Str. 7", ("friedrichebertstr", "7")),
    ("Straße des 17. Juni 135", ("strdes17juni", "135")),
    ("Am Markt", ("ammarkt", None)),
    ("Strandweg 4", ("strandweg", "4")),
    ("Kastanienallee, 9", ("kastanienallee", "9")),
])
def test_street_and_house_number(raw, expected):
    assert normalize_street(raw) == expected


def test_country():
    assert normalize_country("de") == "DE"
    assert normalize_country("Deutschland") == "DE"
    assert normalize_country("Österreich") == "AT"
    with pytest.raises(ValueError, match="two-letter"):
        normalize_country("Atlantis")


# ---- identifiers by kind ----------------------------------------------------------------------
def test_single_identifier_lookup_spellings():
    assert normalize_identifier("email", "A.B+x@gmail.com") == "ab@gmail.com"
    assert normalize_identifier("phone", "0151 23456789") == "+4915123456789"
    assert normalize_identifier("social", "IG:@Anna.S") == "instagram:anna.s"
    assert normalize_identifier("login", "webshop:AnnaS") == "webshop:annas"
    assert normalize_identifier("loyalty", "4111 1111 1111 1111") == "4111111111111111"
    with pytest.raises(ValueError, match="source:login"):
        normalize_identifier("login", "annas")
    with pytest.raises(ValueError, match="unknown identifier kind"):
        normalize_identifier("fax", "x:1")


# ---- whole accounts ---------------------------------------------------------------------------
FULL = {
    "source": "webshop", "id": "A-1001", "emails": [" Anna.S+shop@GoogleMail.com "],
    "phones": ["0151/23456789", "030 12345678"], "social": [{"provider": "IG", "handle": "@Anna.S"}],
    "logins": ["AnnaS"], "loyalty_cards": ["4111 1111 1111 1111"], "given_name": "Änne", "family_name": "Müller",
    "birth_date": "9.4.1988",
    "address": {"street": "Hauptstr. 5", "postcode": "10115", "city": "Berlin", "region": "BE", "country": "DE"},
}


def test_full_account():
    acc = normalize_account(FULL, today=TODAY)
    assert isinstance(acc, NormalizedAccount)
    assert (acc.source, acc.external_id, acc.unique_id) == ("webshop", "A-1001", "webshop:A-1001")
    assert acc.identifiers == (
        Identifier("email", "annas@gmail.com"),
        Identifier("phone", "+4915123456789", "mobile"),
        Identifier("phone", "+493012345678", "fixed"),
        Identifier("social", "instagram:anna.s"),
        Identifier("login", "webshop:annas"),
        Identifier("loyalty", "4111111111111111"),
    )
    assert (acc.given_name, acc.family_name, acc.birth_date) == ("aenne", "mueller", "1988-04-09")
    assert (acc.street, acc.house_number, acc.postcode, acc.city, acc.country) == ("hauptstr", "5", "10115",
                                                                                    "berlin", "DE")
    assert acc.problems == ()
    assert acc.attributes_dict()["given_name"] == "Änne"  # the spelling as given, for display
    with pytest.raises(dataclasses.FrozenInstanceError):
        acc.source = "x"  # type: ignore[misc]


def test_match_record():
    record = to_match_record(normalize_account(FULL, today=TODAY))
    assert record == {
        "unique_id": "webshop:A-1001", "given_name": "aenne", "family_name": "mueller",
        "given_name_phonetic": cologne_phonetic("aenne"), "family_name_phonetic": "657",
        "birth_date": "1988-04-09", "street": "hauptstr", "house_number": "5", "postcode": "10115",
        "city": "berlin", "emails": ["annas@gmail.com"], "phones": ["+4915123456789", "+493012345678"],
        "role_emails": [],
    }


def test_match_record_keeps_role_addresses_apart_from_personal_ones():
    """A role address never links, but the model weighs it as evidence of its own: the people who
    use info@ of one firm are few, and names tell them apart."""
    record = to_match_record(normalize_account(
        {"source": "webshop", "id": "W-7", "emails": [" Info@Firma-7.de", "kontakt@firma-7.de", "ida@web.de"]}))
    assert record["emails"] == ["ida@web.de"]
    assert record["role_emails"] == ["info@firma-7.de", "kontakt@firma-7.de"]


def test_minimal_account_has_empty_match_record():
    acc = normalize_account({"source": "newsletter", "id": "N-1"})
    assert acc.identifiers == ()
    assert acc.problems == ()
    assert acc.country == "DE"
    record = to_match_record(acc)
    assert record["unique_id"] == "newsletter:N-1"
    assert record["emails"] == []
    assert record["phones"] == []
    assert record["role_emails"] == []
    assert all(record[k] is None for k in ("given_name", "family_name", "birth_date", "street", "house_number",
                                           "postcode", "city", "given_name_phonetic", "family_name_phonetic"))


def test_account_reports_problems_instead_of_failing():
    acc = normalize_account({
        "source": "till", "id": "T-1", "emails": ["broken", "ok@example.org", 5], "phones": ["12", None],
        "social": ["instagram:anna", {"provider": "ig", "handle": "bad handle"}],
        "loyalty_cards": ["4111 1111 1111 1112"], "birth_date": "31.02.1990", "given_name": "Jürgen",
        "family_name": "---", "logins": [""],
        "address": {"postcode": "ABC", "city": "Köln", "country": "Atlantis"},
    }, today=dt.date(2026, 1, 1))
    assert [i.value for i in acc.identifiers] == ["ok@example.org"]
    assert {p.field for p in acc.problems} == {
        "emails[0]", "emails[2]", "phones[0]", "phones[1]", "social[0]", "social[1]", "loyalty_cards[0]",
        "birth_date", "family_name", "logins[0]", "address.postcode", "address.country"}
    assert all(isinstance(p, Problem) and p.reason for p in acc.problems)
    assert acc.country == "DE"  # unknown country: the default region is assumed
    record = to_match_record(acc)
    assert record["given_name"] == "juergen"
    assert record["family_name"] is None
    assert record["city"] == "koeln"
    assert record["birth_date"] is None


def test_region_and_numeric_card():
    acc = normalize_account({"source": "app", "id": "1", "phones": ["01 5880000"], "loyalty_cards": [600123456789],
                             "address": {"postcode": "1010", "country": "at"}}, default_region="AT")
    assert [i.value for i in acc.identifiers] == ["+4315880000", "600123456789"]
    assert (acc.postcode, acc.country) == ("1010", "AT")


def test_duplicate_identifiers_collapse():
    acc = normalize_account({"source": "s", "id": "1", "emails": ["A@x.de", "a@X.de "],
                             "phones": ["+49 151 23456789", "0151 23456789"]})
    assert len(acc.identifiers) == 2


@pytest.mark.parametrize(("raw", "fields"), [
    ({"id": "1"}, {"source"}),
    ({"source": "s"}, {"id"}),
    ({"source": "s", "id": ""}, {"id"}),
    ({"source": " ", "id": "1"}, {"source"}),
    ({"source": "s", "id": 1}, {"id"}),
    ({"source": ["s"], "id": None}, {"source", "id"}),
    ({"source": "web:shop", "id": "1"}, {"source"}),
    ({"source": "s", "id": "1", "emails": "a@b.de"}, {"emails"}),
    ({"source": "s", "id": "1", "phones": {"0151": 1}, "social": "ig"}, {"phones", "social"}),
    ({"source": "s", "id": "1", "logins": "x", "loyalty_cards": 123}, {"logins", "loyalty_cards"}),
    ({"source": "s", "id": "1", "address": "Berlin"}, {"address"}),
    ({"source": "s", "id": "1", "address": {"postcode": 10115}}, {"address.postcode"}),
    ({"source": "s", "id": "1", "given_name": 5}, {"given_name"}),
    ({"source": "s", "id": "1", "birth_date": 19880409}, {"birth_date"}),
])
def test_malformed_records_raise_with_fields(raw, fields):
    with pytest.raises(InvalidAccount) as err:
        normalize_account(raw)
    assert {f for f, _ in err.value.violations} == fields
    assert isinstance(err.value, ValueError)


def test_not_an_object():
    with pytest.raises(InvalidAccount):
        normalize_account(["source", "id"])  # type: ignore[arg-type]


@pytest.mark.parametrize(("raw", "expected"), [
    ("Helga.Hartkaemper79@yahoo.de", ("helga", "hartkaemper")),
    (" schmidt_anna+shop@gmail.com", ("schmidt", "anna")),  # the order written; +tag and digits dropped
    ("jörg-müller@web.de", ("joerg", "mueller")),  # folded as names are
    ("anna@web.de", None),  # one part
    ("anna.maria.schmidt@web.de", None),  # three: which two are the names?
    ("a.schmidt@web.de", None),  # an initial is no name
    ("info@firma-7.de", None),  # a role address spells nobody
    ("familie.mueller@web.de", None),  # nor one with a role word among its parts
    ("info.berlin@firma-7.de", None),
    ("1984.2001@web.de", None),
    ("o'brien.sean@web.de", None),
])
def test_spelled_names(raw, expected):
    assert spelled_names(raw) == expected


def test_an_account_without_names_is_compared_by_those_its_address_spells():
    """Evidence for the model only: the spelled names stand in for missing ones when a record is
    compared (and blocked), never as traits the guards compare nor as attributes shown."""
    nameless = normalize_account({"source": "newsletter", "id": "N-1",
                                  "emails": ["not an address", "Helga.Hartkaemper79@yahoo.de"]})
    assert (nameless.given_name, nameless.family_name) == (None, None)
    assert (nameless.email_given_name, nameless.email_family_name) == ("helga", "hartkaemper")
    assert "given_name" not in nameless.attributes_dict()
    record = to_match_record(nameless)
    assert record["given_name"] is None
    assert record["email_given_name"] == "helga"
    assert Traits.of(record) == Traits()
    prepared = prepare(record)
    assert (prepared["given_name"], prepared["family_name"]) == ("helga", "hartkaemper")
    assert prepared["family_name_phonetic"] == cologne_phonetic("hartkaemper")
    named = to_match_record(normalize_account({"source": "loyalty", "id": "L-1", "given_name": "Helga",
                                               "family_name": "Hartkämper"}))
    assert dict(block_keys(record))["name_pair"] == dict(block_keys(named))["name_pair"]
    # A given name of its own keeps it; the address adds the family name beside it.
    given_only = normalize_account({"source": "newsletter", "id": "N-2", "given_name": "Helga",
                                    "emails": ["helga.hartkaemper79@yahoo.de"]})
    assert (given_only.email_given_name, given_only.email_family_name) == (None, "hartkaemper")
    # An address that spells somebody else, or an account with a family name, adds nothing.
    for raw in ({"source": "newsletter", "id": "N-3", "given_name": "Anna", "emails": ["helga.hartkaemper@web.de"]},
                {"source": "newsletter", "id": "N-4", "family_name": "Horn", "emails": ["helga.hartkaemper@web.de"]},
                {"source": "newsletter", "id": "N-5", "emails": ["helga.hartkaemper"]}):
        acc = normalize_account(raw)
        assert (acc.email_given_name, acc.email_family_name) == (None, None)
        assert "email_family_name" not in to_match_record(acc)
