"""Normalisation of account identifiers and attributes before matching.

Every value is brought to one canonical spelling so that equal things compare equal: e-mail
addresses (case, whitespace, IDNA domains, provider rules for dots and plus tags), phone numbers
(E.164 with a default region, valid numbers only, with their line type), social handles, logins,
loyalty cards (separators, Luhn check digit), names (case, accents, German umlaut spellings, plus a
Kölner Phonetik key for blocking), birth dates, postcodes, streets and cities. A value that cannot
be parsed is left out of matching and reported as a `Problem`; only a malformed record as a whole
(no source or id, wrong JSON shapes) raises `InvalidAccount`. No I/O.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import phonenumbers


@dataclass(frozen=True)
class EmailRule:
    """How a mail provider treats the local part: whether it ignores dots, whether it delivers
    `local+tag@` to `local@` (subaddressing), and the domain its aliases resolve to."""

    ignore_dots: bool
    strip_plus_tag: bool
    canonical_domain: str


# Only providers that document the behaviour for every mailbox are listed. Providers that do not
# deliver plus-tagged addresses to the base mailbox (GMX, WEB.DE, T-Online, Yahoo, which uses
# "-" for separately created disposable addresses) are deliberately absent: there, "a+b@" is a
# different mailbox from "a@" and the tag is kept.
_GMAIL = EmailRule(ignore_dots=True, strip_plus_tag=True, canonical_domain="gmail.com")
EMAIL_RULES: dict[str, EmailRule] = {
    "gmail.com": _GMAIL,
    "googlemail.com": _GMAIL,
    # Microsoft consumer mail (Outlook.com) supports plus addressing on all its domains.
    **{d: EmailRule(False, True, d) for d in (
        "outlook.com", "outlook.de", "outlook.at", "outlook.fr", "outlook.it", "outlook.es",
        "hotmail.com", "hotmail.de", "hotmail.co.uk", "hotmail.fr", "hotmail.it", "hotmail.es",
        "live.com", "live.de", "live.at", "live.co.uk", "live.fr", "live.it", "msn.com")},
    # iCloud Mail: icloud.com, me.com and mac.com are one mailbox family, but an address only
    # exists on the domains the account owns, so the domain is kept.
    **{d: EmailRule(False, True, d) for d in ("icloud.com", "me.com", "mac.com")},
    **{d: EmailRule(False, True, d) for d in ("protonmail.com", "protonmail.ch", "proton.me", "pm.me")},
    "posteo.de": EmailRule(False, True, "posteo.de"),
    **{d: EmailRule(False, True, d) for d in ("fastmail.com", "fastmail.fm")},
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
                   "tt": "tiktok", "yt": "youtube", "li": "linkedin"}
_PROVIDER = re.compile(r"^[a-z0-9]{2,32}$")
_HANDLE = re.compile(r"^[a-z0-9._-]{1,64}$")
# German spellings first (ä → ae, so "Müller" meets "Mueller"), then letters NFKD cannot take apart.
_LETTERS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "æ": "ae", "ø": "oe", "œ": "oe",
                          "ı": "i", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ħ": "h"})
_HOUSE_NUMBER = re.compile(r"^(.*?)[\s,]*(\d+\s*[a-z]?(?:\s*[-/]\s*\d+\s*[a-z]?)?)$")
_STREET_WORD = re.compile(r"\s*(strasse|str)\b")
_POSTCODE_RULES = {"DE": re.compile(r"^\d{5}$"), "AT": re.compile(r"^\d{4}$"), "CH": re.compile(r"^\d{4}$"),
                   "NL": re.compile(r"^\d{4}[A-Z]{2}$"), "PL": re.compile(r"^\d{2}-?\d{3}$"),
                   "FR": re.compile(r"^\d{5}$"), "DK": re.compile(r"^\d{4}$"), "LU": re.compile(r"^\d{4}$")}
_COUNTRY_NAMES = {"deutschland": "DE", "germany": "DE", "deu": "DE", "brd": "DE", "d": "DE",
                  "oesterreich": "AT", "austria": "AT", "aut": "AT", "schweiz": "CH", "switzerland": "CH",
                  "suisse": "CH", "che": "CH", "niederlande": "NL", "netherlands": "NL", "polen": "PL",
                  "poland": "PL", "frankreich": "FR", "france": "FR", "daenemark": "DK", "denmark": "DK",
                  "luxemburg": "LU", "luxembourg": "LU"}
# Birth dates as people type them; each pattern names its groups, the year always has four digits.
_DATE_PATTERNS = (
    re.compile(r"^(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})$"),
    re.compile(r"^(?P<y>\d{4})/(?P<m>\d{1,2})/(?P<d>\d{1,2})$"),
    re.compile(r"^(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})$"),
    re.compile(r"^(?P<d>\d{1,2})\.\s?(?P<m>\d{1,2})\.\s?(?P<y>\d{4})$"),
    re.compile(r"^(?P<d>\d{1,2})/(?P<m>\d{1,2})/(?P<y>\d{4})$"),  # European order, as German forms use
)
IDENTIFIER_KINDS = ("email", "phone", "social", "login", "loyalty")
ACCOUNT_FIELDS = {"source", "id", "emails", "phones", "social", "logins", "loyalty_cards", "given_name",
                  "family_name", "birth_date", "address"}
DEFAULT_LUHN_MIN_DIGITS = 13


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
    # Names a personal e-mail address spells, for an account that lacks them (`spelled_names`):
    # evidence for the model only, never a trait the guards compare nor an attribute shown.
    email_given_name: str | None = None
    email_family_name: str | None = None
    display: Mapping[str, Any] = field(default_factory=dict)  # the values as given, for display
    problems: tuple[Problem, ...] = ()

    @property
    def unique_id(self) -> str:
        return f"{self.source}:{self.external_id}"

    def attributes_dict(self) -> dict[str, Any]:
        """The attributes as the person gave them (trimmed), for display and export."""
        return dict(self.display)


# ---- single values ----------------------------------------------------------------------------
@lru_cache(maxsize=200_000)  # names, streets and cities repeat: a bulk import folds each once
def fold(text: str) -> str:
    """Case, accents and German spellings folded: 'Müller', 'MUELLER', 'Mueller' → 'mueller';
    'José-María' → 'jose maria'. Punctuation and hyphens become single spaces."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_LETTERS)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = re.sub(r"[\W_]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def one_letter_umlauts(folded: str) -> str:
    """A folded text with each umlaut spelt as one letter ('joerg' → 'jorg'): folding writes ö as
    two letters, which would count a slip on it as two typos and keep Müller and Muller apart."""
    return folded.replace("ae", "a").replace("oe", "o").replace("ue", "u")


