"""Normalisation of account identifiers and attributes before matching.

Every value is brought to one canonical spelling so that equal things compare equal: e-mail
addresses (case, whitespace, provider rules for dots and plus tags), phone numbers (E.164 with a
default region), social handles, logins, loyalty cards (separators, Luhn check digit), names
(case, accents, German umlaut spellings), dates and postcodes. A value that cannot be parsed is
left out of matching and reported as a `Problem`; only a malformed record as a whole (no source or
id, wrong JSON shapes) raises `InvalidAccount`.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

# Providers whose mailboxes ignore dots in the local part and/or deliver plus-tagged addresses to
# the base mailbox. Only where the provider documents the behaviour.
_EMAIL_RULES: dict[str, tuple[bool, bool, str]] = {
    # domain: (ignore dots, strip +tag, canonical domain)
    "gmail.com": (True, True, "gmail.com"),
    "googlemail.com": (True, True, "gmail.com"),
    "outlook.com": (False, True, "outlook.com"),
    "outlook.de": (False, True, "outlook.de"),
    "hotmail.com": (False, True, "hotmail.com"),
    "hotmail.de": (False, True, "hotmail.de"),
    "live.com": (False, True, "live.com"),
    "live.de": (False, True, "live.de"),
    "icloud.com": (False, True, "icloud.com"),
    "me.com": (False, True, "me.com"),
    "protonmail.com": (False, True, "protonmail.com"),
    "proton.me": (False, True, "proton.me"),
    "posteo.de": (False, True, "posteo.de"),
}
# Role addresses belong to a function, not a person; colleagues share them. They never link
# accounts deterministically (they still count as evidence in the probabilistic model).
ROLE_LOCAL_PARTS = frozenset({
    "info", "kontakt", "contact", "office", "buero", "mail", "post", "service", "support", "team", "hello",
    "hallo", "admin", "verwaltung", "einkauf", "vertrieb", "sales", "order", "orders", "bestellung", "rechnung",
    "buchhaltung", "empfang", "zentrale", "noreply", "no-reply", "webmaster", "marketing", "presse", "hr",
    "personal", "jobs", "karriere", "kundenservice", "shop", "familie", "family",
})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")
_SOCIAL_ALIASES = {"ig": "instagram", "insta": "instagram", "fb": "facebook", "x": "twitter", "tw": "twitter",
                   "tt": "tiktok", "google": "google", "apple": "apple", "linkedin": "linkedin"}
_HANDLE = re.compile(r"^[a-z0-9._-]{1,64}$")
_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "æ": "ae", "ø": "oe", "œ": "oe"})
_STREET_SUFFIX = re.compile(r"(strasse|str\.?|straße)$")
_HOUSE_NUMBER = re.compile(r"^(.*?)[\s,]*(\d+\s*[a-z]?(?:\s*[-/]\s*\d+\s*[a-z]?)?)$")
_POSTCODE_RULES = {"DE": re.compile(r"^\d{5}$"), "AT": re.compile(r"^\d{4}$"), "CH": re.compile(r"^\d{4}$")}
ACCOUNT_FIELDS = {"source", "id", "emails", "phones", "social", "logins", "loyalty_cards", "given_name",
                  "family_name", "birth_date", "address"}


class InvalidAccount(ValueError):
    """The record as a whole is unusable; `violations` lists (field, description) pairs."""

    def __init__(self, violations: list[tuple[str, str]]):
        self.violations = violations
        super().__init__("; ".join(f"{f}: {d}" for f, d in violations))


@dataclass(frozen=True)
class Identifier:
    kind: str  # email | phone | social | login | loyalty
    value: str
    line_type: str | None = None  # phones: mobile | fixed | unknown

    @property
    def links(self) -> bool:
        """Whether the identifier may link accounts deterministically (role addresses do not)."""
        return not (self.kind == "email" and self.value.split("@", 1)[0] in ROLE_LOCAL_PARTS)


@dataclass(frozen=True)
class Problem:
    field: str
    reason: str


@dataclass(frozen=True)
class NormalizedAccount:
    source: str
    external_id: str
    identifiers: tuple[Identifier, ...] = ()
    given_name: str | None = None
    family_name: str | None = None
    birth_date: str | None = None
    street: str | None = None
    house_number: str | None = None
    postcode: str | None = None
    city: str | None = None
    country: str | None = None
    display: Mapping[str, Any] = field(default_factory=dict)  # the values as given, for display
    problems: tuple[Problem, ...] = ()

    def attributes_dict(self) -> dict[str, Any]:
        """The attributes as the person gave them (trimmed), for display and export."""
        return dict(self.display)


# ---- single values ----------------------------------------------------------------------------
def fold(text: str) -> str:
    """Case, accents and German spellings folded: 'Müller', 'MUELLER', 'Mueller' → 'mueller'."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_UMLAUTS)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = re.sub(r"[^\w\s]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def normalize_email(raw: str) -> str:
    value = unicodedata.normalize("NFKC", raw).strip().lower()
    if value.startswith("mailto:"):
        value = value[7:]
    if not _EMAIL.match(value):
        raise ValueError("not an e-mail address")
    local, domain = value.rsplit("@", 1)
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError("e-mail domain is not a valid host name") from exc
    ignore_dots, strip_tag, canonical = _EMAIL_RULES.get(domain, (False, False, domain))
    if strip_tag and "+" in local:
        local = local.split("+", 1)[0]
    if ignore_dots:
        local = local.replace(".", "")
    if not local:
        raise ValueError("e-mail local part is empty")
    return f"{local}@{canonical}"


