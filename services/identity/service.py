"""Identity resolution use cases, free of gRPC: link, look up, merge, split, explain, erase.

The flow of a real-time link: normalise → blind-index identifiers → find persons sharing an
identifier (deterministic) and accounts sharing a blocking key (probabilistic, scored in-process
with the trained model) → guards pick the persons the account may join → one atomic upsert →
merge any further persons into the oldest. Person ids are stable: merges keep the oldest id.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from services.common.crypto import BlindIndex, b64, unb64
from services.common.errors import Aborted, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.common.keystore import SubjectKeys
from services.common.protos import SubjectRef
from services.identity.domain import guards
from services.identity.domain.blocking import block_keys
from services.identity.domain.link_methods import METHOD_DETERMINISTIC, METHOD_MANUAL, METHOD_NEW, METHOD_PROBABILISTIC
from services.identity.domain.model import RealtimeScorer, TrainedModel, TrainingFailed, predict_and_cluster, train
from services.identity.domain.normalize import (
    Identifier,
    InvalidAccount,
    NormalizedAccount,
    model_handle,
    normalize_account,
    normalize_identifier,
    to_model_record,
)
from services.identity.store import IdentityStore, bucket_of

log = structlog.get_logger("tessera.identity")



def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class LinkOutcome:
    account_id: str
    person_id: str
    created_person: bool
    method: str
    probability: float
    problems: list[tuple[str, str]]
    merged_persons: list[str]
    blocked: dict[str, str] = field(default_factory=dict)
    # The person as this link left it, when that is known without reading it back: a person the
    # link created holds just this account (callers read any other person with `get_person`).
    person: PersonView | None = None


@dataclass
class AccountView:
    account_id: str
    person_id: str
    source: str
    external_id: str
    identifiers: list[dict[str, str]]
    attributes: dict[str, Any]
    method: str
    probability: float
    created_at: int
    updated_at: int


@dataclass
class PersonView:
    person_id: str
    created_at: int
    updated_at: int
    account_count: int
    merged_persons: list[str]


RESOLVED = "resolved"
NOT_FOUND = "not_found"
AMBIGUOUS = "ambiguous"
LINK_ATTEMPTS = 3  # reads and decisions of one link, when persons change under it
PERSON_CHUNK = 1000  # persons per store read when bulk linking looks up decisions and identifiers
# Which link an identifier held by several accounts of one person reports: the strongest.
METHOD_STRENGTH = {METHOD_MANUAL: 3, METHOD_DETERMINISTIC: 2, METHOD_NEW: 2, METHOD_PROBABILISTIC: 1}


@dataclass
class Resolution:
    """What a subject resolved to: the person and, as blind-index tokens, every account and
    identifier linked to it with its link method — enough to scope consent, no personal data."""

    state: str
    person: PersonView | None = None
    accounts: dict[str, str] = field(default_factory=dict)  # account token → link method
    identifiers: dict[str, str] = field(default_factory=dict)  # identifier token → link method


@dataclass
class Thresholds:
    link: float
    review: float


class IdentityService:
    def __init__(self, store: IdentityStore, keys: SubjectKeys, blind: BlindIndex, *, default_region: str,
                 thresholds: Thresholds, max_persons_per_identifier: int, kind_limits: dict[str, int],
                 max_accounts_per_identifier: int = 10,
                 candidate_limit: int = 200, scorer: RealtimeScorer | None = None):
        self.store = store
        self.keys = keys
        self.blind = blind
        self.default_region = default_region
        self.thresholds = thresholds
        self.max_persons_per_identifier = max_persons_per_identifier
        self.max_accounts_per_identifier = max_accounts_per_identifier
        self.kind_limits = kind_limits
        self.candidate_limit = candidate_limit
        self.scorer = scorer

    # ---- ids -------------------------------------------------------------------------------
    def account_id(self, source: str, external_id: str) -> str:
        return self.blind.account_token(source, external_id)

    def identifier_token(self, kind: str, value: str) -> str:
        return self.blind.token(kind, value)

    def decrypt_rows(self, rows: list[dict[str, Any]], *, wrapped: bool = False) -> dict[str, dict[str, Any]]:
        """account id → decrypted account record, for rows carrying `account_id` and `attrs`.
        Keys come from the key store's cache or one batched lookup; shredded accounts are absent.
        With `wrapped`, the rows carry the account's wrapped data key (None once destroyed) as
        `wrapped`, read with them, and the keys not cached are unwrapped without a lookup."""
        subjects = [f"account:{r['account_id']}" for r in rows]
        if wrapped:
            ciphers = self.keys.ciphers_of_wrapped(
                {subject: r.get("wrapped") for subject, r in zip(subjects, rows, strict=True)})
        else:
            ciphers = self.keys.ciphers(subjects)
        out = {}
        for r in rows:
            cipher = ciphers.get(f"account:{r['account_id']}")
            if cipher is not None and r.get("attrs"):
                out[r["account_id"]] = json.loads(cipher.decrypt("account", unb64(r["attrs"])))
        return out

    # ---- link ------------------------------------------------------------------------------
    def normalise(self, raw: dict[str, Any]) -> NormalizedAccount:
        try:
            return normalize_account(raw, default_region=self.default_region)
        except InvalidAccount as exc:
            raise InvalidArgument([FieldViolation(f, d) for f, d in exc.violations]) from exc

    def identifier_tokens(self, acc: NormalizedAccount) -> tuple[dict[str, tuple[str, str, str | None]], set[str]]:
        """token → (kind, value, line type) of every identifier, and the tokens that may link."""
        tokens = {self.identifier_token(i.kind, i.value): (i.kind, i.value, i.line_type) for i in acc.identifiers}
        linking = {self.identifier_token(i.kind, i.value) for i in acc.identifiers if i.links}
        return tokens, linking

    def match_record(self, acc: NormalizedAccount, account_id: str) -> tuple[dict[str, Any], list[str]]:
        """The record the model compares, and the account's blocking-key tokens."""
        match = to_model_record(acc)
        match["unique_id"] = account_id
        return match, [self.blind.token(f"block:{name}", key) for name, key in block_keys(match)]

    def link(self, raw: dict[str, Any]) -> LinkOutcome:
        """Links one account (see `_link_once`); again from a fresh read when the graph changed
        between the read and the write (the chosen person merged or erased, the account split off
        or linked meanwhile)."""
        for _attempt in range(LINK_ATTEMPTS):
            outcome = self._link_once(raw)
            if outcome is not None:
                return outcome
        raise Aborted("the person graph changed while the account was linked; retry", reason="CONCURRENT_CHANGE")

    def _link_once(self, raw: dict[str, Any]) -> LinkOutcome | None:
        acc = self.normalise(raw)
        now = now_ms()
        account_id = self.account_id(acc.source, acc.external_id)
        problems = [(p.field, p.reason) for p in acc.problems]
        tokens, linking = self.identifier_tokens(acc)
        match, blocks = self.match_record(acc, account_id)
        # One read for everything the decision needs; only persons that turn out to be candidates
        # cost a second one (their accounts, identifiers and cannot-link decisions).
        ctx = self.store.link_context(account_id, [account_id, *tokens], [t for t in tokens if t in linking],
                                      blocks if self.scorer is not None else [], self.candidate_limit)
        suppressed = ctx.suppressed
        if account_id in suppressed:
            raise FailedPrecondition("this account belongs to an erased person and cannot be re-created",
                                     reason="SUBJECT_ERASED")
        for token in suppressed:
            kind, _value, _lt = tokens.pop(token)
            problems.append((f"identifiers.{kind}", "identifier was erased and is suppressed"))

        current = ctx.current
        deterministic, shared_too_widely = self._deterministic_candidates(
            [row for row in ctx.identifiers if row["token"] not in suppressed], current)
        for token, why in shared_too_widely.items():
            problems.append((f"identifiers.{tokens[token][0]}", why))
        # An identifier shared too widely to link is no evidence for the model either.
        noise = {found for t in shared_too_widely if (found := model_value(*tokens[t][:2])) is not None}
        probabilistic, review = self._probabilistic_candidates(match, ctx.candidates, deterministic, current, noise)

        candidate_ids = sorted({*deterministic, *probabilistic} - ({current["person_id"]} if current else set()))
        infos, cannot_pairs = self._person_infos([*candidate_ids, *([current["person_id"]] if current else [])])
        cannot = ctx.cannot_link & set(candidate_ids)
        candidates = []
        for pid in candidate_ids:
            info = infos.get(pid)
            if info is None:
                # Found through its accounts by the first read, without any by the second: merged
                # or erased in between. Deciding without it would make a stranger of its survivor.
                return None
            method = METHOD_DETERMINISTIC if pid in deterministic else METHOD_PROBABILISTIC
            info.method = method
            info.probability = 1.0 if pid in deterministic else probabilistic[pid]
            info.evidence = [f"shared_{kind}" for kind, _t in deterministic.get(pid, [])]
            candidates.append(info)
        current_cand = infos.get(current["person_id"]) if current else None
        own: dict[str, set[str]] = {}
        for token, (kind, _v, _lt) in tokens.items():
            own.setdefault(kind, set()).add(token)
        selection = guards.select_persons(
            guards.Traits.of(match), own, candidates, cannot_link=cannot,
            cannot_link_pairs=set(cannot_pairs), kind_limits=self.kind_limits, current_person=current_cand,
            given_names=self.given_names)
        chosen = selection.chosen
        # An identifier that led to a person this account provably is not (conflicting attributes,
        # a cannot-link decision) is shared by different people: it stops linking from now on.
        contested = sorted({token for pid, why in selection.blocked.items() if not why.startswith("too_many")
                            for _kind, token in deterministic.get(pid, [])})
        self.store.mark_contested(contested)
        created = not chosen
        if chosen:
            survivor = min(chosen, key=lambda c: (c.created_at, c.person_id))
            person_id = survivor.person_id
        else:
            person_id = uuid.uuid4().hex
        if current:
            method, probability = current["method"], float(current["probability"] or 1.0)
        elif chosen:
            best = next((c for c in chosen if c.method == METHOD_DETERMINISTIC), chosen[0])
            method, probability = best.method, best.probability
        else:
            method, probability = METHOD_NEW, 1.0
        record = stored_record(acc, tokens, match)
        cipher = self.keys.cipher_for(f"account:{account_id}")
        params: dict[str, Any] = {
            "person_id": person_id, "account_id": account_id, "source": acc.source,
            "ref": b64(cipher.encrypt("ref", json.dumps([acc.source, acc.external_id]))),
            "attrs": b64(cipher.encrypt("account", json.dumps(record))), "now": now, "method": method,
            "probability": probability, "model_version": getattr(self.scorer, "version", "") or "",
            "identifiers": [{"token": t, "kind": k, "line_type": lt or ""} for t, (k, _v, lt) in tokens.items()],
            "block_tokens": blocks, "bucket": bucket_of(account_id), "new_person": created,
            "current_person": current["person_id"] if current else None,
        }
        # A new account's edges are created, not merged; an existing one (or one created since the
        # read) goes through the full upsert, which also removes what the account no longer has.
        # Neither writes when the chosen person was merged or erased since the read, nor the upsert
        # when the account moved meanwhile (a split): the link then reads and decides again.
        created_now = current is None and self.store.create_account(**params) is not None
        if not created_now and self.store.upsert_account(identifier_tokens=list(tokens), **params) is None:
            return None
        merged: list[str] = []
        others = [c.person_id for c in chosen if c.person_id != person_id]
        if others:
            result = self.store.merge_persons(person_id, others, now, reason="automatic_link")
            merged = list(result["merged"]) if result else []
        review_pairs = [
            {"id": pair_id(account_id, other), "a": min(account_id, other), "b": max(account_id, other),
             "probability": p}
            for other, p in review.items()
        ]
        self.store.put_review(review_pairs, now)
        log.info("account_linked", method=method, person_id=person_id, count=len(merged))
        return LinkOutcome(account_id=account_id, person_id=person_id, created_person=created, method=method,
                           probability=probability, problems=problems, merged_persons=merged,
                           blocked=selection.blocked,
                           person=PersonView(person_id=person_id, created_at=now, updated_at=now, account_count=1,
                                             merged_persons=[]) if created else None)

    def _deterministic_candidates(self, rows: list[dict[str, Any]], current: dict | None
                                  ) -> tuple[dict[str, list[tuple[str, str]]], dict[str, str]]:
        """Persons sharing a linking identifier → [(kind, token)]; and identifiers that do not link
        (shared by too many persons or accounts, or contested) → why. `rows` as
        `persons_by_identifiers` gives them."""
        found: dict[str, list[tuple[str, str]]] = {}
        not_linking: dict[str, str] = {}
        for row in rows:
            if row["contested"]:
                not_linking[row["token"]] = "identifier is shared by different persons and does not link"
                continue
            if (len(row["persons"]) >= self.max_persons_per_identifier
                    or int(row["accounts"]) >= self.max_accounts_per_identifier):
                not_linking[row["token"]] = "identifier is shared by too many persons and does not link"
                continue
            for pid in row["persons"]:
                if not current or pid != current["person_id"]:
                    found.setdefault(pid, []).append((row["kind"], row["token"]))
        return found, not_linking

    def _probabilistic_candidates(self, match: dict, candidates: list[dict[str, Any]], deterministic: dict,
                                  current: dict | None, noise: set[tuple[str, str]]
                                  ) -> tuple[dict[str, float], dict[str, float]]:
        """Scores the accounts sharing a blocking key (`candidates`, as `candidates_by_block` gives
        them) → persons at or above the link threshold, and accounts in the review band."""
        if self.scorer is None or not candidates:
            return {}, {}
        linked: dict[str, float] = {}
        review: dict[str, float] = {}
        rows = [row for row in candidates
                if row["person_id"] not in deterministic and not (current and row["person_id"] == current["person_id"])]
        records = self.decrypt_rows(rows, wrapped=True)
        scored = [row for row in rows if row["account_id"] in records]
        probabilities = self.scorer.match_probabilities(
            without(match, noise), [without(records[row["account_id"]]["match"], noise) for row in scored])
        for row, p in zip(scored, probabilities, strict=True):
            pid = row["person_id"]
            if p >= self.thresholds.link:
                linked[pid] = max(p, linked.get(pid, 0.0))
            elif p >= self.thresholds.review:
                review[row["account_id"]] = max(p, review.get(row["account_id"], 0.0))
        return linked, review

    def _person_infos(self, person_ids: list[str]) -> tuple[dict[str, guards.Candidate], set[tuple[str, str]]]:
        """The persons as guard candidates (traits and identifiers of all their accounts), and the
        pairs of them (in sorted order) that a cannot-link decision keeps apart."""
        infos: dict[str, guards.Candidate] = {}
        if not person_ids:
            return infos, set()
        rows = self.store.link_persons(person_ids)
        records = self.decrypt_rows(rows)
        wanted = set(person_ids)
        pairs: set[tuple[str, str]] = set()
        for row in rows:
            pid = row["person_id"]
            info = infos.setdefault(pid, guards.Candidate(
                person_id=pid, created_at=int(row["person_created_at"] or 0), method=""))
            rec = records.get(row["account_id"])
            if rec:
                info.traits.append(guards.Traits.of(rec["match"]))
            for ident in row["identifiers"]:
                info.identifiers.setdefault(ident["kind"], set()).add(ident["token"])
            pairs.update((min(pid, other), max(pid, other)) for other in row["cannot_link"]
                         if other in wanted and other != pid)
        return infos, pairs

    # ---- read ------------------------------------------------------------------------------
    def get_person(self, person_id: str) -> PersonView:
        row = self.store.get_person(person_id)
        if row is None:
            raise NotFound(f"person {person_id!r} not found", reason="PERSON_NOT_FOUND",
                           metadata={"person": f"persons/{person_id}"})
        return PersonView(person_id=row["id"], created_at=int(row["created_at"] or 0),
                          updated_at=int(row["updated_at"] or 0), account_count=int(row["accounts"]),
                          merged_persons=sorted(row["merged"] or []))

    def person_of_account(self, source: str, external_id: str) -> PersonView:
        row = self.store.account_person(self.account_id(source, external_id))
        if row is None:
            raise NotFound("no such account", reason="ACCOUNT_NOT_FOUND")
        return self.get_person(row["person_id"])

    def person_of_identifier(self, kind: str, raw_value: str) -> PersonView:
        value = self._normalise_identifier(kind, raw_value)
        rows = self.store.persons_by_identifiers([self.identifier_token(kind, value)])
        persons = sorted({p for r in rows for p in r["persons"]})
        if not persons:
            raise NotFound("no person has this identifier", reason="IDENTIFIER_NOT_FOUND")
        if len(persons) > 1:
            raise FailedPrecondition("the identifier is shared by several persons",
                                     reason="IDENTIFIER_AMBIGUOUS", metadata={"persons": str(len(persons))})
        return self.get_person(persons[0])

    def resolve_subjects(self, subjects: list[SubjectRef]) -> list[Resolution]:
        """Resolves persons (following merges), accounts and identifiers in a fixed number of
        store round trips, whatever the number of subjects. An identifier that several persons
        hold resolves to none of them."""
        account_ids = {i: self.account_id(*s.account) for i, s in enumerate(subjects) if s.account}
        tokens: dict[int, str] = {}
        violations = []
        for i, s in enumerate(subjects):
            if s.identifier:
                kind, raw = s.identifier
                try:
                    tokens[i] = self.identifier_token(kind, normalize_identifier(kind, raw, self.default_region))
                except ValueError as exc:
                    violations.append(FieldViolation(f"subjects[{i}].identifier.value", str(exc)))
        if violations:
            raise InvalidArgument(violations)
        survivors = self.store.surviving_persons(sorted({s.person_id for s in subjects if s.person_id}))
        by_account = self.store.persons_of_accounts(sorted(set(account_ids.values())))
        by_token = {r["token"]: set(r["persons"])
                    for r in self.store.persons_by_identifiers(sorted(set(tokens.values())))}
        found: list[str | None] = []
        ambiguous: set[int] = set()
        for i, s in enumerate(subjects):
            if s.person_id:
                found.append(survivors.get(s.person_id))
            elif s.account:
                found.append(by_account.get(account_ids[i]))
            else:
                persons = sorted(by_token.get(tokens[i], ()))
                if len(persons) > 1:
                    ambiguous.add(i)
                found.append(persons[0] if len(persons) == 1 else None)
        resolved = self._resolutions(sorted({p for p in found if p}))
        out = []
        for i, pid in enumerate(found):
            if i in ambiguous:
                out.append(Resolution(AMBIGUOUS))
            else:
                out.append(resolved.get(pid, Resolution(NOT_FOUND)) if pid else Resolution(NOT_FOUND))
        return out

    def _resolutions(self, person_ids: list[str]) -> dict[str, Resolution]:
        out: dict[str, Resolution] = {}
        for scope in self.store.person_scopes(person_ids):
            res = out[scope.person_id] = Resolution(RESOLVED, PersonView(
                person_id=scope.person_id, created_at=scope.created_at, updated_at=scope.updated_at,
                account_count=len(scope.accounts), merged_persons=sorted(scope.merged)))
            identifiers = res.identifiers
            for account_id, method, tokens in scope.accounts:
                method = method or ""
                res.accounts[account_id] = method
                strength = METHOD_STRENGTH.get(method, 0)
                for token in tokens:
                    held = identifiers.get(token)
                    if held is None or strength > METHOD_STRENGTH.get(held, 0):
                        identifiers[token] = method
        return out

    def _normalise_identifier(self, kind: str, raw_value: str) -> str:
        try:
            return normalize_identifier(kind, raw_value, self.default_region)
        except ValueError as exc:
            raise InvalidArgument.single("subject.identifier.value", str(exc)) from exc

    def list_accounts(self, person_id: str, after: str, limit: int) -> list[AccountView]:
        self.get_person(person_id)
        rows = self.store.list_accounts(person_id, after, limit)
        if not rows:
            return []
        records = self.decrypt_rows([{"account_id": r["id"], "attrs": r["attrs"]} for r in rows])
        out = []
        for r in rows:
            rec = records.get(r["id"], {})
            out.append(AccountView(
                account_id=r["id"], person_id=person_id, source=r["source"],
                external_id=rec.get("external_id", ""), identifiers=rec.get("identifiers", []),
                attributes=rec.get("attributes", {}), method=r["method"] or "",
                probability=float(r["probability"] or 0.0), created_at=int(r["created_at"] or 0),
                updated_at=int(r["updated_at"] or 0)))
        return out

    # ---- manual decisions ------------------------------------------------------------------
    def merge(self, person_ids: list[str], reason: str) -> PersonView:
        views = [self.get_person(pid) for pid in person_ids]
        ids = sorted({v.person_id for v in views})
        if len(ids) == 1:
            return views[0]
        self._refuse_cannot_linked(ids)
        survivor = min((v for v in views if v.person_id in ids), key=lambda v: (v.created_at, v.person_id))
        self.store.merge_persons(survivor.person_id, [i for i in ids if i != survivor.person_id], now_ms(),
                                 reason=reason or "manual_merge", method=METHOD_MANUAL)
        return self.get_person(survivor.person_id)

    def _refuse_cannot_linked(self, person_ids: list[str]) -> None:
        """FAILED_PRECONDITION when a cannot-link decision keeps two of these persons apart."""
        among = set(person_ids)
        blocked = sorted(pair for pair in self.store.cannot_link_pairs(person_ids) if set(pair) <= among)
        if blocked:
            raise FailedPrecondition("a cannot-link decision forbids merging these persons",
                                     reason="CANNOT_LINK", metadata={"persons": ",".join(blocked[0])})

    def split(self, person_id: str, accounts: list[tuple[str, str]], reason: str, request_id: str,
              author: str = "split") -> tuple[PersonView, PersonView]:
        person = self.get_person(person_id)
        account_ids = [self.account_id(s, e) for s, e in accounts]
        new_id = (hashlib.sha256(f"split:{request_id}".encode()).hexdigest()[:32] if request_id
                  else uuid.uuid4().hex)
        owners = {r["account_id"]: r["person_id"] for r in self.store.accounts_with_keys(account_ids)}
        if account_ids and all(owners.get(aid) == new_id for aid in account_ids):
            # Done before (a retry whose reply was lost), even if the person was merged since.
            return self.get_person(person.person_id), self.get_person(new_id)
        fingerprint = hashlib.sha256("\x00".join([person.person_id, *sorted(set(account_ids))]).encode()).hexdigest()
        self._check_split_request(new_id, person.person_id, fingerprint)
        missing = [i for i, aid in enumerate(account_ids) if owners.get(aid) not in (person.person_id, new_id)]
        if missing:
            raise InvalidArgument([FieldViolation(f"accounts[{i}]", "is not an account of this person")
                                   for i in missing])
        moving = {a for a in account_ids if owners[a] == person.person_id}
        remaining = sorted(set(self._account_ids_of(person.person_id)) - moving)
        if not remaining:
            raise FailedPrecondition("a split must leave at least one account with the person",
                                     reason="SPLIT_WOULD_EMPTY_PERSON")
        # The accounts that leave must never silently rejoin: cannot-link decisions against every
        # account that stays, written with the move.
        decisions = []
        for moved in sorted(moving):
            for stay in remaining:
                lo, hi = sorted((moved, stay))
                decisions.append({"id": decision_id("cannot_link", lo, hi), "a": lo, "b": hi})
        done = self.store.split_person(person.person_id, new_id, sorted(moving), now_ms(), reason or "manual_split",
                                       fingerprint=fingerprint, decisions=decisions, author=author)
        if done is None:
            self._check_split_request(new_id, person.person_id, fingerprint)  # a concurrent reuse
        for decision in decisions:
            self.store.resolve_review(pair_id(decision["a"], decision["b"]))
        return self.get_person(person.person_id), self.get_person(new_id)

    def _account_ids_of(self, person_id: str) -> list[str]:
        """Every account of the person, in one statement (no page of a listing)."""
        scopes = self.store.person_scopes([person_id])
        return [a for a, _m, _t in scopes[0].accounts] if scopes else []

    def _check_split_request(self, new_id: str, person_id: str, fingerprint: str) -> None:
        """A request id names one split: of this person, these accounts."""
        origin = self.store.split_origin(new_id)
        if origin is None:
            return
        if origin["fingerprint"] != fingerprint and not (origin["fingerprint"] is None
                                                          and origin["split_from"] == person_id):
            raise FailedPrecondition("request_id was already used for a different split",
                                     reason="REQUEST_ID_REUSED")

    def _record_decision(self, kind: str, a: str, b: str, reason: str, author: str) -> dict[str, Any]:
        lo, hi = sorted((a, b))
        row = self.store.record_decision(id=decision_id(kind, lo, hi),
                                         kind=kind, a=lo, b=hi, reason=reason, author=author, now=now_ms())
        if row is None:
            raise NotFound("both accounts must exist", reason="ACCOUNT_NOT_FOUND")
        self.store.resolve_review(pair_id(lo, hi))
        return row

    def decide(self, kind: str, a: tuple[str, str], b: tuple[str, str], reason: str, author: str
               ) -> dict[str, Any]:
        aid, bid = self.account_id(*a), self.account_id(*b)
        if aid == bid:
            raise InvalidArgument.single("decision.account_b", "must differ from account_a")
        owners = {r["account_id"]: r["person_id"] for r in self.store.accounts_with_keys([aid, bid])}
        for field_name, acc in (("decision.account_a", aid), ("decision.account_b", bid)):
            if acc not in owners:
                raise NotFound(f"{field_name}: no such account", reason="ACCOUNT_NOT_FOUND")
        # What the decision implies is checked, or done, before the decision is recorded: a refused
        # merge must not leave a must-link behind that nothing enforces.
        if kind == "must_link" and owners[aid] != owners[bid]:
            self._refuse_cannot_linked(sorted({owners[aid], owners[bid]}))
        if kind == "cannot_link" and owners[aid] == owners[bid]:
            # The split writes this pair's decision too (with the move), under the caller's name.
            self.split(owners[aid], [b], reason or "cannot_link", request_id=f"cannot:{aid}:{bid}", author=author)
        row = self._record_decision(kind, aid, bid, reason, author)
        if kind == "must_link" and owners[aid] != owners[bid]:
            self.merge([owners[aid], owners[bid]], reason or "must_link")
        return row

    # ---- explain ---------------------------------------------------------------------------
    def explain(self, a: tuple[str, str], b: tuple[str, str]) -> dict[str, Any]:
        aid, bid = self.account_id(*a), self.account_id(*b)
        rows = {r["account_id"]: r for r in self.store.accounts_with_keys([aid, bid])}
        for field_name, acc in (("account_a", aid), ("account_b", bid)):
            if acc not in rows:
                raise NotFound(f"{field_name}: no such account", reason="ACCOUNT_NOT_FOUND")
        records = self.decrypt_rows(list(rows.values()))
        ra, rb = records.get(aid, {}), records.get(bid, {})
        rules: list[str] = []
        ta = {(i["kind"], i["value"]) for i in ra.get("identifiers", [])}
        tb = {(i["kind"], i["value"]) for i in rb.get("identifiers", [])}
        shared = sorted(k for k, _ in ta & tb)
        tokens = [self.identifier_token(k, v) for k, v in ta & tb]
        wide = {r["token"] for r in self.store.persons_by_identifiers(tokens)
                if r["contested"] or len(r["persons"]) >= self.max_persons_per_identifier
                or int(r["accounts"]) >= self.max_accounts_per_identifier}
        for kind in shared:
            rules.append(f"shared_{kind}")
        if wide:
            rules.append("guard:identifier_shared_by_different_persons")
        why = guards.conflict(guards.Traits.of(ra.get("match", {})), guards.Traits.of(rb.get("match", {})),
                              self.given_names)
        if why:
            rules.append(f"guard:{why}")
        decisions = self.store.decisions_between(aid, bid)
        score = self.scorer.score(ra["match"], rb["match"]) if self.scorer and "match" in ra and "match" in rb \
            else None
        same = rows[aid]["person_id"] == rows[bid]["person_id"]
        return {"same_person": same, "rules": rules, "decision": decisions[0] if decisions else None,
                "score": score, "model_version": getattr(self.scorer, "version", "") if score else ""}

    def review_items(self, after: str, limit: int) -> list[dict[str, Any]]:
        return review_rows_to_refs(self, self.store.list_review(after, limit))

    # ---- model ------------------------------------------------------------------------------
    def refresh_model(self) -> None:
        """Loads the current model when another replica (or a training run) replaced it."""
        version = self.store.current_model_version()
        if version and version != getattr(self.scorer, "version", None):
            found = self.store.current_model()
            if found:
                self.scorer = RealtimeScorer(TrainedModel.from_json(found[1]))
                log.info("model_loaded", model_version=found[0])

    @property
    def given_names(self) -> guards.GivenNames:
        """The established given names of the model in use (none without a model)."""
        return self.scorer.model.given_names if self.scorer is not None else guards.NO_NAMES

    def current_model(self) -> TrainedModel:
        self.refresh_model()
        if self.scorer is None:
            raise NotFound("no model has been trained yet; run `tessera identity train`", reason="NO_MODEL")
        return self.scorer.model

    def _all_records(self, page: int = 5000) -> Iterator[dict[str, Any]]:
        after = ""
        while True:
            rows = self.store.accounts_page(after, page)
            records = self.decrypt_rows(rows)
            for row in rows:
                rec = records.get(row["account_id"])
                if rec:
                    yield {"account_id": row["account_id"], "person_id": row["person_id"],
                           "person_created_at": int(row["person_created_at"] or 0), "match": rec["match"]}
            if len(rows) < page:
                return
            after = rows[-1]["account_id"]

    def install_model(self, records: list[dict[str, Any]], seed: int = 0) -> TrainedModel:
        """Trains a model on match records, stores it as the current one and scores with it from
        now on; a failed run changes nothing (FAILED_PRECONDITION)."""
        try:
            model = train(records, seed=seed or 42)
        except TrainingFailed as exc:
            raise FailedPrecondition(str(exc), reason="TRAINING_FAILED") from exc
        self.store.put_model(model.version, model.to_json(), model.trained_at_ms, model.training_records)
        self.scorer = RealtimeScorer(model)
        return model

    def train_model(self, seed: int = 0) -> tuple[TrainedModel, int]:
        """Trains on every account in the graph, makes the model current, then re-links the whole
        graph with Splink's predict and clustering. Returns the model and the persons merged."""
        rows = list(self._all_records())
        model = self.install_model([r["match"] for r in rows], seed)
        merged = self.relink(model, rows)
        log.info("model_trained", model_version=model.version, records=len(rows), count=merged)
        return model, merged

    def relink(self, model: TrainedModel, rows: list[dict[str, Any]]) -> int:
        """Bulk linking: Splink scores all blocked pairs and clusters them at the link threshold.
        Inside each cluster, persons are joined along the scored pairs, strongest first, only while
        the guards and manual decisions allow (a constrained union: a family member in a cluster
        does not stop the other members' own accounts from joining). Grey-zone pairs across persons
        go to the review queue."""
        if not rows:
            return 0
        pairs, clusters = predict_and_cluster(model, [r["match"] for r in rows], threshold=self.thresholds.link)
        by_account = {r["account_id"]: r for r in rows}
        review, edges = [], []
        for pair in pairs.itertuples():
            a, b = by_account.get(pair.unique_id_l), by_account.get(pair.unique_id_r)
            if not a or not b or a["person_id"] == b["person_id"]:
                continue
            p = float(pair.match_probability)
            if p >= self.thresholds.link and clusters.get(a["account_id"]) == clusters.get(b["account_id"]):
                edges.append((p, a["person_id"], b["person_id"]))
            elif p >= self.thresholds.review:
                lo, hi = sorted((a["account_id"], b["account_id"]))
                review.append({"id": pair_id(lo, hi), "a": lo, "b": hi, "probability": p})
        now = now_ms()
        for start in range(0, len(review), 1000):
            self.store.put_review(review[start:start + 1000], now)
        persons: dict[str, guards.Candidate] = {}
        for row in rows:
            cand = persons.setdefault(row["person_id"], guards.Candidate(
                person_id=row["person_id"], created_at=row["person_created_at"], method=METHOD_PROBABILISTIC))
            cand.traits.append(guards.Traits.of(row["match"]))
        involved = sorted({x for _p, a, b in edges for x in (a, b)})
        among = set(involved)
        cannot: set[tuple[str, str]] = set()
        for start in range(0, len(involved), PERSON_CHUNK):
            chunk = involved[start:start + PERSON_CHUNK]
            # Pairs reaching beyond the chunk too: their other person may sit in another chunk.
            cannot.update(pair for pair in self.store.cannot_link_pairs(chunk) if pair[0] in among and pair[1] in among)
            for pid, held in self.store.person_identifiers(chunk).items():
                persons[pid].identifiers = held
        groups = guards.ConstrainedUnion({pid: persons[pid] for pid in involved}, cannot, self.kind_limits,
                                         model.given_names)
        for _p, a, b in sorted(edges, reverse=True):
            groups.join(a, b)
        merged = 0
        for members in groups.groups():
            if len(members) < 2:
                continue
            ordered = sorted(members, key=lambda c: (c.created_at, c.person_id))
            self.store.merge_persons(ordered[0].person_id, [c.person_id for c in ordered[1:]], now,
                                     reason="bulk_link", method=METHOD_PROBABILISTIC)
            merged += len(ordered) - 1
        return merged

    # ---- changes & erasure -----------------------------------------------------------------
    def changes(self, after: int, poll_seconds: float, is_active: Any) -> Iterator[dict[str, Any]]:
        cursor = after
        while is_active():
            rows = self.store.changes_after(cursor)
            for row in rows:
                cursor = int(row["seq"])
                yield row
            if not rows:
                time.sleep(poll_seconds)

    def delete_person(self, person_id: str) -> list[str]:
        """Erases a person: its accounts' data keys first (what the graph still holds of them is
        unreadable from then on, and a retry after a crash finds the person and finishes), then
        in one statement its accounts, the persons merged into it, the manual decisions and review
        items naming its accounts and the reasons on its change events (free text), with
        suppression of its identifiers; then identifiers and blocking keys nobody else holds."""
        person = self.get_person(person_id)
        self.keys.destroy([f"account:{a}" for a in self._account_ids_of(person.person_id)])
        result = self.store.delete_person(person.person_id, now_ms())
        if result is None:
            return []
        # Again for every account the statement deleted: one linked meanwhile, or a key a
        # concurrent write created again for a listed one (destroying is idempotent).
        self.keys.destroy([f"account:{a}" for a in result["account_ids"]])
        self.store.delete_orphans([*result["identifier_tokens"], *result["block_tokens"]])
        log.info("person_erased", person_id=person.person_id, count=len(result["account_ids"]))
        return list(result["account_ids"])