def normalize_name(raw: str) -> str:
    """A given or family name folded for comparison; raises ValueError when no letter is left."""
    value = fold(raw)
    if not any(c.isalpha() for c in value):
        raise ValueError("name has no letters")
    return value


def normalize_email(raw: str) -> str:
    """Trimmed, lower case, IDNA (punycode) domain, provider rules from `EMAIL_RULES` applied."""
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
    rule = EMAIL_RULES.get(domain)
    if rule:
        if rule.strip_plus_tag:
            local = local.split("+", 1)[0]
        if rule.ignore_dots:
            local = local.replace(".", "")
        domain = rule.canonical_domain
    if not local:
        raise ValueError("e-mail local part is empty")
    return f"{local}@{domain}"


_LINE_TYPES = {phonenumbers.PhoneNumberType.MOBILE: "mobile", phonenumbers.PhoneNumberType.FIXED_LINE: "fixed"}


_LOCAL_SEPARATORS = re.compile(r"[._-]+")


def spelled_names(raw_email: str) -> tuple[str, str] | None:
    """The two names a personal address spells — "anna.schmidt84@…", "schmidt_anna@…" → (anna,
    schmidt) in the order written — or None: the local part before any +tag, split at dots,
    underscores or hyphens into exactly two parts, digits dropped, each at least two letters,
    folded as names are. A role address (info@) spells nobody, nor does one with a role word
    among its parts (familie.mueller@, info.berlin@)."""
    local = unicodedata.normalize("NFKC", raw_email).strip().lower().rsplit("@", 1)[0].split("+", 1)[0]
    if local in ROLE_LOCAL_PARTS:
        return None
    parts = [fold(re.sub(r"\d+", "", p)) for p in _LOCAL_SEPARATORS.split(local)]
    parts = [p for p in parts if p]
    if len(parts) != 2 or not all(len(p) >= 2 and p.isalpha() and p not in ROLE_LOCAL_PARTS for p in parts):
        return None
    return parts[0], parts[1]


def _names_from_emails(emails: list[str], given: str | None, family: str | None) -> tuple[str | None, str | None]:
    """(given, family) the first spelling address gives an account without a family name: both
    when it has no given name either, else the family name beside its own given name. `emails`:
    the addresses as given that parsed (one that does not is kept out of matching)."""
    if family is not None:
        return None, None
    for raw in emails:
        spelled = spelled_names(raw)
        if spelled is None:
            continue
        if given is None:
            return spelled
        if given in spelled:
            return None, spelled[1] if spelled[0] == given else spelled[0]
    return None, None