def normalize_phone(raw: str, default_region: str = "DE") -> tuple[str, str]:
    """(E.164, line type). '0049…' and '+49…' and national '0151…' all give the same number."""
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number") from exc
    # Possible (right length for the region), not strictly valid: number plans change faster
    # than the library, and a canonical spelling is what matching needs.
    if not phonenumbers.is_possible_number(number) or len(str(number.national_number)) < 6:
        raise ValueError("not a possible phone number")
    kind = phonenumbers.number_type(number)
    line = {phonenumbers.PhoneNumberType.MOBILE: "mobile", phonenumbers.PhoneNumberType.FIXED_LINE: "fixed",
            phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE: "unknown"}.get(kind, "unknown")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), line


def normalize_social(provider: str, handle: str) -> str:
    p = fold(provider).replace(" ", "")
    p = _SOCIAL_ALIASES.get(p, p)
    h = unicodedata.normalize("NFKC", handle).strip().lower().lstrip("@")
    if not p or not re.match(r"^[a-z0-9]{2,32}$", p):
        raise ValueError("unknown social provider")
    if not _HANDLE.match(h):
        raise ValueError("social handle has characters a handle cannot have")
    return f"{p}:{h}"


def normalize_login(source: str, raw: str) -> str:
    value = unicodedata.normalize("NFKC", raw).strip().casefold()
    if not value or len(value) > 128:
        raise ValueError("login must be 1–128 characters")
    return f"{source}:{value}"


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def normalize_loyalty(raw: str) -> str:
    """Digits only. Cards of 13–19 digits carry a Luhn check digit (the ISO/IEC 7812 layout
    loyalty schemes use); shorter in-house numbers have none and are kept as they are."""
    digits = re.sub(r"[\s\-./]", "", raw.strip())
    if not digits.isdigit():
        raise ValueError("card number must consist of digits")
    if not 6 <= len(digits) <= 19:
        raise ValueError("card number must have 6–19 digits")
    if len(digits) >= 13 and not luhn_ok(digits):
        raise ValueError("card number check digit is wrong")
    return digits


def normalize_date(raw: str, today: dt.date | None = None) -> str:
    text = raw.strip()
    for fmt in ("%Y-%m-%d", "%d.%m.%Y", "%Y/%m/%d", "%Y%m%d", "%d/%m/%Y"):
        try:
            parsed = dt.datetime.strptime(text, fmt).date()
            break
        except ValueError:
            continue
    else:
        raise ValueError("not a date (use YYYY-MM-DD)")
    if parsed.year < 1900 or parsed > (today or dt.date.today()):
        raise ValueError("birth date out of range")
    return parsed.isoformat()