# Identifier kinds the model compares → their match-record column (social handles and logins
# bare, pooled in one column: normalize.model_handle).
KIND_COLUMNS = {"email": "emails", "phone": "phones", "social": "handles", "login": "handles"}


def model_value(kind: str, value: str) -> tuple[str, str] | None:
    """The (column, value) an identifier takes in the match record, None if the model ignores it."""
    column = KIND_COLUMNS.get(kind)
    if column == "emails" and not Identifier(kind, value).links:
        return ("role_emails", value)
    if column == "handles":
        handle = model_handle(Identifier(kind, value))
        return None if handle is None else (column, handle)
    return None if column is None else (column, value)


def without(match: dict[str, Any], noise: set[tuple[str, str]]) -> dict[str, Any]:
    """The match record without the (column, value) identifiers in `noise`."""
    if not noise:
        return match
    return {**match, **{c: [v for v in match.get(c) or [] if (c, v) not in noise]
                        for c in {*KIND_COLUMNS.values(), "role_emails"}}}


def stored_record(acc: NormalizedAccount, tokens: dict[str, tuple[str, str, str | None]],
                  match: dict[str, Any]) -> dict[str, Any]:
    """What an account's encrypted `attrs` hold: its reference, identifiers, attributes, match record."""
    return {"source": acc.source, "external_id": acc.external_id,
            "identifiers": [{"kind": k, "value": v} for k, v, _ in tokens.values()],
            "attributes": acc.attributes_dict(), "match": match}


def pair_id(a: str, b: str) -> str:
    lo, hi = sorted((a, b))
    return hashlib.sha256(f"{lo}:{hi}".encode()).hexdigest()[:32]


def review_rows_to_refs(service: IdentityService, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replaces account ids in review rows by (source, external id), decrypted per account."""
    ids = sorted({r["a"] for r in rows} | {r["b"] for r in rows})
    refs: dict[str, tuple[str, str]] = {}
    accounts = service.store.accounts_with_keys(ids) if ids else []
    records = service.decrypt_rows(accounts)
    for account in accounts:
        rec = records.get(account["account_id"], {})
        refs[account["account_id"]] = (rec.get("source", ""), rec.get("external_id", ""))
    return [{**r, "a": refs.get(r["a"], ("", "")), "b": refs.get(r["b"], ("", ""))} for r in rows
            if r["a"] in refs and r["b"] in refs]


def decision_id(kind: str, a: str, b: str) -> str:
    """One manual decision per kind and pair of accounts, however often it is recorded."""
    lo, hi = sorted((a, b))
    return hashlib.sha256(f"{kind}:{lo}:{hi}".encode()).hexdigest()[:32]
