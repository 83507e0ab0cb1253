"""The identity-aware consent decision: may purpose P use this person (on channel C) at time T?

A pure function of the purpose (and its earlier versions), the decisions recorded on the person's
accounts, and the person's accounts with the assurance of each link. Default deny. Rules in order:

1. Unknown purpose → ``unknown_purpose``; no accounts → ``unknown_subject``; a channel the purpose
   does not use → ``channel_not_allowed_for_purpose``.
2. Restriction of processing (Art. 18) recorded on *any* account of the person denies under every
   lawful basis (``restricted``) until a later ``restriction_lifted`` on that same account (a lift
   for one channel ends that channel's restriction only). Storage
   stays lawful (Art. 18(2)); the other Art. 18(2) exceptions (legal claims, rights of others,
   important public interest) are case-by-case decisions outside this check.
3. Objection (Art. 21) on any account denies (``objection``) under legitimate interests and public
   task — the bases Art. 21(1) covers — and under consent, where it amounts to a withdrawal and is
   absolute for direct marketing (Art. 21(2)–(3)). It does not stop processing necessary for a
   contract, a legal obligation or vital interests (Art. 21 does not apply to Art. 6(1)(b)–(d)).
   It is lifted only by a later grant on the same account.
4. Any other lawful basis allows (``lawful_basis:<basis>``) once 2–3 do not deny; grants,
   denials and withdrawals are irrelevant to it.
5. Under consent, a withdrawal or denial on any account denies the whole person (``withdrawn`` /
   ``denied``), however weakly that account is linked, unless a *newer grant on that same account*
   superseded it. A newer grant on another account does not: the most restrictive decision wins.
   Superseded or not, it revokes every grant recorded before it, on any account: only grants
   after it count in rule 6.
   Because decisions stay attached to the account they were recorded on, this survives merges,
   and after a split each part sees exactly the decisions on its own accounts.
6. A grant counts for the account it was captured on, and for the rest of the person only through
   links at or above the configured assurance (deterministic, verified, manual by default): a grant
   on a probabilistic/review-grade account reaches no other account, and grants elsewhere do not
   reach it. The newest grant per account governs; if it expired (``expires_at <= at``) →
   ``expired``; if it was given for an older purpose version and the current version widens use
   relative to that version (`requires_fresh_consent`) → ``purpose_changed_fresh_consent_required``.
   An erasure tombstone voids grants recorded on that account before it.
7. Otherwise → ``no_consent_recorded``.

Channels: an event without channel covers every channel of the purpose; a channel-specific event
only its channel. A check for one channel sees channel-less events and that channel's events. A
check without channel asks about the purpose as a whole: every restrictive event applies whatever
its channel, and only channel-less grants count.

Time: events that take effect after ``at_ms`` are ignored ("state at time T"); events are ordered
by effective time, then ledger sequence, so an imported older decision never overrides a newer one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from services.consent.domain.purposes import LawfulBasis, Purpose, requires_fresh_consent

GRANT, DENY, WITHDRAW = "grant", "deny", "withdraw"
OBJECTION, RESTRICTION, RESTRICTION_LIFTED, ERASURE = "objection", "restriction", "restriction_lifted", "erasure"
DEFAULT_PROPAGATION = frozenset({"deterministic", "verified", "manual"})
ASSURANCE_LEVELS = ("deterministic", "verified", "manual", "probabilistic", "review")
_RESTRICTION_KINDS = frozenset({RESTRICTION, RESTRICTION_LIFTED})
_GRANT_KINDS = frozenset({GRANT})
_ERASURE_KINDS = frozenset({ERASURE})
_REVOKING_KINDS = frozenset({DENY, WITHDRAW, OBJECTION})
OBJECTION_STOPS = frozenset({LawfulBasis.CONSENT, LawfulBasis.LEGITIMATE_INTERESTS, LawfulBasis.PUBLIC_TASK})

Versions = Mapping[int, Purpose] | Callable[[int], Purpose | None]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    lawful_basis: LawfulBasis | None
    deciding_event_id: str | None
    purpose_version: int
    expires_at_ms: int | None = None


class _Event(NamedTuple):
    when: tuple[int, int]  # (effective time, seq)
    kind: str
    subject_ref: str
    channel: str | None
    event_id: str | None
    purpose_version: int | None
    expires_at_ms: int | None


def _field(event: Any, *names: str) -> Any:
    if type(event) is dict or isinstance(event, Mapping):
        for name in names:
            value = event.get(name)
            if value is not None:
                return value
        return None
    for name in names:
        value = getattr(event, name, None)
        if value is not None:
            return value
    return None


def _first(event: dict[str, Any], *names: str) -> Any:
    """`_field` for a plain dict (what the store returns), without the type checks."""
    get = event.get
    for name in names:
        value = get(name)
        if value is not None:
            return value
    return None


def _view(event: Any, purpose_id: str) -> _Event | None:
    """A stored record, ConsentEvent or any object with those fields; None for other purposes."""
    if type(event) is dict:  # stored records: the check path's case, read as `_field` reads them
        get = event.get
        if get("purpose_id") != purpose_id:
            return None
        effective = _first(event, "effective_at", "effective_at_ms", "recorded_at", "recorded_at_ms")
        expires = _first(event, "expires_at", "expires_at_ms")
        version = get("purpose_version")
        return _Event((int(effective or 0), int(get("seq") or 0)), str(get("kind")), str(get("subject_ref")),
                      get("channel") or None, get("event_id"), int(version) if version else None,
                      int(expires) if expires else None)
    if _field(event, "purpose_id") != purpose_id:
        return None
    effective = _field(event, "effective_at", "effective_at_ms", "recorded_at", "recorded_at_ms")
    expires = _field(event, "expires_at", "expires_at_ms")
    version = _field(event, "purpose_version")
    return _Event((int(effective or 0), int(_field(event, "seq") or 0)), str(_field(event, "kind")),
                  str(_field(event, "subject_ref")), _field(event, "channel") or None, _field(event, "event_id"),
                  int(version) if version else None, int(expires) if expires else None)


@lru_cache(maxsize=1024)
def _channel_values(channels: frozenset[Any]) -> frozenset[str]:
    """A purpose's channels as plain values (channels are Channel members or strings)."""
    return frozenset(getattr(c, "value", c) for c in channels)