def normalize_phone(raw: str, default_region: str = "DE") -> tuple[str, str]:
    """(E.164, line type "mobile" | "fixed" | "unknown"). '0049…', '+49 (0)…' and national
    '0151…' spellings give the same number. Numbers of a possible length for their region are
    accepted even where `phonenumbers` does not know the range as assigned (number plans change
    faster than the library; a canonical spelling is what matching needs); line types come from
    ranges it knows. Landlines are shared by households, hence the line type."""
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number") from exc
    if not phonenumbers.is_possible_number(number) or len(str(number.national_number)) < 6:
        raise ValueError("not a possible phone number")
    line = _LINE_TYPES.get(phonenumbers.number_type(number), "unknown")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), line


def normalize_social(provider: str, handle: str) -> str:
    """'provider:handle', lower case, leading '@' dropped, provider aliases ('ig', 'fb') resolved."""
    p = fold(provider).replace(" ", "")
    p = _SOCIAL_ALIASES.get(p, p)
    h = unicodedata.normalize("NFKC", handle).strip().lower().lstrip("@")
    if not _PROVIDER.match(p):
        raise ValueError("unknown social provider")
    if not _HANDLE.match(h):
        raise ValueError("social handle has characters a handle cannot have")
    return f"{p}:{h}"


def normalize_login(source: str, raw: str) -> str:
    """'source:login' with the login trimmed and case-folded; the source scopes it (the caller's
    choice of source is kept as given)."""
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


def normalize_loyalty(raw: str, luhn_min_digits: int | None = DEFAULT_LUHN_MIN_DIGITS) -> str:
    """Digits only (spaces, dashes, dots and slashes removed), 6–19 digits.

    Card numbers of `luhn_min_digits` or more digits (default 13) are taken to follow the
    ISO/IEC 7812 layout that printed loyalty and payment cards use, whose last digit is a Luhn
    check digit; a wrong check digit means a typo and the number is rejected. Shorter numbers are
    in-house customer numbers without a check digit and are kept as they are. Pass None to
    switch the check off for a scheme without check digits."""
    digits = re.sub(r"[\s\-./]", "", raw.strip())
    if not digits.isascii() or not digits.isdigit():
        raise ValueError("card number must consist of digits")
    if not 6 <= len(digits) <= 19:
        raise ValueError("card number must have 6–19 digits")
    if luhn_min_digits is not None and len(digits) >= luhn_min_digits and not luhn_ok(digits):
        raise ValueError("card number check digit is wrong")
    return digits


def normalize_date(raw: str, today: dt.date | None = None) -> str:
    """A birth date as ISO 'YYYY-MM-DD' from '1988-04-09', '09.04.1988', '9.4.1988', '1988/04/09',
    '19880409' or '09/04/1988' (day first). Impossible dates, dates before 1900 and dates after
    `today` are rejected."""
    text = raw.strip()
    for pattern in _DATE_PATTERNS:
        m = pattern.match(text)
        if m:
            break
    else:
        raise ValueError("not a date (use YYYY-MM-DD)")
    try:
        parsed = dt.date(int(m["y"]), int(m["m"]), int(m["d"]))
    except ValueError as exc:
        raise ValueError("no such date") from exc
    if parsed.year < 1900 or parsed > (today or dt.date.today()):
        raise ValueError("birth date out of range")
    return parsed.isoformat()


def normalize_country(raw: str) -> str:
    """ISO 3166 alpha-2 in upper case; a few common names ('Deutschland', 'Austria') are mapped."""
    key = fold(raw).replace(" ", "")
    value = _COUNTRY_NAMES.get(key, key.upper())
    if not re.match(r"^[A-Z]{2}$", value):
        raise ValueError("country must be an ISO 3166 two-letter code")
    return value


def normalize_postcode(raw: str, country: str) -> str:
    """Upper case without spaces. DE (and a few neighbours) must match the national format, for
    DE exactly five digits; nothing is padded or guessed."""
    value = re.sub(r"\s+", "", unicodedata.normalize("NFKC", raw).strip().upper())
    rule = _POSTCODE_RULES.get(country)
    if rule and not rule.match(value):
        raise ValueError(f"not a {country} postcode")
    if not re.match(r"^[A-Z0-9-]{3,10}$", value):
        raise ValueError("not a postcode")
    return value