def normalize_postcode(raw: str, country: str) -> str:
    value = re.sub(r"\s+", "", raw.strip().upper())
    rule = _POSTCODE_RULES.get(country)
    if rule and not rule.match(value):
        raise ValueError(f"not a {country} postcode")
    if not re.match(r"^[A-Z0-9-]{3,10}$", value):
        raise ValueError("not a postcode")
    return value


def normalize_street(raw: str) -> tuple[str | None, str | None]:
    """('Hauptstr. 5a') → ('hauptstr', '5a'): street folded with 'straße'/'strasse'/'str.' → 'str'."""
    text = unicodedata.normalize("NFKC", raw).strip().casefold()
    number = None
    m = _HOUSE_NUMBER.match(text)
    if m and m.group(1):
        text, number = m.group(1), re.sub(r"\s+", "", m.group(2))
    street = fold(text)
    street = re.sub(r"\s*(strasse|str)\b", "str", street)
    street = street.replace(" ", "")
    return (street or None), number


def cologne_phonetic(name: str | None) -> str | None:
    """Kölner Phonetik of a folded name (the usual phonetic code for German names)."""
    if not name:
        return None
    s = re.sub(r"[^a-z]", "", name.replace("ae", "a").replace("oe", "o").replace("ue", "u").replace("ss", "s"))
    if not s:
        return None
    codes = []
    for i, c in enumerate(s):
        prev = s[i - 1] if i else ""
        nxt = s[i + 1] if i + 1 < len(s) else ""
        if c in "aeijouy":
            code = "0"
        elif c == "h":
            code = ""
        elif c == "b":
            code = "1"
        elif c == "p":
            code = "3" if nxt == "h" else "1"
        elif c in "dt":
            code = "8" if nxt in "csz" else "2"
        elif c in "fvw":
            code = "3"
        elif c in "gkq":
            code = "4"
        elif c == "c":
            if i == 0:
                code = "4" if nxt in "ahkloqrux" else "8"
            else:
                code = "8" if prev in "sz" or nxt not in "ahkoqux" else "4"
        elif c == "x":
            code = "8" if prev in "ckq" else "48"
        elif c == "l":
            code = "5"
        elif c in "mn":
            code = "6"
        elif c == "r":
            code = "7"
        elif c in "sz":
            code = "8"
        else:
            code = ""
        codes.append(code)
    out = ""
    for code in "".join(codes):
        if not out or out[-1] != code:
            out += code
    out = out[0] + out[1:].replace("0", "") if out else out
    return out or None


def normalize_identifier(kind: str, value: str, default_region: str = "DE") -> str:
    """One identifier as a lookup names it: social and login values are written
    "provider:handle" and "source:login". Raises ValueError when it cannot be normalised."""
    if kind == "email":
        return normalize_email(value)
    if kind == "phone":
        return normalize_phone(value, default_region)[0]
    if kind == "loyalty":
        return normalize_loyalty(value)
    prefix, sep, rest = value.partition(":")
    if not sep:
        raise ValueError(f"{kind} identifiers are written {'provider:handle' if kind == 'social' else 'source:login'}")
    if kind == "social":
        return normalize_social(prefix, rest)
    if kind == "login":
        return normalize_login(prefix.strip(), rest)
    raise ValueError(f"unknown identifier kind {kind!r}")


# ---- records ----------------------------------------------------------------------------------
def _list(raw: Mapping[str, Any], key: str, violations: list[tuple[str, str]]) -> list[Any]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        violations.append((key, "must be a list"))
        return []
    return value


def _text(raw: Mapping[str, Any], key: str, violations: list[tuple[str, str]], where: str | None = None) -> str | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        violations.append((where or key, "must be a string"))
        return None
    return value.strip() or None


