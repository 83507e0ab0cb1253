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


class PurposeInvalid(ValueError):
    def __init__(self, violations: list[tuple[str, str]]):
        self.violations = violations
        super().__init__("; ".join(f"{f}: {d}" for f, d in violations))


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
    requires_fresh_consent: bool = False
    created_at_ms: int = 0

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
             channels: Iterable[str], retention_days: int, prefix: str = "purpose") -> list[tuple[str, str]]:
    """Every problem with a purpose definition, as (field path, description)."""
    v: list[tuple[str, str]] = []
    if not PURPOSE_ID.match(purpose_id or ""):
        v.append(("purpose_id", "3–63 lowercase letters, digits or hyphens, starting with a letter"))
    if not (display_name or "").strip():
        v.append((f"{prefix}.display_name", "required"))
    if lawful_basis not in {b.value for b in LawfulBasis}:
        v.append((f"{prefix}.lawful_basis", "required: one of " + ", ".join(b.value for b in LawfulBasis)))
    for i, c in enumerate(data_categories):
        if not CATEGORY.match(c):
            v.append((f"{prefix}.data_categories[{i}]", "snake_case category name"))
    for i, c in enumerate(channels):
        if c not in {ch.value for ch in Channel}:
            v.append((f"{prefix}.channels[{i}]", "unknown channel"))
    if retention_days <= 0:
        v.append((f"{prefix}.retention", "required and positive"))
    return v


def requires_fresh_consent(old: Purpose, new: Purpose) -> bool:
    """A new version needs fresh consent when it widens use: more data categories or channels,
    longer retention, or a move onto consent from another basis (GDPR Art. 5(1)(b), 7)."""
    return bool(new.data_categories - old.data_categories or new.channels - old.channels
                or new.retention_days > old.retention_days
                or (new.lawful_basis == LawfulBasis.CONSENT and old.lawful_basis != LawfulBasis.CONSENT))


def load_catalogue(path: Path = DEFAULT_CATALOGUE) -> list[Purpose]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    out = []
    for i, item in enumerate(data.get("purposes") or []):
        problems = validate(item.get("id", ""), item.get("display_name", ""), item.get("lawful_basis"),
                            item.get("data_categories") or [], item.get("channels") or [],
                            int(item.get("retention_days") or 0), prefix=f"purposes[{i}]")
        if problems:
            raise PurposeInvalid([(f"{path}: {f}", d) for f, d in problems])
        out.append(Purpose(purpose_id=item["id"], version=1, display_name=item["display_name"],
                           description=item.get("description", ""), lawful_basis=LawfulBasis(item["lawful_basis"]),
                           data_categories=frozenset(item.get("data_categories") or []),
                           channels=frozenset(Channel(c) for c in item.get("channels") or []),
                           retention_days=int(item["retention_days"])))
    return out
