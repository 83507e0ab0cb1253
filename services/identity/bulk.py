"""Bulk import use cases: stage accounts fast, then link all staged accounts at once.

Real-time linking costs a dozen store round trips per account; a million-account import needs
batches instead. Staging writes each batch of accounts (keys, encrypted record, identifiers,
blocking keys) in two atomic statements without deciding persons. Linking then reads every
account once, runs Splink's predict and clustering over all of them, decides persons with the
same guards as the real-time path (`domain.bulk_link`) and writes the result in batches.
Both steps are idempotent, so an interrupted import is simply run again.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from services.common.crypto import b64
from services.common.errors import Aborted, FieldViolation, InvalidArgument, NotFound
from services.identity.bulk_splink import RecordTable
from services.identity.domain import guards
from services.identity.domain.bulk_link import BulkAccount, Limits, Plan, groundwork, plan
from services.identity.domain.link_methods import METHOD_PROBABILISTIC
from services.identity.domain.model import (
    MIN_TRAINING_RECORDS,
    TrainedModel,
)
from services.identity.domain.normalize import Identifier, InvalidAccount, normalize_account
from services.identity.service import (
    IdentityService,
    now_ms,
    pair_id,
    stored_record,
)
from services.identity.store import BUCKETS, bucket_of

log = structlog.get_logger("tessera.identity")

TRAINING_SAMPLE = 300_000  # accounts; EM and u sampling need no more to converge
WRITE_BATCH = 5_000


@dataclass
class StageOutcome:
    staged: int = 0
    already_staged: int = 0
    relinked: int = 0
    problems: list[tuple[int, str, str]] = field(default_factory=list)  # (index, field, reason)


@dataclass
class Progress:
    phase: str  # reading | training | scoring | clustering | writing | done
    done: int = 0
    total: int = 0
    linked_accounts: int = 0
    created_persons: int = 0
    merged_persons: int = 0
    model_version: str = ""


PAIR_CHUNK = 100_000
LINK_LEASE = "bulk-link"
LEASE_MS = 10 * 60 * 1000  # longer than any single step of a million-account link (≈ 75 s here)


def _pairs_by_id(scored: tuple[np.ndarray, np.ndarray, np.ndarray], accounts: list[BulkAccount]
                 ) -> Iterator[tuple[str, str, float]]:
    """Scored pairs of positions as (smaller account id, larger account id, probability), the
    orientation Splink gives string ids; converted a chunk at a time."""
    left, right, probability = scored
    for start in range(0, len(left), PAIR_CHUNK):
        end = start + PAIR_CHUNK
        for x, y, p in zip(left[start:end].tolist(), right[start:end].tolist(), probability[start:end].tolist(),
                           strict=True):
            a, b = accounts[x].account_id, accounts[y].account_id
            yield (a, b, p) if a < b else (b, a, p)


class BulkImport:
    def __init__(self, identity: IdentityService):
        self.identity = identity
        self.store = identity.store

    # ---- step 1 -----------------------------------------------------------------------------
    def stage(self, raws: list[dict[str, Any]]) -> StageOutcome:
        """Stages new accounts; an account that is already linked goes through the real-time path
        (its data may have changed), one staged earlier is left alone (a re-sent batch)."""
        ident = self.identity
        out = StageOutcome()
        accounts, violations = [], []
        for index, raw in enumerate(raws):
            try:
                accounts.append(normalize_account(raw, default_region=ident.default_region))
            except InvalidAccount as exc:
                violations += [FieldViolation(f"accounts[{index}].{f}", d) for f, d in exc.violations]
        if violations:
            raise InvalidArgument(violations)  # nothing of the batch is stored
        ids = [ident.account_id(a.source, a.external_id) for a in accounts]
        states = self.store.account_states(sorted(set(ids)))
        prepared = []
        seen: set[str] = set()
        for index, (raw, acc, account_id) in enumerate(zip(raws, accounts, ids, strict=True)):
            if account_id in states:
                if states[account_id]:
                    out.already_staged += 1
                else:
                    ident.link(raw)
                    out.relinked += 1
                continue
            if account_id in seen:
                out.already_staged += 1  # the same account twice in one batch: the first one counts
                continue
            seen.add(account_id)
            tokens, _linking = ident.identifier_tokens(acc)
            out.problems.extend((index, p.field, p.reason) for p in acc.problems)
            prepared.append((index, acc, account_id, tokens))
        if not prepared:
            return out
        all_tokens = [t for _i, _a, aid, tokens in prepared for t in (aid, *tokens)]
        suppressed = self.store.suppressed(all_tokens)
        ciphers = ident.keys.ciphers_for([f"account:{aid}" for _i, _a, aid, _t in prepared])
        rows = []
        for index, acc, account_id, tokens in prepared:
            if account_id in suppressed:
                out.problems.append((index, "account", "this account belongs to an erased person"))
                continue
            for token in suppressed & tokens.keys():
                kind, _value, _lt = tokens.pop(token)
                out.problems.append((index, f"identifiers.{kind}", "identifier was erased and is suppressed"))
            match, blocks = ident.match_record(acc, account_id)
            cipher = ciphers[f"account:{account_id}"]
            rows.append({
                "account_id": account_id, "source": acc.source, "bucket": bucket_of(account_id),
                "ref": b64(cipher.encrypt("ref", json.dumps([acc.source, acc.external_id]))),
                "attrs": b64(cipher.encrypt("account", json.dumps(stored_record(acc, tokens, match)))),
                "identifiers": [{"token": t, "kind": k, "line_type": lt or ""} for t, (k, _v, lt) in tokens.items()],
                "block_tokens": " ".join(blocks),
            })
        out.staged = self.store.stage_accounts(rows, now_ms())
        out.already_staged += len(rows) - out.staged  # staged concurrently by another writer
        return out

    # ---- step 2 -----------------------------------------------------------------------------
    def link_staged(self, seed: int = 0) -> Iterator[Progress]:
        """Links every staged account; yields progress, the last item with phase "done". One
        bulk link runs at a time (a lease in the graph, renewed with each progress step): two
        would each plan on a snapshot without the other's persons."""
        owner = uuid.uuid4().hex
        if not self.store.take_lease(LINK_LEASE, owner, now_ms(), LEASE_MS):
            raise Aborted("another bulk link is running; retry when it has finished", reason="BULK_LINK_RUNNING")
        try:
            for step in self._link_staged(seed):
                if not self.store.take_lease(LINK_LEASE, owner, now_ms(), LEASE_MS):
                    raise Aborted("this bulk link's lease expired and another link took over",
                                  reason="BULK_LINK_LEASE_LOST")
                yield step
        finally:
            self.store.release_lease(LINK_LEASE, owner)

    def _link_staged(self, seed: int) -> Iterator[Progress]:
        ident = self.identity
        started = time.perf_counter()
        # Python keeps what the plan needs (ids, tokens, traits); the records Splink compares go
        # straight into a DuckDB table, bucket by bucket, keyed by their position in `accounts`.
        accounts: list[BulkAccount] = []
        table = RecordTable()
        try:
            for bucket in range(BUCKETS):
                rows = self.store.accounts_in_bucket(bucket)
                records = ident.decrypt_rows(rows)
                batch = []
                for row in rows:
                    rec = records.get(row["account_id"])
                    if rec is None or (row["person_id"] is None and not row["staged"]):
                        continue
                    batch.append((len(accounts), rec["match"]))
                    accounts.append(self._bulk_account(row, rec))
                table.append(batch)
                del rows, records, batch
                if bucket % 16 == 15:
                    yield Progress("reading", bucket + 1, BUCKETS)
            staged = sum(1 for a in accounts if a.person_id is None)
            if not staged:
                yield Progress("done", model_version=getattr(ident.scorer, "version", "") or "")
                return
            table.drop_widely_shared(ident.max_accounts_per_identifier)
            limits = Limits(ident.thresholds.link, ident.thresholds.review, ident.max_persons_per_identifier,
                            ident.max_accounts_per_identifier, ident.kind_limits)
            work = groundwork(accounts, limits, self.store.contested_identifiers())
            # A family's landline that does not link must not link through the model either.
            table.drop_identifiers(ident.identifier_token, work.not_linking)
            model = self._current_model()
            if model is None and table.count >= MIN_TRAINING_RECORDS:
                yield Progress("training", 0, 1)
                model = self._train(table, accounts, seed)
            version = model.version if model else ""
            scored = None
            if model is not None:  # too few accounts for a first model: exact identifiers only, as in real time
                yield Progress("scoring", 0, table.count, model_version=version)
                scored = table.scored_pairs(model, predict_threshold=min(ident.thresholds.link, 0.5),
                                            keep_from=min(ident.thresholds.review, ident.thresholds.link))
        finally:
            table.close()
        yield Progress("clustering", 0, staged, model_version=version)
        pairs = _pairs_by_id(scored, accounts) if scored is not None else ()
        # Splink's clusters at the link threshold are the connected components of the pairs at or
        # above it (`match_probability >= threshold`, the same comparison): every pair the plan
        # may join on lies inside one cluster, so the clustering itself is not run.
        decided = plan(accounts, pairs, None, limits=limits, cannot_link=self.store.all_cannot_link(), prepared=work)
        del pairs, scored, accounts, work
        yield from self._write(decided, version, staged)
        log.info("bulk_linked", count=len(decided.assignments), model_version=version,
                 duration_ms=round((time.perf_counter() - started) * 1000))

    def _bulk_account(self, row: dict[str, Any], rec: dict[str, Any]) -> BulkAccount:
        token = self.identity.identifier_token
        identifiers: dict[str, list[str]] = {}
        linking = []
        for item in rec.get("identifiers", ()):
            kind, value = item["kind"], item["value"]
            t = token(kind, value)
            held = identifiers.setdefault(kind, [])
            if t not in held:
                held.append(t)
            if Identifier(kind, value).links:
                linking.append(t)
        return BulkAccount(account_id=row["account_id"], person_id=row["person_id"],
                           person_created_at=int(row["person_created_at"] or 0),
                           traits=guards.Traits.of(rec["match"]),
                           identifiers={k: tuple(v) for k, v in identifiers.items()},
                           linking=tuple(dict.fromkeys(linking)))

    def _current_model(self) -> TrainedModel | None:
        try:
            return self.identity.current_model()
        except NotFound:
            return None

    def _train(self, table: RecordTable, accounts: list[BulkAccount], seed: int) -> TrainedModel:
        n = table.count
        # The same positions `random.sample` picks from any sequence of n records.
        positions = range(n) if n <= TRAINING_SAMPLE else random.Random(seed or 42).sample(range(n), TRAINING_SAMPLE)
        sample = table.records(positions, [a.account_id for a in accounts])
        return self.identity.install_model(sample, seed)

    def _write(self, decided: Plan, model_version: str, staged: int) -> Iterator[Progress]:
        now = now_ms()
        self.store.mark_contested(decided.contested)
        merged = 0
        for survivor, absorbed in decided.merges:
            self.store.merge_persons(survivor, absorbed, now, reason="bulk_link", method=METHOD_PROBABILISTIC)
            merged += len(absorbed)
        review = [{"id": pair_id(a, b), "a": a, "b": b, "probability": p} for a, b, p in decided.review]
        for start in range(0, len(review), WRITE_BATCH):
            self.store.put_review(review[start:start + WRITE_BATCH], now)
        for start in range(0, len(decided.new_persons), WRITE_BATCH):
            self.store.create_persons(decided.new_persons[start:start + WRITE_BATCH], now)
        linked = 0
        total = len(decided.assignments)
        for start in range(0, total, WRITE_BATCH):
            rows = [{"account_id": a.account_id, "person_id": a.person_id, "method": a.method,
                     "probability": float(a.probability)} for a in decided.assignments[start:start + WRITE_BATCH]]
            linked += self.store.assign_staged(rows, model_version, now)
            yield Progress("writing", min(start + WRITE_BATCH, total), total, model_version=model_version)
        yield Progress("done", staged, staged, linked_accounts=linked, created_persons=len(decided.new_persons),
                       merged_persons=merged, model_version=model_version)
