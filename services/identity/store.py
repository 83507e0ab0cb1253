"""The person graph in portable Cypher. Every write is one atomic, idempotent statement.

Nodes: Person {id, created_at, updated_at, merged_into}, Account {id, source, ref, attrs, …},
Identifier {token, kind} (blind-index token, never the plaintext), BlockKey {token},
PersonChange {seq, kind, person, related, accounts, at}, Decision {id, kind, a, b, …},
ReviewPair {id, a, b, probability}, Suppression {token}, Counter {name, value}.
Edges: (Account)-[:HAS]->(Identifier), (Account)-[:BLOCK]->(BlockKey),
(Account)-[:BELONGS_TO {method, probability, model_version, at}]->(Person),
(Person)-[:MERGED_INTO]->(Person).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.common.graph.port import GraphClient, Schema
from services.common.graph.statements import cypher

SCHEMA = Schema(
    unique=[("Person", "id"), ("Account", "id"), ("Identifier", "token"), ("BlockKey", "token"),
            ("PersonChange", "seq"), ("Decision", "id"), ("ReviewPair", "id"), ("Suppression", "token"),
            ("Counter", "name"), ("Model", "version"), ("Lease", "name")],
    indexes=[("Person", "merged_into"), ("Account", "source"), ("Account", "bucket"), ("Decision", "a"),
             ("Decision", "b"), ("ReviewPair", "a"), ("ReviewPair", "b"), ("PersonChange", "person")],
)
BUCKETS = 256  # accounts are read in full, bucket by bucket (first byte of the account id)


def bucket_of(account_id: str) -> int:
    return int(account_id[:2], 16) % BUCKETS

def _account_edges(verb: str) -> str:
    """The end of both account writes: identifiers and blocking keys with the account's edges to
    them (`verb` MERGE where edges may exist, CREATE for a new account), and the row returned.

    A node that does not exist yet is created with its properties inline instead of by MERGE …
    ON CREATE SET: in FalkorDB a SET that follows a node creation in the same statement costs time
    in proportion to the size of the graph (docs/architecture.md, "Write statements"). The token
    lists must be free of duplicates (`IdentityStore` makes them so)."""
    return f"""
    WITH a, p
    UNWIND CASE WHEN size($identifiers) = 0 THEN [null] ELSE $identifiers END AS ident
    OPTIONAL MATCH (i:Identifier {{token: ident.token}})
    FOREACH (ignored IN CASE WHEN ident IS NOT NULL AND i IS NULL THEN [1] ELSE [] END |
      CREATE (a)-[:HAS]->(:Identifier {{token: ident.token, kind: ident.kind, line_type: ident.line_type}}))
    FOREACH (ignored IN CASE WHEN i IS NULL THEN [] ELSE [1] END | {verb} (a)-[:HAS]->(i))
    WITH DISTINCT a, p
    UNWIND CASE WHEN size($block_tokens) = 0 THEN [null] ELSE $block_tokens END AS token
    OPTIONAL MATCH (k:BlockKey {{token: token}})
    FOREACH (ignored IN CASE WHEN token IS NOT NULL AND k IS NULL THEN [1] ELSE [] END |
      CREATE (a)-[:BLOCK]->(:BlockKey {{token: token}}))
    FOREACH (ignored IN CASE WHEN k IS NULL THEN [] ELSE [1] END | {verb} (a)-[:BLOCK]->(k))
    WITH DISTINCT a, p
    RETURN a.id AS account_id, p.id AS person_id, a.created_at AS created_at
    """


# Properties are set on nodes that exist before anything is created; what is missing is created
# with its properties inline (see `_account_edges`).
_TOUCH_KNOWN_PERSON = """
    FOREACH (ignored IN CASE WHEN known IS NULL THEN [] ELSE [1] END | SET known.updated_at = $now)
"""
_CREATE_PERSON = """
    FOREACH (ignored IN CASE WHEN known IS NULL THEN [1] ELSE [] END |
      CREATE (:Person {id: $person_id, created_at: $now, updated_at: $now}))
