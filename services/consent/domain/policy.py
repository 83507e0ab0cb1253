"""The identity-aware consent decision: may purpose P use this person (on channel C) at time T?

Rules, in order (GDPR Art. 6, 7(3), 18, 21; documented with examples in the README, "Consent model"):

1. Unknown purpose, unknown subject, or a channel the purpose does not use → deny.
2. Restrictive decisions spread to the whole person, whatever the link: a withdrawal or denial
   recorded on *any* of the person's accounts denies, unless a newer grant was recorded on that
   *same* account (a newer grant elsewhere does not lift it — the most restrictive decision wins).
   They survive merges and splits because they stay attached to the account they were recorded on.
3. A restriction of processing (Art. 18) on any account denies under every lawful basis until it is
   lifted on that account. An objection (Art. 21) denies under consent, legitimate interests and
   public task until a newer grant on the same account; it does not stop processing necessary for a
   contract, a legal obligation or vital interests.
4. Lawful bases other than consent allow once 2–3 do not deny.
5. Under consent a grant is needed. It counts for the account it was captured on, and for the rest
   of the person only through links at or above the configured assurance (deterministic, verified,
   manual by default — never grey-zone probabilistic links): grants never widen through weak links.
   An expired grant denies ("expired"); a grant for a purpose version older than a version that
   requires fresh consent no longer counts.
6. Otherwise deny: no consent recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.consent.domain.purposes import LawfulBasis, Purpose, requires_fresh_consent

GRANT, DENY, WITHDRAW = "grant", "deny", "withdraw"
OBJECTION, RESTRICTION, RESTRICTION_LIFTED = "objection", "restriction", "restriction_lifted"
DEFAULT_PROPAGATION = frozenset({"deterministic", "verified", "manual"})
OBJECTION_STOPS = {LawfulBasis.CONSENT, LawfulBasis.LEGITIMATE_INTERESTS, LawfulBasis.PUBLIC_TASK}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    lawful_basis: LawfulBasis | None
    deciding_event_id: str | None
    purpose_version: int
    expires_at_ms: int | None = None


def _covers(event_channel: str | None, channel: str | None) -> bool:
    return not event_channel or event_channel == channel


def _when(event: Mapping[str, Any]) -> tuple[int, int]:
    """Decisions are ordered by when the person made them, then by ledger order (an imported
    older decision never overrides a newer one)."""
    return int(event.get("effective_at") or event.get("recorded_at") or 0), int(event["seq"])


def _latest(events: list[Mapping[str, Any]], kinds: set[str]) -> Mapping[str, Any] | None:
    chosen = [e for e in events if e["kind"] in kinds]
    return max(chosen, key=_when) if chosen else None


def decide(
    purpose: Purpose | None,
    versions: Mapping[int, Purpose],
    events: Iterable[Mapping[str, Any]],
    scope: Mapping[str, str],
    *,
    target: str | None,
    channel: str | None,
    at_ms: int,
    propagation: frozenset[str] = DEFAULT_PROPAGATION,
) -> Decision:
    """`scope` maps each subject ref of the person (accounts, identifiers, person ids) to the
    assurance of its link; `target` is the ref being checked, or None for the person as a whole."""
    if purpose is None:
        return Decision(False, "unknown_purpose", None, None, 0)
    version = purpose.version
    basis = purpose.lawful_basis
    if not scope:
        return Decision(False, "unknown_subject", basis, None, version)
    if channel and channel not in {c.value for c in purpose.channels}:
        return Decision(False, "channel_not_allowed_for_purpose", basis, None, version)
    relevant = [e for e in events
                if e["subject_ref"] in scope and e.get("purpose_id") == purpose.purpose_id
                and int(e.get("effective_at") or e.get("recorded_at") or 0) <= at_ms
                and _covers(e.get("channel"), channel)]
    by_ref: dict[str, list[Mapping[str, Any]]] = {}
    for e in relevant:
        by_ref.setdefault(e["subject_ref"], []).append(e)

    # 2–3: restrictive decisions anywhere on the person.
    for ref_events in by_ref.values():
        restriction = _latest(ref_events, {RESTRICTION, RESTRICTION_LIFTED})
        if restriction and restriction["kind"] == RESTRICTION:
            return Decision(False, "restricted", basis, restriction["event_id"], version)
    for ref_events in by_ref.values():
        objection = _latest(ref_events, {OBJECTION, GRANT})
        if objection and objection["kind"] == OBJECTION and basis in OBJECTION_STOPS:
            return Decision(False, "objection", basis, objection["event_id"], version)
    if basis != LawfulBasis.CONSENT:
        return Decision(True, f"lawful_basis:{basis.value}", basis, None, version)
    for ref_events in by_ref.values():
        state = _latest(ref_events, {GRANT, DENY, WITHDRAW})
        if state and state["kind"] != GRANT:
            return Decision(False, "withdrawn" if state["kind"] == WITHDRAW else "denied", basis,
                            state["event_id"], version)

    # 5: grants that reach the target.
    strong = {ref for ref, level in scope.items() if level in propagation}
    usable = {target} if target else set()
    if target is None or target in strong:
        usable |= strong
    grants = [g for ref in usable for g in [_latest(by_ref.get(ref, []), {GRANT})] if g]
    if not grants:
        return Decision(False, "no_consent_recorded", basis, None, version)
    live = [g for g in grants if not g.get("expires_at") or int(g["expires_at"]) > at_ms]
    if not live:
        newest = max(grants, key=_when)
        return Decision(False, "expired", basis, newest["event_id"], version, int(newest["expires_at"]))
    current = [g for g in live if not _needs_fresh_consent(int(g.get("purpose_version") or version), version,
                                                            versions)]
    if not current:
        newest = max(live, key=_when)
        return Decision(False, "purpose_changed_fresh_consent_required", basis, newest["event_id"], version)
    best = max(current, key=_when)
    expires = int(best["expires_at"]) if best.get("expires_at") else None
    return Decision(True, "consent_granted", basis, best["event_id"], version, expires)


def _needs_fresh_consent(granted: int, current: int, versions: Mapping[int, Purpose]) -> bool:
    for v in range(granted + 1, current + 1):
        old, new = versions.get(v - 1), versions.get(v)
        if old is not None and new is not None and requires_fresh_consent(old, new):
            return True
    return False