def _latest(events: list[_Event], kinds: frozenset[str] | set[str]) -> _Event | None:
    chosen = [e for e in events if e.kind in kinds]
    return max(chosen) if chosen else None


def decide(
    purpose: Purpose | None,
    versions: Versions | None,
    events: Iterable[Any],
    scope: Mapping[str, str],
    *,
    target: str | None,
    channel: str | None,
    at_ms: int | None = None,
    now_ms: int | None = None,
    propagation: frozenset[str] | set[str] = DEFAULT_PROPAGATION,
) -> Decision:
    """Decides one check (see the module docstring for the rules).

    `versions` gives the purpose's versions (mapping or callable version -> Purpose) for grants made
    under an older version; `events` are the decisions recorded on the person's accounts (records,
    ConsentEvents or alike; other purposes are ignored); `scope` maps each of the person's account
    keys to the assurance of its link; `target` is the account checked, or None for the person as
    a whole; the state is taken at `at_ms` (default `now_ms`)."""
    at = at_ms if at_ms is not None else now_ms
    if at is None:
        raise TypeError("decide() needs at_ms or now_ms")
    if purpose is None:
        return Decision(False, "unknown_purpose", None, None, 0)
    version, basis = purpose.version, purpose.lawful_basis
    if not scope:
        return Decision(False, "unknown_subject", basis, None, version)
    if channel and channel not in _channel_values(frozenset(purpose.channels)):
        return Decision(False, "channel_not_allowed_for_purpose", basis, None, version)

    by_ref: dict[str, list[_Event]] = {}
    for raw in events:
        e = _view(raw, purpose.purpose_id)
        if e is None or e.subject_ref not in scope or e.when[0] > at:
            continue
        by_ref.setdefault(e.subject_ref, []).append(e)

    def restrictive_sees(e: _Event) -> bool:
        return channel is None or e.channel is None or e.channel == channel

    def grant_counts(e: _Event) -> bool:
        return e.channel is None or e.channel == channel

    # 2. restriction, anywhere on the person. A lift ends the restrictions of its own channel (all,
    # without one), so the purpose as a whole is restricted while any channel an event names — or
    # the purpose without a channel — still is.
    for ref_events in by_ref.values():
        restrictions = [e for e in ref_events if e.kind in _RESTRICTION_KINDS]
        if not restrictions:
            continue
        views = [channel] if channel is not None else [None, *sorted({e.channel for e in restrictions} - {None})]
        for view in views:
            latest = _latest([e for e in restrictions if e.channel is None or e.channel == view], _RESTRICTION_KINDS)
            if latest and latest.kind == RESTRICTION:
                return Decision(False, "restricted", basis, latest.event_id, version)
    # 3. objection, anywhere on the person, lifted by a later grant on that account
    if basis in OBJECTION_STOPS:
        for ref_events in by_ref.values():
            objections = [e for e in ref_events if e.kind == OBJECTION and restrictive_sees(e)]
            if not objections:
                continue
            objection = max(objections)
            lifted = any(e.kind == GRANT and e.when > objection.when and grant_counts(e) for e in ref_events)
            if not lifted:
                return Decision(False, "objection", basis, objection.event_id, version)
    # 4. other lawful bases
    if basis != LawfulBasis.CONSENT:
        return Decision(True, f"lawful_basis:{basis.value}", basis, None, version)
    # 5. denials and withdrawals, anywhere on the person, superseded only by a newer grant there
    for ref_events in by_ref.values():
        for e in sorted((e for e in ref_events if e.kind in (DENY, WITHDRAW) and restrictive_sees(e)),
                        reverse=True):
            superseded = any(g.kind == GRANT and g.when > e.when and grant_counts(g) for g in ref_events)
            if not superseded:
                return Decision(False, "withdrawn" if e.kind == WITHDRAW else "denied", basis, e.event_id, version)

    # 6. grants that reach the target: its own, and when it is strongly linked (or the person as a
    # whole is asked about) those of every strongly linked account. Only refs holding events are
    # looked at: most of a person's refs (its other identifiers) hold none.
    # A withdrawal, denial or objection anywhere voids every grant before it, also when a newer
    # grant on its own account superseded it: that grant counts, the older ones elsewhere stay
    # revoked (else a re-grant that expires would bring back a grant the person withdrew).
    voided_until = max((e.when for ref_events in by_ref.values() for e in ref_events
                        if e.kind in _REVOKING_KINDS and restrictive_sees(e)), default=None)
    reach_all = target is None or scope.get(target) in propagation
    grants = []
    for ref, ref_events in by_ref.items():
        if ref != target and not (reach_all and scope[ref] in propagation):
            continue
        grant = _latest([e for e in ref_events if e.kind == GRANT and grant_counts(e)
                         and (voided_until is None or e.when > voided_until)], _GRANT_KINDS)
        erased = _latest(ref_events, _ERASURE_KINDS)
        if grant and not (erased and erased.when > grant.when):
            grants.append(grant)
    if not grants:
        return Decision(False, "no_consent_recorded", basis, None, version)
    live = [g for g in grants if g.expires_at_ms is None or g.expires_at_ms > at]
    if not live:
        newest = max(grants)
        return Decision(False, "expired", basis, newest.event_id, version, newest.expires_at_ms)
    current = [g for g in live if not _needs_fresh_consent(g.purpose_version or version, purpose, versions)]
    if not current:
        newest = max(live)
        return Decision(False, "purpose_changed_fresh_consent_required", basis, newest.event_id, version)
    best = max(current)
    return Decision(True, "consent_granted", basis, best.event_id, version, best.expires_at_ms)


def _needs_fresh_consent(granted: int, current: Purpose, versions: Versions | None) -> bool:
    """Whether the current version widens use relative to the version the grant was given for.
    A granted version that cannot be looked up is treated as needing fresh consent."""
    if granted >= current.version:
        return False
    if versions is None:
        return True
    old = versions(granted) if callable(versions) else versions.get(granted)
    return old is None or requires_fresh_consent(old, current)