def normalize_street(raw: str) -> tuple[str | None, str | None]:
    """('Hauptstr. 5a') → ('hauptstr', '5a'). The street is folded like names, 'straße',
    'strasse', 'str.' and 'str' all become 'str', and spaces are dropped so that 'Lange Straße'
    and 'Langestr.' compare equal. A trailing house number ('5a', '5 A', '12-14', '3/1') is split
    off and returned without spaces."""
    text = unicodedata.normalize("NFKC", raw).strip().casefold()
    number = None
    m = _HOUSE_NUMBER.match(text)
    if m and m.group(1):
        text, number = m.group(1), re.sub(r"\s+", "", m.group(2))
    street = _STREET_WORD.sub("str", fold(text)).replace(" ", "")
    return (street or None), number


@lru_cache(maxsize=200_000)
def cologne_phonetic(name: str | None) -> str | None:
    """Kölner Phonetik of a (folded) name: the usual phonetic code for German names, for blocking.
    'Müller', 'Mueller' and 'Muller' share a code, as do 'Meyer' and 'Maier'."""
    if not name:
        return None
    s = fold(name)
    s = re.sub(r"[^a-z]", "", one_letter_umlauts(s))
    if not s:
        return None
    codes = []
    for i, c in enumerate(s):
        prev = s[i - 1] if i else ""
        nxt = s[i + 1] if i + 1 < len(s) else ""
        if c in "aeijouy":
            code = "0"
        elif c == "b":
            code = "1"
        elif c == "p":
            code = "3" if nxt == "h" else "1"
        elif c in "dt":
            code = "8" if nxt in ("c", "s", "z") else "2"
        elif c in "fvw":
            code = "3"
        elif c in "gkq":
            code = "4"
        elif c == "c":
            if i == 0:
                code = "4" if nxt and nxt in "ahkloqrux" else "8"
            else:
                code = "8" if prev in ("s", "z") or not nxt or nxt not in "ahkoqux" else "4"
        elif c == "x":
            code = "8" if prev in ("c", "k", "q") else "48"
        elif c == "l":
            code = "5"
        elif c in "mn":
            code = "6"
        elif c == "r":
            code = "7"
        elif c in "sz":
            code = "8"
        else:  # h and anything else carry no code
            code = ""
        codes.append(code)
    out = ""
    for digit in "".join(codes):
        if not out or out[-1] != digit:
            out += digit
    out = out[:1] + out[1:].replace("0", "")
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