"""

# The person an account is written to must be what the link decided on: a new one that does not
# exist yet, or a live one — not one merged into another or erased since the link read the graph
# (the write would attach the account to a tombstone, or bring an erased id back). Counted, not
# tested for null: see CREATE_ACCOUNT on FalkorDB's leading OPTIONAL MATCH.
_PERSON_AS_DECIDED = "CASE WHEN $new_person THEN held = 0 ELSE held = 1 AND merged = 0 END"

UPSERT_ACCOUNT = cypher(
    "identity.upsert_account",
    """
    OPTIONAL MATCH (target:Person {id: $person_id})
    OPTIONAL MATCH (:Account {id: $account_id})-[:BELONGS_TO]->(holder:Person)
    WITH count(DISTINCT target) AS held, count(DISTINCT target.merged_into) AS merged,
         collect(DISTINCT holder.id) AS holders
    WHERE """ + _PERSON_AS_DECIDED + """
      AND holders = CASE WHEN $current_person IS NULL THEN [] ELSE [$current_person] END
    OPTIONAL MATCH (known:Person {id: $person_id})
    OPTIONAL MATCH (existing:Account {id: $account_id})
    """ + _TOUCH_KNOWN_PERSON + """
    FOREACH (ignored IN CASE WHEN existing IS NULL THEN [] ELSE [1] END |
      SET existing.updated_at = $now, existing.ref = $ref, existing.attrs = $attrs, existing.bucket = $bucket,
          existing.staged = null)
    """ + _CREATE_PERSON + """
    FOREACH (ignored IN CASE WHEN existing IS NULL THEN [1] ELSE [] END |
      CREATE (:Account {id: $account_id, created_at: $now, updated_at: $now, source: $source, ref: $ref,
                        attrs: $attrs, bucket: $bucket}))
    WITH count(*) AS written
    WHERE written > 0
    MATCH (p:Person {id: $person_id})
    MATCH (a:Account {id: $account_id})
    OPTIONAL MATCH (a)-[old:BELONGS_TO]->(other:Person)
    WHERE other.id <> p.id
    DELETE old
    WITH DISTINCT a, p
    OPTIONAL MATCH (a)-[b:BELONGS_TO]->(p)
    FOREACH (ignored IN CASE WHEN b IS NULL THEN [1] ELSE [] END |
      CREATE (a)-[:BELONGS_TO {method: $method, probability: $probability, model_version: $model_version,
                               at: $now}]->(p))
    WITH DISTINCT a, p
    OPTIONAL MATCH (a)-[h:HAS]->(stale:Identifier)
    WHERE NOT stale.token IN $identifier_tokens
    DELETE h
    WITH DISTINCT a, p
    OPTIONAL MATCH (a)-[bk:BLOCK]->(staleKey:BlockKey)
    WHERE NOT staleKey.token IN $block_tokens
    DELETE bk
    """ + _account_edges("MERGE"),
    write=True,
)

# The upsert of an account that does not exist yet: its edges are created, not merged (nothing to
# merge with, and no stale edges to look for). When the account exists — created concurrently, or
# this is a retry whose first reply was lost — it returns no row and changes nothing, and the
# caller falls back to UPSERT_ACCOUNT. (`count` rather than `WHERE existing IS NULL`: FalkorDB
# 4.x applies a null test on a leading OPTIONAL MATCH inside the optional part, which would let
# an existing account through.)
CREATE_ACCOUNT = cypher(
    "identity.create_account",
    """
    OPTIONAL MATCH (existing:Account {id: $account_id})
    OPTIONAL MATCH (target:Person {id: $person_id})
    WITH count(existing) AS found, count(target) AS held, count(target.merged_into) AS merged
    WHERE found = 0 AND """ + _PERSON_AS_DECIDED + """
    OPTIONAL MATCH (known:Person {id: $person_id})
    """ + _TOUCH_KNOWN_PERSON + _CREATE_PERSON + """
    WITH count(*) AS written
    WHERE written > 0
    MATCH (p:Person {id: $person_id})
    CREATE (a:Account {id: $account_id, created_at: $now, updated_at: $now, source: $source, ref: $ref,
                       attrs: $attrs, bucket: $bucket})
           -[:BELONGS_TO {method: $method, probability: $probability, model_version: $model_version,
                          at: $now}]->(p)
    """ + _account_edges("CREATE"),
    write=True,
)

# Bulk import. A staged account has no BELONGS_TO edge yet, so every lookup, candidate search and
# deterministic match (all go through BELONGS_TO) ignores it until it is linked. First the batch's
# missing identifiers and blocking keys are created (each once: the lists are distinct), then the
# accounts this very execution creates, with their edges — a retried or re-sent batch adds nothing.
# Nothing is SET after a node creation (see `_account_edges`).
STAGE_ACCOUNTS = cypher(
    "identity.stage_accounts",
    """
    UNWIND $identifiers AS ident
    OPTIONAL MATCH (i:Identifier {token: ident.token})
    FOREACH (ignored IN CASE WHEN i IS NULL THEN [1] ELSE [] END |
      CREATE (:Identifier {token: ident.token, kind: ident.kind, line_type: ident.line_type}))
    WITH count(*) AS identifiers_seen
    UNWIND CASE WHEN $block_tokens = '' THEN [] ELSE split($block_tokens, ' ') END AS token
    OPTIONAL MATCH (k:BlockKey {token: token})
    FOREACH (ignored IN CASE WHEN k IS NULL THEN [1] ELSE [] END | CREATE (:BlockKey {token: token}))
    WITH count(*) AS keys_seen
    UNWIND $accounts AS row
    OPTIONAL MATCH (existing:Account {id: row.account_id})
    WITH row, count(existing) AS found
    WHERE found = 0
    CREATE (a:Account {id: row.account_id, created_at: $now, updated_at: $now, source: row.source, ref: row.ref,
                       attrs: row.attrs, bucket: row.bucket, staged: true})
    WITH a, row
    UNWIND CASE WHEN size(row.identifiers) = 0 THEN [null] ELSE row.identifiers END AS ident
    OPTIONAL MATCH (i:Identifier {token: ident.token})
    FOREACH (ignored IN CASE WHEN i IS NULL THEN [] ELSE [1] END | CREATE (a)-[:HAS]->(i))
    WITH DISTINCT a, row
    UNWIND CASE WHEN row.block_tokens = '' THEN [null] ELSE split(row.block_tokens, ' ') END AS token
    OPTIONAL MATCH (k:BlockKey {token: token})
    FOREACH (ignored IN CASE WHEN k IS NULL THEN [] ELSE [1] END | CREATE (a)-[:BLOCK]->(k))
    WITH DISTINCT a
    RETURN count(a) AS staged
    """,
    write=True,
)

ACCOUNT_STATES = cypher(
    "identity.account_states",
    """
    UNWIND $account_ids AS aid
    MATCH (a:Account {id: aid})
    RETURN a.id AS account_id, coalesce(a.staged, false) AS staged
    """,
)

ACCOUNTS_IN_BUCKET = cypher(
    "identity.accounts_in_bucket",
    """
    MATCH (a:Account {bucket: $bucket})
    OPTIONAL MATCH (a)-[:BELONGS_TO]->(p:Person)
    RETURN a.id AS account_id, a.attrs AS attrs, coalesce(a.staged, false) AS staged, p.id AS person_id,
           p.created_at AS person_created_at
    """,
)

CONTESTED_IDENTIFIERS = cypher(
    "identity.contested_identifiers",
    "MATCH (i:Identifier) WHERE i.contested = true RETURN i.token AS token",
)

ALL_CANNOT_LINK = cypher(
    "identity.all_cannot_link",
    "MATCH (x:Account)-[:CANNOT_LINK]->(y:Account) RETURN x.id AS a, y.id AS b",
)

CREATE_PERSONS = cypher(
    "identity.create_persons",
    """
    UNWIND $person_ids AS pid
    OPTIONAL MATCH (p:Person {id: pid})
    FOREACH (ignored IN CASE WHEN p IS NULL THEN [1] ELSE [] END |
      CREATE (:Person {id: pid, created_at: $now, updated_at: $now}))
    RETURN count(*) AS persons
    """,
    write=True,
)

# A person the plan assigned accounts to may have been merged into another by a real-time link or
# a manual merge while the bulk link ran: its accounts go to the survivor. One erased meanwhile
# gets nothing: its accounts stay staged for the next bulk link.
ASSIGN_STAGED = cypher(
    "identity.assign_staged",
    """
    UNWIND $rows AS row
    MATCH (a:Account {id: row.account_id})
    WHERE a.staged = true
    MATCH (planned:Person {id: row.person_id})
    OPTIONAL MATCH (planned)-[:MERGED_INTO*1..16]->(survivor:Person)
    WHERE survivor.merged_into IS NULL
    WITH a, row, coalesce(survivor, planned) AS p
    WHERE p.merged_into IS NULL
    CREATE (a)-[:BELONGS_TO {method: row.method, probability: row.probability, model_version: $model_version,
                             at: $now}]->(p)
    SET a.staged = null, p.updated_at = $now
    RETURN count(a) AS assigned
    """,
    write=True,
)

# Everything a real-time link decides on, read in one round trip (each branch is an indexed
# lookup): suppressed tokens, the account's current person, the persons its own cannot-link
# decisions point at, the persons holding each identifier, and the accounts sharing a blocking key
# with their wrapped data keys (the key store's `SubjectKey` nodes), so that decrypting them costs
# no further round trip.
# The candidate branch does not drop the account itself (`a.id <> $account_id` turns the indexed
# lookup into a scan on FalkorDB, see CANDIDATES_BY_BLOCK); the store does.
LINK_CONTEXT = cypher(
    "identity.link_context",
    """
    UNWIND $suppress_tokens AS token
    MATCH (s:Suppression {token: token})
    RETURN 'suppressed' AS part, s.token AS token, null AS kind, null AS persons, null AS accounts,
           null AS contested, null AS account_id, null AS attrs, null AS person_id, null AS method,
           null AS probability, null AS wrapped
    UNION ALL
    MATCH (a:Account {id: $account_id})-[b:BELONGS_TO]->(p:Person)
    RETURN 'current' AS part, null AS token, null AS kind, null AS persons, null AS accounts,
           null AS contested, a.id AS account_id, null AS attrs, p.id AS person_id, b.method AS method,
           b.probability AS probability, null AS wrapped
    UNION ALL
    MATCH (a:Account {id: $account_id})-[:CANNOT_LINK]-(:Account)-[:BELONGS_TO]->(q:Person)
    RETURN DISTINCT 'cannot_link' AS part, null AS token, null AS kind, null AS persons, null AS accounts,
           null AS contested, null AS account_id, null AS attrs, q.id AS person_id, null AS method,
           null AS probability, null AS wrapped
    UNION ALL
    UNWIND $identifier_tokens AS token
    MATCH (i:Identifier {token: token})<-[:HAS]-(a:Account)-[:BELONGS_TO]->(p:Person)
    RETURN 'identifier' AS part, token, i.kind AS kind, collect(DISTINCT p.id) AS persons,
           count(DISTINCT a) AS accounts, coalesce(i.contested, false) AS contested, null AS account_id,
           null AS attrs, null AS person_id, null AS method, null AS probability, null AS wrapped
    UNION ALL
    UNWIND $block_tokens AS token
    MATCH (k:BlockKey {token: token})<-[:BLOCK]-(a:Account)-[:BELONGS_TO]->(p:Person)
    WITH DISTINCT a, p
    LIMIT $limit
    OPTIONAL MATCH (dataKey:SubjectKey {subject: $key_prefix + a.id})
    RETURN 'candidate' AS part, null AS token, null AS kind, null AS persons, null AS accounts,
           null AS contested, a.id AS account_id, a.attrs AS attrs, p.id AS person_id, null AS method,
           null AS probability, dataKey.wrapped AS wrapped
    """,
)

# The persons a link may join, in one round trip: every account with its record, identifiers and
# the persons its cannot-link decisions point at.
LINK_PERSONS = cypher(
    "identity.link_persons",
    """
    UNWIND $person_ids AS pid
    MATCH (a:Account)-[:BELONGS_TO]->(p:Person {id: pid})
    RETURN p.id AS person_id, p.created_at AS person_created_at, a.id AS account_id, a.attrs AS attrs,
           [(a)-[:HAS]->(i:Identifier) | {kind: i.kind, token: i.token}] AS identifiers,
           [(a)-[:CANNOT_LINK]-(:Account)-[:BELONGS_TO]->(q:Person) | q.id] AS cannot_link
    """,
)

# One bulk link at a time: a lease held by one owner, renewed as the link makes progress, taken
# over only once it has expired (its holder died). One atomic statement each way.
TAKE_LEASE = cypher(
    "identity.take_lease",
    """
    MERGE (l:Lease {name: $name})
    WITH l
    WHERE l.owner IS NULL OR l.owner = $owner OR l.expires_at < $now
    SET l.owner = $owner, l.expires_at = $now + $ttl
    RETURN l.owner AS owner
    """,
    write=True,
)

RELEASE_LEASE = cypher(
    "identity.release_lease",
    """
    MATCH (l:Lease {name: $name})
    WHERE l.owner = $owner
    SET l.owner = null, l.expires_at = null
    RETURN l.name AS name
    """,
    write=True,
)

ACCOUNT_PERSON = cypher(
    "identity.account_person",
    """
    MATCH (a:Account {id: $account_id})-[b:BELONGS_TO]->(p:Person)
    RETURN p.id AS person_id, b.method AS method, b.probability AS probability
    """,
)

PERSONS_BY_IDENTIFIERS = cypher(
    "identity.persons_by_identifiers",
    """
    UNWIND $tokens AS token
    MATCH (i:Identifier {token: token})<-[:HAS]-(a:Account)-[:BELONGS_TO]->(p:Person)
    RETURN token, i.kind AS kind, collect(DISTINCT p.id) AS persons, count(DISTINCT a) AS accounts,
           coalesce(i.contested, false) AS contested
    """,
)

MARK_CONTESTED = cypher(
    "identity.mark_contested",
    """
    UNWIND $tokens AS token
    MATCH (i:Identifier {token: token})
    SET i.contested = true
    RETURN count(i) AS marked
    """,
    write=True,
)

CANDIDATES_BY_BLOCK = cypher(
    "identity.candidates_by_block",
    """
    UNWIND $tokens AS token
    MATCH (k:BlockKey {token: token})<-[:BLOCK]-(a:Account)-[:BELONGS_TO]->(p:Person)
    WITH DISTINCT a, p
    LIMIT $limit
    RETURN a.id AS account_id, a.attrs AS attrs, p.id AS person_id, p.created_at AS person_created_at
    """,
)

SURVIVING_PERSONS = cypher(
    "identity.surviving_persons",
    """
    UNWIND $person_ids AS pid
    MATCH (start:Person {id: pid})
    OPTIONAL MATCH (start)-[:MERGED_INTO*1..16]->(survivor:Person)
    WHERE survivor.merged_into IS NULL
    WITH pid, coalesce(survivor, start) AS p
    WHERE p.merged_into IS NULL
    RETURN pid AS requested, p.id AS person_id
    """,
)

PERSONS_OF_ACCOUNTS = cypher(
    "identity.persons_of_accounts",
    """
    UNWIND $account_ids AS aid
    MATCH (a:Account {id: aid})-[:BELONGS_TO]->(p:Person)
    RETURN aid AS account_id, p.id AS person_id
    """,
)

@dataclass(frozen=True)
class PersonScope:
    """What `IdentityStore.person_scopes` reads of one person."""

    person_id: str
    created_at: int
    updated_at: int
    merged: list[str]  # the persons merged into it, at any depth
    accounts: list[tuple[str, str | None, list[str]]]  # (account id, link method, identifier tokens)


PERSON_SCOPES = cypher(
    "identity.person_scopes",
    """
    UNWIND $person_ids AS pid
    MATCH (p:Person {id: pid})
    OPTIONAL MATCH (a:Account)-[b:BELONGS_TO]->(p)
    OPTIONAL MATCH (a)-[:HAS]->(i:Identifier)
    WITH p, a, b, collect(i.token) AS tokens
    WITH p, a.id + ' ' + coalesce(b.method, '-') + reduce(joined = '', t IN tokens | joined + ' ' + t) AS account
    WITH p, collect(account) AS accounts
    OPTIONAL MATCH (m:Person)-[:MERGED_INTO*1..16]->(p)
    RETURN p.id AS person_id, p.created_at AS created_at, p.updated_at AS updated_at,
           reduce(joined = '', x IN accounts | joined + ';' + x) AS accounts, collect(DISTINCT m.id) AS merged
    """,
)

PERSON_ACCOUNTS_WITH_KEYS = cypher(
    "identity.person_accounts_with_keys",
    """
    UNWIND $person_ids AS pid
    MATCH (a:Account)-[:BELONGS_TO]->(p:Person {id: pid})
    RETURN p.id AS person_id, p.created_at AS person_created_at, a.id AS account_id, a.attrs AS attrs
    """,
)

ACCOUNTS_WITH_KEYS = cypher(
    "identity.accounts_with_keys",
    """
    UNWIND $account_ids AS aid
    MATCH (a:Account {id: aid})-[b:BELONGS_TO]->(p:Person)
    RETURN a.id AS account_id, a.attrs AS attrs, p.id AS person_id, b.method AS method,
           b.probability AS probability
    """,
)

CANNOT_LINK_PERSONS = cypher(
    "identity.cannot_link_persons",
    """
    MATCH (x:Account)-[:CANNOT_LINK]-(y:Account)-[:BELONGS_TO]->(p:Person)
    WHERE x.id IN $account_ids AND p.id IN $person_ids
    RETURN DISTINCT x.id AS account_id, p.id AS person_id
    """,
)

# Every pair a cannot-link decision separates where at least one person is given: a caller that
# reads its persons in chunks must not lose the pairs whose two persons fall into different chunks.
CANNOT_LINK_PAIRS = cypher(
    "identity.cannot_link_pairs",
    """
    UNWIND $person_ids AS pid
    MATCH (p1:Person {id: pid})<-[:BELONGS_TO]-(:Account)-[:CANNOT_LINK]-(:Account)-[:BELONGS_TO]->(p2:Person)
    WHERE p1.id <> p2.id
    RETURN DISTINCT p1.id AS a, p2.id AS b
    """,
)

RECORD_DECISION = cypher(
    "identity.record_decision",
    """
    MATCH (a:Account {id: $a})
    MATCH (b:Account {id: $b})
    MERGE (d:Decision {id: $id})
    ON CREATE SET d.kind = $kind, d.a = $a, d.b = $b, d.reason = $reason, d.author = $author, d.at = $now
    FOREACH (ignored IN CASE WHEN $kind = 'cannot_link' THEN [1] ELSE [] END | MERGE (a)-[:CANNOT_LINK]->(b))
    FOREACH (ignored IN CASE WHEN $kind = 'must_link' THEN [1] ELSE [] END | MERGE (a)-[:MUST_LINK]->(b))
    RETURN d.kind AS kind, d.a AS a, d.b AS b, d.reason AS reason, d.author AS author, d.at AS at
    """,
    write=True,
)

DECISIONS_BETWEEN = cypher(
    "identity.decisions_between",
    """
    MATCH (d:Decision)
    WHERE (d.a = $a AND d.b = $b) OR (d.a = $b AND d.b = $a)
    RETURN d.kind AS kind, d.a AS a, d.b AS b, d.reason AS reason, d.author AS author, d.at AS at
    ORDER BY d.at DESC
    """,
)

PERSON_IDENTIFIERS = cypher(
    "identity.person_identifiers",
    """
    UNWIND $person_ids AS pid
    MATCH (p:Person {id: pid})<-[:BELONGS_TO]-(:Account)-[:HAS]->(i:Identifier)
    RETURN p.id AS person_id, i.kind AS kind, collect(DISTINCT i.token) AS tokens
    """,
)

PUT_REVIEW = cypher(
    "identity.put_review",
    """
    UNWIND $pairs AS pair
    OPTIONAL MATCH (r:ReviewPair {id: pair.id})
    FOREACH (ignored IN CASE WHEN r IS NULL THEN [] ELSE [1] END | SET r.probability = pair.probability)
    WITH collect(CASE WHEN r IS NULL THEN pair END) AS missing
    UNWIND missing AS pair
    CREATE (:ReviewPair {id: pair.id, a: pair.a, b: pair.b, created_at: $now, probability: pair.probability})
    RETURN count(*) AS created
    """,
    write=True,
)

LIST_REVIEW = cypher(
    "identity.list_review",
    """
    MATCH (r:ReviewPair)
    WHERE r.id > $after
    OPTIONAL MATCH (a:Account {id: r.a})
    OPTIONAL MATCH (b:Account {id: r.b})
    RETURN r.id AS id, r.a AS a, r.b AS b, r.probability AS probability, r.created_at AS created_at,
           a.ref AS ref_a, b.ref AS ref_b
    ORDER BY r.id
    LIMIT $limit
    """,
)

RESOLVE_REVIEW = cypher(
    "identity.resolve_review",
    "MATCH (r:ReviewPair {id: $id}) DELETE r RETURN count(*) AS resolved",
    write=True,
)

GET_PERSON = cypher(
    "identity.get_person",
    """
    MATCH (start:Person {id: $person_id})
    OPTIONAL MATCH (start)-[:MERGED_INTO*1..16]->(survivor:Person)
    WHERE survivor.merged_into IS NULL
    WITH coalesce(survivor, start) AS p
    WHERE p.merged_into IS NULL
    OPTIONAL MATCH (a:Account)-[:BELONGS_TO]->(p)
    WITH p, count(a) AS accounts
    OPTIONAL MATCH (m:Person)-[:MERGED_INTO*1..16]->(p)
    RETURN p.id AS id, p.created_at AS created_at, p.updated_at AS updated_at, accounts,
           collect(DISTINCT m.id) AS merged
    """,
)

LIST_ACCOUNTS = cypher(
    "identity.list_accounts",
    """
    MATCH (p:Person {id: $person_id})<-[b:BELONGS_TO]-(a:Account)
    WITH a, b
    WHERE a.id > $after
    RETURN a.id AS id, a.source AS source, a.ref AS ref, a.attrs AS attrs, a.created_at AS created_at,
           a.updated_at AS updated_at, b.method AS method, b.probability AS probability
    ORDER BY a.id
    LIMIT $limit
    """,
)

ACCOUNTS_OF_PERSONS = cypher(
    "identity.accounts_of_persons",
    """
    UNWIND $person_ids AS pid
    MATCH (a:Account)-[b:BELONGS_TO]->(p:Person {id: pid})
    RETURN p.id AS person_id, a.id AS account_id, a.attrs AS attrs, b.method AS method,
           b.probability AS probability
    """,
)

MERGE_PERSONS = cypher(
    "identity.merge_persons",
    """
    MATCH (s:Person {id: $survivor})
    WHERE s.merged_into IS NULL
    UNWIND $absorbed AS absorbed_id
    MATCH (x:Person {id: absorbed_id})
    WHERE x.merged_into IS NULL AND x.id <> s.id
    SET x.merged_into = s.id, x.updated_at = $now, s.updated_at = $now
    MERGE (x)-[:MERGED_INTO]->(s)
    WITH s, x
    OPTIONAL MATCH (acc:Account)-[r:BELONGS_TO]->(x)
    FOREACH (ignored IN CASE WHEN acc IS NULL THEN [] ELSE [1] END |
      MERGE (acc)-[nr:BELONGS_TO]->(s)
      ON CREATE SET nr.method = coalesce($method, r.method), nr.probability = r.probability,
                    nr.model_version = r.model_version, nr.at = $now
      DELETE r)
    WITH s, collect(DISTINCT x.id) AS merged
    WHERE size(merged) > 0
    MERGE (c:Counter {name: 'person_changes'})
    SET c.value = coalesce(c.value, 0) + 1
    CREATE (e:PersonChange {seq: c.value, kind: 'merged', person: s.id, related: merged, accounts: [],
                            at: $now, reason: $reason})
    RETURN e.seq AS seq, merged
    """,
    write=True,
)

# A split moves the accounts and records the cannot-link decisions that keep them apart in one
# statement: a crash between the two would leave a split that the next link of a moved account
# undoes. The new person's id comes from the request id; `split_fingerprint` (the person and the
# accounts asked for) makes a retry of the same request a no-op and a reused request id, naming
# another person or other accounts, write nothing (persons split before fingerprints existed are
# matched by the person they were split from).
SPLIT_PERSON = cypher(
    "identity.split_person",
    """
    MATCH (p:Person {id: $person_id})
    WHERE p.merged_into IS NULL
    OPTIONAL MATCH (prior:Person {id: $new_person_id})
    WITH p, prior
    WHERE prior IS NULL OR prior.split_fingerprint = $fingerprint
       OR (prior.split_fingerprint IS NULL AND prior.split_from = p.id)
    MERGE (n:Person {id: $new_person_id})
    ON CREATE SET n.created_at = $now, n.split_from = p.id, n.split_fingerprint = $fingerprint
    SET n.updated_at = $now, p.updated_at = $now
    WITH p, n
    UNWIND $account_ids AS account_id
    MATCH (a:Account {id: account_id})-[r:BELONGS_TO]->(p)
    MERGE (a)-[nr:BELONGS_TO]->(n)
    ON CREATE SET nr.method = 'manual', nr.probability = 1.0, nr.at = $now
    DELETE r
    WITH p, n, collect(a.id) AS moved
    UNWIND CASE WHEN size($decisions) = 0 THEN [null] ELSE $decisions END AS decision
    OPTIONAL MATCH (x:Account {id: decision.a})
    OPTIONAL MATCH (y:Account {id: decision.b})
    FOREACH (ignored IN CASE WHEN x IS NULL OR y IS NULL OR NOT (x.id IN moved OR y.id IN moved) THEN []
                             ELSE [1] END |
      MERGE (d:Decision {id: decision.id})
      ON CREATE SET d.kind = 'cannot_link', d.a = decision.a, d.b = decision.b, d.reason = $reason,
                    d.author = $author, d.at = $now
      MERGE (x)-[:CANNOT_LINK]->(y))
    WITH DISTINCT p, n, moved
    MERGE (c:Counter {name: 'person_changes'})
    SET c.value = coalesce(c.value, 0) + 1
    CREATE (e:PersonChange {seq: c.value, kind: 'split', person: p.id, related: [n.id], accounts: moved,
                            at: $now, reason: $reason})
    RETURN e.seq AS seq, moved
    """,
    write=True,
)

SPLIT_FINGERPRINT = cypher(
    "identity.split_fingerprint",
    "MATCH (n:Person {id: $person_id}) RETURN n.split_fingerprint AS fingerprint, n.split_from AS split_from",
)

CHANGES_AFTER = cypher(
    "identity.changes_after",
    """
    MATCH (e:PersonChange)
    WHERE e.seq > $after
    RETURN e.seq AS seq, e.kind AS kind, e.person AS person, e.related AS related, e.accounts AS accounts,
           e.at AS at
    ORDER BY e.seq
    LIMIT $limit
    """,
)

DELETE_PERSON = cypher(
    "identity.delete_person",
    """
    MATCH (p:Person {id: $person_id})
    OPTIONAL MATCH (m:Person)-[:MERGED_INTO*1..16]->(p)
    WITH p, collect(DISTINCT m) AS absorbed
    OPTIONAL MATCH (a:Account)-[:BELONGS_TO]->(p)
    OPTIONAL MATCH (a)-[:HAS]->(i:Identifier)
    OPTIONAL MATCH (a)-[:BLOCK]->(k:BlockKey)
    WITH p, absorbed, collect(DISTINCT a) AS accounts, collect(DISTINCT i.token) AS identifier_tokens,
         collect(DISTINCT k.token) AS block_tokens
    FOREACH (token IN identifier_tokens + [a IN accounts | a.id] | MERGE (:Suppression {token: token}))
    WITH p, absorbed, accounts, identifier_tokens, block_tokens, [a IN accounts | a.id] AS account_ids
    UNWIND CASE WHEN size(account_ids) = 0 THEN [null] ELSE account_ids END AS aid
    OPTIONAL MATCH (d1:Decision {a: aid})
    WITH p, absorbed, accounts, identifier_tokens, block_tokens, account_ids, aid, collect(d1) AS by_a
    OPTIONAL MATCH (d2:Decision {b: aid})
    WHERE NOT d2.a IN account_ids
    WITH p, absorbed, accounts, identifier_tokens, block_tokens, account_ids, aid, by_a, collect(d2) AS by_b
    OPTIONAL MATCH (r1:ReviewPair {a: aid})
    WITH p, absorbed, accounts, identifier_tokens, block_tokens, account_ids, aid, by_a, by_b,
         collect(r1) AS reviewed_a
    OPTIONAL MATCH (r2:ReviewPair {b: aid})
    WHERE NOT r2.a IN account_ids
    WITH p, absorbed, accounts, identifier_tokens, block_tokens, account_ids, aid, by_a, by_b, reviewed_a,
         collect(r2) AS reviewed_b
    WITH p, absorbed, accounts, identifier_tokens, block_tokens, account_ids,
         collect(by_a + by_b + reviewed_a + reviewed_b) AS per_account
    FOREACH (notes IN per_account | FOREACH (note IN notes | DELETE note))
    WITH p, absorbed, accounts, identifier_tokens, block_tokens, account_ids
    UNWIND [p.id] + [x IN absorbed | x.id] AS changed
    OPTIONAL MATCH (e:PersonChange {person: changed})
    FOREACH (ignored IN CASE WHEN e IS NULL THEN [] ELSE [1] END | SET e.reason = null, e.accounts = [])
    WITH p, absorbed, accounts, identifier_tokens, block_tokens, account_ids, count(e) AS scrubbed
    FOREACH (a IN accounts | DETACH DELETE a)
    FOREACH (x IN absorbed | DETACH DELETE x)
    DETACH DELETE p
    WITH account_ids, identifier_tokens, block_tokens
    MERGE (c:Counter {name: 'person_changes'})
    SET c.value = coalesce(c.value, 0) + 1
    CREATE (e:PersonChange {seq: c.value, kind: 'deleted', person: $person_id, related: [], accounts: [],
                            at: $now})
    RETURN e.seq AS seq, account_ids, identifier_tokens, block_tokens
    """,
    write=True,
)

DELETE_ORPHANS = cypher(
    "identity.delete_orphans",
    """
    UNWIND $tokens AS token
    OPTIONAL MATCH (i:Identifier {token: token})
    WHERE NOT (i)<-[:HAS]-(:Account)
    OPTIONAL MATCH (k:BlockKey {token: token})
    WHERE NOT (k)<-[:BLOCK]-(:Account)
    FOREACH (x IN CASE WHEN i IS NULL THEN [] ELSE [i] END | DELETE x)
    FOREACH (x IN CASE WHEN k IS NULL THEN [] ELSE [k] END | DELETE x)
    RETURN count(*) AS checked
    """,
    write=True,
)

ACCOUNTS_PAGE = cypher(
    "identity.accounts_page",
    """
    MATCH (a:Account)-[:BELONGS_TO]->(p:Person)
    WHERE a.id > $after
    WITH a, p
    ORDER BY a.id
    LIMIT $limit
    RETURN a.id AS account_id, a.attrs AS attrs, p.id AS person_id, p.created_at AS person_created_at
    ORDER BY a.id
    """,
)

PUT_MODEL = cypher(
    "identity.put_model",
    """
    MERGE (m:Model {version: $version})
    ON CREATE SET m.body = $body, m.trained_at = $trained_at, m.training_records = $training_records
    WITH m
    MERGE (c:Counter {name: 'current_model'})
    SET c.version = m.version, c.value = coalesce(c.value, 0) + 1
    RETURN m.version AS version
    """,
    write=True,
)

CURRENT_MODEL = cypher(
    "identity.current_model",
    """
    MATCH (c:Counter {name: 'current_model'})
    MATCH (m:Model {version: c.version})
    RETURN m.version AS version, m.body AS body
    """,
)

CURRENT_MODEL_VERSION = cypher(
    "identity.current_model_version",
    "MATCH (c:Counter {name: 'current_model'}) RETURN c.version AS version",
)

SUPPRESSED = cypher(
    "identity.suppressed",
    "UNWIND $tokens AS token MATCH (s:Suppression {token: token}) RETURN s.token AS token",
)

def _distinct_edges(params: dict[str, Any]) -> dict[str, Any]:
    """An account write's identifiers and blocking keys without duplicates: `_account_edges`
    would otherwise create a missing node once per duplicate."""
    identifiers = list({ident["token"]: ident for ident in params["identifiers"]}.values())
    return {**params, "identifiers": identifiers, "block_tokens": list(dict.fromkeys(params["block_tokens"]))}


@dataclass
class LinkContext:
    """What LINK_CONTEXT read for one account."""

    suppressed: set[str] = field(default_factory=set)
    current: dict[str, Any] | None = None  # person_id, method, probability
    cannot_link: set[str] = field(default_factory=set)  # persons the account's decisions point at
    identifiers: list[dict[str, Any]] = field(default_factory=list)  # as persons_by_identifiers
    candidates: list[dict[str, Any]] = field(default_factory=list)  # as candidates_by_block, + wrapped


@dataclass
class IdentityStore:
    graph: GraphClient

    def ensure_schema(self) -> None:
        self.graph.ensure_schema(SCHEMA)

    def upsert_account(self, **params: Any) -> dict[str, Any] | None:
        """UPSERT_ACCOUNT: the account's row; None when the graph is no longer as the link read it —
        the person not as `new_person` says (merged into another or erased meanwhile, or created
        meanwhile), or the account no longer (or now) on `current_person` (split off, linked
        meanwhile): nothing was written."""
        rows = self.graph.run(UPSERT_ACCOUNT, _distinct_edges(params))
        return rows[0] if rows else None

    def create_account(self, **params: Any) -> dict[str, Any] | None:
        """CREATE_ACCOUNT: the created account's row, or None when the account already existed or
        its person is not as `new_person` says (nothing was written; use `upsert_account`)."""
        rows = self.graph.run(CREATE_ACCOUNT, _distinct_edges(params))
        return rows[0] if rows else None

    def stage_accounts(self, rows: list[dict[str, Any]], now: int) -> int:
        """Rows carry `block_tokens` as one space-separated string: a parameter's every list item
        costs the FalkorDB client a quoting step, and hex tokens never contain a space."""
        if not rows:
            return 0
        identifiers = list({i["token"]: i for row in rows for i in row["identifiers"]}.values())
        blocks = " ".join(dict.fromkeys(t for row in rows for t in row["block_tokens"].split()))
        rows_out = self.graph.run(STAGE_ACCOUNTS, {"accounts": rows, "identifiers": identifiers,
                                                   "block_tokens": blocks, "now": now})
        return int(rows_out[0]["staged"]) if rows_out else 0

    def account_states(self, account_ids: list[str]) -> dict[str, bool]:
        """Account id → whether it is staged (True) or linked (False); unknown ids are absent."""
        if not account_ids:
            return {}
        rows = self.graph.run(ACCOUNT_STATES, {"account_ids": account_ids})
        return {r["account_id"]: bool(r["staged"]) for r in rows}

    def accounts_in_bucket(self, bucket: int) -> list[dict[str, Any]]:
        return self.graph.run(ACCOUNTS_IN_BUCKET, {"bucket": bucket})

    def contested_identifiers(self) -> set[str]:
        return {r["token"] for r in self.graph.run(CONTESTED_IDENTIFIERS, {})}

    def all_cannot_link(self) -> list[tuple[str, str]]:
        return [(r["a"], r["b"]) for r in self.graph.run(ALL_CANNOT_LINK, {})]

    def create_persons(self, person_ids: list[str], now: int) -> None:
        distinct = list(dict.fromkeys(person_ids))
        if distinct:
            self.graph.run(CREATE_PERSONS, {"person_ids": distinct, "now": now})

    def assign_staged(self, rows: list[dict[str, Any]], model_version: str, now: int) -> int:
        if not rows:
            return 0
        out = self.graph.run(ASSIGN_STAGED, {"rows": rows, "model_version": model_version, "now": now})
        return int(out[0]["assigned"]) if out else 0

    def link_context(self, account_id: str, suppress_tokens: list[str], identifier_tokens: list[str],
                     block_tokens: list[str], limit: int, key_prefix: str = "account:") -> LinkContext:
        """Candidates carry `wrapped`, the wrapped data key of subject `key_prefix + account id`
        (None when it was destroyed)."""
        rows = self.graph.run(LINK_CONTEXT, {
            "account_id": account_id, "suppress_tokens": suppress_tokens, "identifier_tokens": identifier_tokens,
            "block_tokens": block_tokens, "limit": limit + 1, "key_prefix": key_prefix})
        ctx = LinkContext()
        for row in rows:
            part = row["part"]
            if part == "suppressed":
                ctx.suppressed.add(row["token"])
            elif part == "current":
                ctx.current = {"person_id": row["person_id"], "method": row["method"],
                               "probability": row["probability"]}
            elif part == "cannot_link":
                ctx.cannot_link.add(row["person_id"])
            elif part == "identifier":
                ctx.identifiers.append({"token": row["token"], "kind": row["kind"], "persons": row["persons"],
                                        "accounts": row["accounts"], "contested": row["contested"]})
            elif row["account_id"] != account_id:
                ctx.candidates.append({"account_id": row["account_id"], "attrs": row["attrs"],
                                       "person_id": row["person_id"], "wrapped": row["wrapped"]})
        del ctx.candidates[limit:]
        return ctx

    def link_persons(self, person_ids: list[str]) -> list[dict[str, Any]]:
        """One row per (person, account): `person_created_at`, `attrs`, `identifiers` as
        [{kind, token}] and `cannot_link`, the persons the account's cannot-link decisions point at."""
        return self.graph.run(LINK_PERSONS, {"person_ids": person_ids}) if person_ids else []

    def take_lease(self, name: str, owner: str, now: int, ttl_ms: int) -> bool:
        """Takes or renews lease `name` for `owner`; false while another owner holds it unexpired."""
        return bool(self.graph.run(TAKE_LEASE, {"name": name, "owner": owner, "now": now, "ttl": ttl_ms}))

    def release_lease(self, name: str, owner: str) -> None:
        self.graph.run(RELEASE_LEASE, {"name": name, "owner": owner})

    def account_person(self, account_id: str) -> dict[str, Any] | None:
        rows = self.graph.run(ACCOUNT_PERSON, {"account_id": account_id})
        return rows[0] if rows else None

    def persons_by_identifiers(self, tokens: list[str]) -> list[dict[str, Any]]:
        return self.graph.run(PERSONS_BY_IDENTIFIERS, {"tokens": tokens}) if tokens else []

    def mark_contested(self, tokens: list[str]) -> None:
        if tokens:
            self.graph.run(MARK_CONTESTED, {"tokens": tokens})

    def candidates_by_block(self, account_id: str, tokens: list[str], limit: int) -> list[dict[str, Any]]:
        if not tokens:
            return []
        # The account itself is dropped here: on FalkorDB a `WHERE a.id <> $x` turns the indexed
        # lookup into a scan of every account (measured: 0.4 ms → 15 ms per call at 5k accounts).
        rows = self.graph.run(CANDIDATES_BY_BLOCK, {"tokens": tokens, "limit": limit + 1})
        return [r for r in rows if r["account_id"] != account_id][:limit]

    def person_accounts_with_keys(self, person_ids: list[str]) -> list[dict[str, Any]]:
        return self.graph.run(PERSON_ACCOUNTS_WITH_KEYS, {"person_ids": person_ids}) if person_ids else []

    def surviving_persons(self, person_ids: list[str]) -> dict[str, str]:
        """Requested person id → the surviving person it was merged into (or itself); erased or
        unknown ids are absent."""
        if not person_ids:
            return {}
        return {r["requested"]: r["person_id"] for r in self.graph.run(SURVIVING_PERSONS, {"person_ids": person_ids})}

    def persons_of_accounts(self, account_ids: list[str]) -> dict[str, str]:
        if not account_ids:
            return {}
        rows = self.graph.run(PERSONS_OF_ACCOUNTS, {"account_ids": account_ids})
        return {r["account_id"]: r["person_id"] for r in rows}

    def person_scopes(self, person_ids: list[str]) -> list[PersonScope]:
        """Per person: its times, the persons merged into it, and per account the link method and
        identifier tokens — one row per person, the accounts packed in one string (`;` between
        accounts, spaces between an account's id, method and tokens: ids and tokens are hex, a
        method is one word). The FalkorDB client parses each returned value in Python, and
        resolving a batch of subjects read thousands of them as rows per account."""
        if not person_ids:
            return []
        out = []
        for row in self.graph.run(PERSON_SCOPES, {"person_ids": person_ids}):
            accounts = []
            for packed in (row["accounts"] or "").split(";"):
                if packed:
                    account_id, method, *tokens = packed.split(" ")
                    accounts.append((account_id, None if method == "-" else method, tokens))
            out.append(PersonScope(row["person_id"], int(row["created_at"] or 0), int(row["updated_at"] or 0),
                                   [m for m in row["merged"] if m], accounts))
        return out

    def accounts_with_keys(self, account_ids: list[str]) -> list[dict[str, Any]]:
        return self.graph.run(ACCOUNTS_WITH_KEYS, {"account_ids": account_ids})

    def cannot_link_persons(self, account_ids: list[str], person_ids: list[str]) -> set[str]:
        if not person_ids:
            return set()
        rows = self.graph.run(CANNOT_LINK_PERSONS, {"account_ids": account_ids, "person_ids": person_ids})
        return {r["person_id"] for r in rows}

    def cannot_link_pairs(self, person_ids: list[str]) -> set[tuple[str, str]]:
        """(lower id, higher id) of every pair of persons a cannot-link decision separates, where
        at least one of the two is in `person_ids`."""
        if not person_ids:
            return set()
        rows = self.graph.run(CANNOT_LINK_PAIRS, {"person_ids": person_ids})
        return {(r["a"], r["b"]) if r["a"] < r["b"] else (r["b"], r["a"]) for r in rows}

    def record_decision(self, **params: Any) -> dict[str, Any] | None:
        rows = self.graph.run(RECORD_DECISION, params)
        return rows[0] if rows else None

    def decisions_between(self, a: str, b: str) -> list[dict[str, Any]]:
        return self.graph.run(DECISIONS_BETWEEN, {"a": a, "b": b})

    def person_identifiers(self, person_ids: list[str]) -> dict[str, dict[str, set[str]]]:
        out: dict[str, dict[str, set[str]]] = {}
        for row in self.graph.run(PERSON_IDENTIFIERS, {"person_ids": person_ids}) if person_ids else []:
            out.setdefault(row["person_id"], {})[row["kind"]] = set(row["tokens"])
        return out

    def put_review(self, pairs: list[dict[str, Any]], now: int) -> None:
        distinct = list({pair["id"]: pair for pair in pairs}.values())
        if distinct:
            self.graph.run(PUT_REVIEW, {"pairs": distinct, "now": now})

    def list_review(self, after: str, limit: int) -> list[dict[str, Any]]:
        return self.graph.run(LIST_REVIEW, {"after": after, "limit": limit})

    def resolve_review(self, review_id: str) -> None:
        self.graph.run(RESOLVE_REVIEW, {"id": review_id})

    def get_person(self, person_id: str) -> dict[str, Any] | None:
        rows = self.graph.run(GET_PERSON, {"person_id": person_id})
        return rows[0] if rows else None

    def list_accounts(self, person_id: str, after: str, limit: int) -> list[dict[str, Any]]:
        return self.graph.run(LIST_ACCOUNTS, {"person_id": person_id, "after": after, "limit": limit})

    def accounts_of_persons(self, person_ids: list[str]) -> list[dict[str, Any]]:
        return self.graph.run(ACCOUNTS_OF_PERSONS, {"person_ids": person_ids})

    def merge_persons(self, survivor: str, absorbed: list[str], now: int, reason: str,
                      method: str | None = None) -> dict[str, Any] | None:
        rows = self.graph.run(MERGE_PERSONS, {"survivor": survivor, "absorbed": absorbed, "now": now,
                                              "reason": reason, "method": method})
        return rows[0] if rows else None

    def split_person(self, person_id: str, new_person_id: str, account_ids: list[str], now: int, reason: str,
                     *, fingerprint: str, decisions: list[dict[str, str]], author: str = "split"
                     ) -> dict[str, Any] | None:
        """Moves the accounts to the new person with the cannot-link `decisions` ({id, a, b}, a < b);
        None when nothing moved or the new person's id belongs to another split."""
        rows = self.graph.run(SPLIT_PERSON, {"person_id": person_id, "new_person_id": new_person_id,
                                             "account_ids": account_ids, "now": now, "reason": reason,
                                             "fingerprint": fingerprint, "decisions": decisions,
                                             "author": author})
        return rows[0] if rows else None

    def split_origin(self, person_id: str) -> dict[str, Any] | None:
        """The fingerprint and origin of a person made by a split; None for an unknown person."""
        rows = self.graph.run(SPLIT_FINGERPRINT, {"person_id": person_id})
        return rows[0] if rows else None

    def changes_after(self, after: int, limit: int = 500) -> list[dict[str, Any]]:
        return self.graph.run(CHANGES_AFTER, {"after": after, "limit": limit})

    def delete_person(self, person_id: str, now: int) -> dict[str, Any] | None:
        rows = self.graph.run(DELETE_PERSON, {"person_id": person_id, "now": now})
        return rows[0] if rows else None

    def accounts_page(self, after: str, limit: int) -> list[dict[str, Any]]:
        return self.graph.run(ACCOUNTS_PAGE, {"after": after, "limit": limit})

    def put_model(self, version: str, body: str, trained_at: int, training_records: int) -> None:
        self.graph.run(PUT_MODEL, {"version": version, "body": body, "trained_at": trained_at,
                                   "training_records": training_records})

    def current_model(self) -> tuple[str, str] | None:
        rows = self.graph.run(CURRENT_MODEL, {})
        return (rows[0]["version"], rows[0]["body"]) if rows else None

    def current_model_version(self) -> str | None:
        rows = self.graph.run(CURRENT_MODEL_VERSION, {})
        return rows[0]["version"] if rows else None

    def delete_orphans(self, tokens: list[str]) -> None:
        if tokens:
            self.graph.run(DELETE_ORPHANS, {"tokens": tokens})

    def suppressed(self, tokens: list[str]) -> set[str]:
        if not tokens:
            return set()
        return {r["token"] for r in self.graph.run(SUPPRESSED, {"tokens": tokens})}