def normalize_account(raw: Mapping[str, Any], *, default_region: str = "DE",
                      today: dt.date | None = None) -> NormalizedAccount:
    if not isinstance(raw, Mapping):
        raise InvalidAccount([("", "an account must be a JSON object")])
    violations: list[tuple[str, str]] = []
    problems: list[Problem] = []
    for key in ("source", "id"):
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and key == "id":
            continue
        if not isinstance(value, str) or not value.strip():
            violations.append((key, "required, a non-empty string"))
    source = str(raw.get("source", "")).strip()
    external_id = str(raw.get("id", "")).strip()
    if len(source) > 64:
        violations.append(("source", "at most 64 characters"))
    if len(external_id) > 256:
        violations.append(("id", "at most 256 characters"))
    emails, phones = _list(raw, "emails", violations), _list(raw, "phones", violations)
    socials, logins = _list(raw, "social", violations), _list(raw, "logins", violations)
    cards = _list(raw, "loyalty_cards", violations)
    address = raw.get("address") or {}
    if not isinstance(address, Mapping):
        violations.append(("address", "must be an object"))
        address = {}
    given = _text(raw, "given_name", violations)
    family = _text(raw, "family_name", violations)
    birth = _text(raw, "birth_date", violations)
    street_raw = _text(address, "street", violations, "address.street")
    postcode_raw = _text(address, "postcode", violations, "address.postcode")
    city_raw = _text(address, "city", violations, "address.city")
    region_raw = _text(address, "region", violations, "address.region")
    country = (_text(address, "country", violations, "address.country") or default_region).upper()
    if violations:
        raise InvalidAccount(violations)

    identifiers: dict[tuple[str, str], Identifier] = {}

    def add(kind: str, field_name: str, fn: Any, *args: Any) -> None:
        try:
            result = fn(*args)
        except (ValueError, TypeError, AttributeError) as exc:
            problems.append(Problem(field_name, str(exc) if isinstance(exc, ValueError) else "wrong type"))
            return
        value, line = result if isinstance(result, tuple) else (result, None)
        identifiers.setdefault((kind, value), Identifier(kind, value, line))

    for i, v in enumerate(emails):
        add("email", f"emails[{i}]", normalize_email, v)
    for i, v in enumerate(phones):
        add("phone", f"phones[{i}]", lambda x: normalize_phone(x, default_region), v)
    for i, v in enumerate(socials):
        if isinstance(v, Mapping):
            add("social", f"social[{i}]", normalize_social, v.get("provider") or "", v.get("handle") or "")
        else:
            problems.append(Problem(f"social[{i}]", "must be an object with provider and handle"))
    for i, v in enumerate(logins):
        add("login", f"logins[{i}]", normalize_login, source, v)
    for i, v in enumerate(cards):
        add("loyalty", f"loyalty_cards[{i}]", normalize_loyalty, str(v) if isinstance(v, int) else v)

    def attr(field_name: str, fn: Any, value: str | None) -> Any:
        if value is None:
            return None
        try:
            return fn(value)
        except ValueError as exc:
            problems.append(Problem(field_name, str(exc)))
            return None

    birth_date = attr("birth_date", lambda v: normalize_date(v, today), birth)
    postcode = attr("address.postcode", lambda v: normalize_postcode(v, country), postcode_raw)
    street, number = normalize_street(street_raw) if street_raw else (None, None)
    display = {k: v for k, v in {
        "given_name": given, "family_name": family, "birth_date": birth_date,
        "address": {k: v for k, v in {"street": street_raw, "postcode": postcode, "city": city_raw,
                                      "region": region_raw, "country": country if address else None}.items() if v},
    }.items() if v}
    return NormalizedAccount(
        source=source, external_id=external_id, identifiers=tuple(identifiers.values()),
        given_name=fold(given) or None if given else None, family_name=fold(family) or None if family else None,
        birth_date=birth_date, street=street, house_number=number, postcode=postcode,
        city=fold(city_raw) or None if city_raw else None, country=country, display=display,
        problems=tuple(problems))


def to_match_record(acc: NormalizedAccount) -> dict[str, Any]:
    """The flat record the probabilistic model compares."""
    return {
        "unique_id": f"{acc.source}:{acc.external_id}",
        "given_name": acc.given_name,
        "family_name": acc.family_name,
        "given_name_phonetic": cologne_phonetic(acc.given_name),
        "family_name_phonetic": cologne_phonetic(acc.family_name),
        "birth_date": acc.birth_date,
        "street": acc.street,
        "house_number": acc.house_number,
        "postcode": acc.postcode,
        "city": acc.city,
        "emails": sorted(i.value for i in acc.identifiers if i.kind == "email"),
        "phones": sorted(i.value for i in acc.identifiers if i.kind == "phone"),
    }