def normalize_account(raw: Mapping[str, Any], *, default_region: str = "DE", today: dt.date | None = None,
                      luhn_min_digits: int | None = DEFAULT_LUHN_MIN_DIGITS) -> NormalizedAccount:
    """One account of the JSON import contract, normalised.

    Raises `InvalidAccount` (with every violation) only when the record's shape is wrong: not an
    object, `source` or `id` missing, empty or not a string (or `source` containing ':', which
    would make "source:id" ambiguous), a list field that is not a list, `address` not an object,
    a scalar field that is not a string. Every unparseable value is left out and reported in
    `problems`; duplicates of one identifier collapse."""
    if not isinstance(raw, Mapping):
        raise InvalidAccount([("", "an account must be a JSON object")])
    violations: list[tuple[str, str]] = []
    problems: list[Problem] = []
    for key in ("source", "id"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            violations.append((key, "required, a non-empty string"))
    source = raw["source"].strip() if isinstance(raw.get("source"), str) else ""
    external_id = raw["id"].strip() if isinstance(raw.get("id"), str) else ""
    if ":" in source:
        violations.append(("source", "must not contain ':'"))
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
    country_raw = _text(address, "country", violations, "address.country")
    if violations:
        raise InvalidAccount(violations)

    identifiers: dict[tuple[str, str], Identifier] = {}

    def add(kind: str, field_name: str, fn: Any, *args: Any) -> bool:
        try:
            result = fn(*args)
        except (ValueError, TypeError, AttributeError) as exc:
            problems.append(Problem(field_name, str(exc) if isinstance(exc, ValueError) else "must be a string"))
            return False
        value, line = result if isinstance(result, tuple) else (result, None)
        identifiers.setdefault((kind, value), Identifier(kind, value, line))
        return True

    parsed_emails = [v for i, v in enumerate(emails) if add("email", f"emails[{i}]", normalize_email, v)]
    for i, v in enumerate(phones):
        add("phone", f"phones[{i}]", normalize_phone, v, default_region)
    for i, v in enumerate(socials):
        if isinstance(v, Mapping):
            add("social", f"social[{i}]", normalize_social, v.get("provider") or "", v.get("handle") or "")
        else:
            problems.append(Problem(f"social[{i}]", "must be an object with provider and handle"))
    for i, v in enumerate(logins):
        add("login", f"logins[{i}]", normalize_login, source, v)
    for i, v in enumerate(cards):
        card = str(v) if isinstance(v, int) and not isinstance(v, bool) else v
        add("loyalty", f"loyalty_cards[{i}]", normalize_loyalty, card, luhn_min_digits)

    def attr(field_name: str, fn: Any, value: str | None) -> Any:
        if value is None:
            return None
        try:
            return fn(value)
        except ValueError as exc:
            problems.append(Problem(field_name, str(exc)))
            return None

    country = attr("address.country", normalize_country, country_raw)
    if country is None:
        country = default_region.upper()
    given_name = attr("given_name", normalize_name, given)
    family_name = attr("family_name", normalize_name, family)
    birth_date = attr("birth_date", lambda v: normalize_date(v, today), birth)
    postcode = attr("address.postcode", lambda v: normalize_postcode(v, country), postcode_raw)
    street, number = normalize_street(street_raw) if street_raw else (None, None)
    if street_raw and street is None:
        problems.append(Problem("address.street", "street has no name"))
    city = attr("address.city", normalize_name, city_raw)
    email_given, email_family = _names_from_emails(parsed_emails, given_name, family_name)
    display = {k: v for k, v in {
        "given_name": given, "family_name": family, "birth_date": birth_date,
        "address": {k: v for k, v in {"street": street_raw, "postcode": postcode, "city": city_raw,
                                      "region": region_raw, "country": country if address else None}.items() if v},
    }.items() if v}
    return NormalizedAccount(
        source=source, external_id=external_id, identifiers=tuple(identifiers.values()),
        given_name=given_name, family_name=family_name, email_given_name=email_given,
        email_family_name=email_family, birth_date=birth_date, street=street,
        house_number=number, postcode=postcode, city=city, country=country, display=display,
        problems=tuple(problems))


# A handle this short, or a role name ("info", "shop"), is chosen by many people: no evidence.
MIN_MODEL_HANDLE_LENGTH = 4


def model_handle(ident: Identifier) -> str | None:
    """The bare handle of a social identifier ("provider:handle") or a login ("source:login") as
    the model compares them across kinds and sources (both already case-folded), or None: for other
    kinds, and for handles that tell people apart too poorly — shorter than
    MIN_MODEL_HANDLE_LENGTH, role names (as role e-mail addresses), digits only (a source system's
    customer number is another system's other customer), or an e-mail address used as login (the
    e-mail comparison's evidence)."""
    if ident.kind not in ("social", "login"):
        return None
    handle = ident.value.split(":", 1)[1]
    if (len(handle) < MIN_MODEL_HANDLE_LENGTH or handle in ROLE_LOCAL_PARTS or handle.isdigit()
            or "@" in handle):
        return None
    return handle


def model_handles(acc: NormalizedAccount) -> list[str]:
    """The account's social handles and login names the model compares (`model_handle`), sorted."""
    return sorted({h for h in map(model_handle, acc.identifiers) if h is not None})


def to_match_record(acc: NormalizedAccount) -> dict[str, Any]:
    """The flat record the probabilistic model compares; absent values are None or []."""
    return {
        "unique_id": acc.unique_id,
        "given_name": acc.given_name,
        "family_name": acc.family_name,
        "given_name_phonetic": cologne_phonetic(acc.given_name),
        "family_name_phonetic": cologne_phonetic(acc.family_name),
        "birth_date": acc.birth_date,
        "street": acc.street,
        "house_number": acc.house_number,
        "postcode": acc.postcode,
        "city": acc.city,
        # Role addresses are shared by whoever works there: they never link, and the model weighs
        # them apart from personal addresses (colleagues share them; one person's accounts do too).
        "emails": sorted(i.value for i in acc.identifiers if i.kind == "email" and i.links),
        "role_emails": sorted(i.value for i in acc.identifiers if i.kind == "email" and not i.links),
        "phones": sorted(i.value for i in acc.identifiers if i.kind == "phone"),
        **({"email_given_name": acc.email_given_name} if acc.email_given_name else {}),
        **({"email_family_name": acc.email_family_name} if acc.email_family_name else {}),
    }


def to_model_record(acc: NormalizedAccount) -> dict[str, Any]:
    """The match record with the handles the model compares (`model_handles`): what training,
    bulk and real-time linking all score."""
    return {**to_match_record(acc), "handles": model_handles(acc)}
