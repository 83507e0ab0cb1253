"""The purpose registry's model: lawful basis, channels, data categories, retention, versions."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PURPOSE_ID = re.compile(r"^[a-z][a-z0-9-]{2,62}$")
CATEGORY = re.compile(r"^[a-z][a-z0-9_]{1,62}$")
DEFAULT_CATALOGUE = Path(__file__).with_name("default_purposes.yaml")


class LawfulBasis(enum.StrEnum):
    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"
    VITAL_INTERESTS = "vital_interests"
    PUBLIC_TASK = "public_task"
    LEGITIMATE_INTERESTS = "legitimate_interests"


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    PHONE = "phone"
    POST = "post"
    IN_APP = "in_app"
    PERSONALISATION = "personalisation"


class ValidationError(ValueError):
    """Every problem found, as (field path, description), e.g. ("purposes[3].channels[1]", ...)."""

    def __init__(self, violations: list[tuple[str, str]]):
        self.violations = violations
        super().__init__("; ".join(f"{f}: {d}" for f, d in violations))


PurposeInvalid = ValidationError  # earlier name


@dataclass(frozen=True)
class Purpose:
    purpose_id: str
    version: int
    display_name: str
    description: str
    lawful_basis: LawfulBasis
    data_categories: frozenset[str]
    channels: frozenset[Channel]
    retention_days: int
    requires_fresh_consent: bool = False  # as recorded by the registry for this version
    created_at_ms: int = 0
    notice_version: str | None = None

    def to_fields(self) -> dict[str, Any]:
        """Store representation (no ids or version: the store owns those)."""
        return {"display_name": self.display_name, "description": self.description,
                "lawful_basis": self.lawful_basis.value, "data_categories": sorted(self.data_categories),
                "channels": sorted(c.value for c in self.channels), "retention_days": self.retention_days,
                "requires_fresh_consent": self.requires_fresh_consent}

    @classmethod
    def from_fields(cls, purpose_id: str, version: int, fields: dict[str, Any]) -> Purpose:
        return cls(purpose_id=purpose_id, version=version, display_name=fields.get("display_name", ""),
                   description=fields.get("description", ""), lawful_basis=LawfulBasis(fields["lawful_basis"]),
                   data_categories=frozenset(fields.get("data_categories") or []),
                   channels=frozenset(Channel(c) for c in fields.get("channels") or []),
                   retention_days=int(fields.get("retention_days", 0)),
                   requires_fresh_consent=bool(fields.get("requires_fresh_consent", False)),
                   created_at_ms=int(fields.get("created_at", 0) or 0))


def validate(purpose_id: str, display_name: str, lawful_basis: str | None, data_categories: Iterable[str],
             channels: Iterable[str], retention_days: int, prefix: str = "purpose", id_field: str = "purpose_id"
             ) -> list[tuple[str, str]]:
    """Every problem with a purpose definition, as (field path, description)."""
    v: list[tuple[str, str]] = []
    if not isinstance(purpose_id, str) or not PURPOSE_ID.match(purpose_id):
        v.append((id_field, "3–63 lowercase letters, digits or hyphens, starting with a letter"))
    if not isinstance(display_name, str) or not display_name.strip():
        v.append((f"{prefix}.display_name", "required"))
    if not isinstance(lawful_basis, str) or lawful_basis not in {b.value for b in LawfulBasis}:
        v.append((f"{prefix}.lawful_basis", "required: one of " + ", ".join(b.value for b in LawfulBasis)))
    for i, c in enumerate(data_categories):
        if not isinstance(c, str) or not CATEGORY.match(c):
            v.append((f"{prefix}.data_categories[{i}]", "snake_case category name"))
    for i, c in enumerate(channels):
        if not isinstance(c, str) or c not in {ch.value for ch in Channel}:
            v.append((f"{prefix}.channels[{i}]", "unknown channel"))
    if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days <= 0:
        v.append((f"{prefix}.retention", "required and positive"))
    return v


def validate_purpose(purpose: Purpose, prefix: str = "purpose") -> list[tuple[str, str]]:
    """Every problem with a Purpose value (see `validate`), plus its version and notice version."""
    v = validate(purpose.purpose_id, purpose.display_name, getattr(purpose.lawful_basis, "value", None),
                 sorted(purpose.data_categories, key=str), sorted((getattr(c, "value", c) for c in purpose.channels),
                                                                 key=str),
                 purpose.retention_days, prefix=prefix, id_field=f"{prefix}.purpose_id")
    if isinstance(purpose.version, bool) or not isinstance(purpose.version, int) or purpose.version < 1:
        v.append((f"{prefix}.version", "integer >= 1"))
    if purpose.notice_version is not None and not (isinstance(purpose.notice_version, str)
                                                   and purpose.notice_version.strip()):
        v.append((f"{prefix}.notice_version", "non-empty when given"))
    return v


def ensure_valid(purpose: Purpose) -> Purpose:
    """The purpose itself, or ValidationError listing every problem."""
    problems = validate_purpose(purpose)
    if problems:
        raise ValidationError(problems)
    return purpose


def requires_fresh_consent(old: Purpose, new: Purpose) -> bool:
    """A new version needs fresh consent when it widens use: more data categories or channels,
    longer retention, or a move onto consent from another basis (GDPR Art. 5(1)(b), 7)."""
    return bool(new.data_categories - old.data_categories or new.channels - old.channels
                or new.retention_days > old.retention_days
                or (new.lawful_basis == LawfulBasis.CONSENT and old.lawful_basis != LawfulBasis.CONSENT))


CATALOGUE_KEYS = frozenset({"id", "version", "display_name", "description", "lawful_basis", "data_categories",
                            "channels", "retention_days", "notice_version"})


def load_catalogue(path: Path | str = DEFAULT_CATALOGUE) -> list[Purpose]:
    """The purposes in a YAML catalogue (``purposes: [{id, display_name, lawful_basis, ...}]``).
    Raises ValidationError naming every problem as ``purposes[i].field``."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValidationError([("purposes", f"not valid YAML: {exc}")]) from exc
    items = data.get("purposes") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValidationError([("purposes", "a list of purposes is required")])
    out: list[Purpose] = []
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        at = f"purposes[{i}]"
        if not isinstance(item, dict):
            problems.append((at, "a mapping is required"))
            continue
        problems.extend((f"{at}.{key}", "unknown field") for key in sorted(set(item) - CATALOGUE_KEYS, key=str))
        categories, channels = item.get("data_categories") or [], item.get("channels") or []
        for name, value in (("data_categories", categories), ("channels", channels)):
            if not isinstance(value, list):
                problems.append((f"{at}.{name}", "a list is required"))
        if not isinstance(categories, list) or not isinstance(channels, list):
            continue
        retention = item.get("retention_days")
        found = validate(item.get("id"), item.get("display_name") or "", item.get("lawful_basis"), categories,
                         channels, retention if isinstance(retention, int) else 0, prefix=at, id_field=f"{at}.id")
        problems.extend((f.replace(f"{at}.retention", f"{at}.retention_days"), d) for f, d in found)
        version = item.get("version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            problems.append((f"{at}.version", "integer >= 1"))
        notice = item.get("notice_version")
        if notice is not None and not (isinstance(notice, str | int) and str(notice).strip()):
            problems.append((f"{at}.notice_version", "non-empty when given"))
        if isinstance(item.get("id"), str):
            if item["id"] in seen:
                problems.append((f"{at}.id", f"duplicate of purposes[{seen[item['id']]}]"))
            seen.setdefault(item["id"], i)
        if found or problems:
            continue
        out.append(Purpose(purpose_id=item["id"], version=version, display_name=item["display_name"].strip(),
                           description=str(item.get("description") or ""),
                           lawful_basis=LawfulBasis(item["lawful_basis"]), data_categories=frozenset(categories),
                           channels=frozenset(Channel(c) for c in channels), retention_days=retention,
                           notice_version=None if notice is None else str(notice)))
    if problems:
        raise ValidationError(problems)
    return out
