"""The probabilistic model's comparisons, as data.

Each level is declared once with its SQL (for Splink/DuckDB) and its Python twin (for the
in-process real-time scorer); tests prove both give the same level for the same pair. Levels use
only exact, phonetic, prefix and Levenshtein logic so that the twins are exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from services.identity.domain.normalize import cologne_phonetic

Record = dict[str, Any]
Pred = Callable[[Record, Record], bool]


def levenshtein(left: str, right: str) -> int:
    """Edit distance over code points, as DuckDB (2.x, pinned in constraints.txt) counts it;
    DuckDB 1.x counted UTF-8 bytes, which is why the version is pinned."""
    a, b = left, right
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


@lru_cache(maxsize=1 << 16)
def levenshtein_within(left: str, right: str, n: int) -> bool:
    """`levenshtein(left, right) <= n`, without the full table: a common prefix and suffix never
    change the distance, and only cells within n of the diagonal can stay within n (a cell i, j
    is at least |i - j| away), so each row is computed on that band, capped at n + 1, and the
    answer is no as soon as a whole row is above n. Cached: real-time candidates share names."""
    if left == right:
        return True
    if abs(len(left) - len(right)) > n:
        return False
    start, shortest = 0, min(len(left), len(right))
    while start < shortest and left[start] == right[start]:
        start += 1
    end_l, end_r = len(left), len(right)
    while end_l > start and end_r > start and left[end_l - 1] == right[end_r - 1]:
        end_l -= 1
        end_r -= 1
    a, b = left[start:end_l], right[start:end_r]
    if not a or not b:
        return max(len(a), len(b)) <= n
    over = n + 1
    previous = [min(j, over) for j in range(len(b) + 1)]
    for i, ca in enumerate(a, 1):
        current = [over] * (len(b) + 1)
        current[0] = min(i, over)
        lowest = current[0]
        for j in range(max(1, i - n), min(len(b), i + n) + 1):
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != b[j - 1]), over)
            current[j] = value
            lowest = min(lowest, value)
        if lowest > n:
            return False
        previous = current
    return previous[-1] <= n


@dataclass(frozen=True)
class Level:
    label: str
    sql: str
    matches: Pred
    tf_column: str | None = None


@dataclass(frozen=True)
class ComparisonSpec:
    name: str
    null_sql: str
    is_null: Pred
    levels: tuple[Level, ...]  # most to least similar; an else level follows implicitly


def _null(*cols: str) -> tuple[str, Pred]:
    sql = " OR ".join(f'"{c}_l" IS NULL OR "{c}_r" IS NULL' for c in cols)
    return sql, lambda left, right: any(left.get(c) is None or right.get(c) is None for c in cols)


def _exact(col: str, tf: bool = False) -> Level:
    return Level("exact", f'"{col}_l" = "{col}_r"', lambda left, right: left[col] == right[col],
                 tf_column=col if tf else None)


def _lev(col: str, n: int, tf: bool = False) -> Level:
    return Level(f"levenshtein <= {n}", f'levenshtein("{col}_l", "{col}_r") <= {n}',
                 lambda left, right: levenshtein_within(left[col], right[col], n), tf_column=col if tf else None)


def _phonetic(col: str, tf: bool = False) -> Level:
    p = f"{col}_phonetic"
    return Level("same phonetic code", f'"{p}_l" = "{p}_r"',
                 lambda left, right: left.get(p) is not None and left.get(p) == right.get(p),
                 tf_column=col if tf else None)


def _array(col: str, label: str = "share one") -> ComparisonSpec:
    null_sql = (f'"{col}_l" IS NULL OR "{col}_r" IS NULL OR len("{col}_l") = 0 OR len("{col}_r") = 0')
    return ComparisonSpec(
        col, null_sql, lambda left, right: not left.get(col) or not right.get(col),
        (Level(label, f'len(list_intersect("{col}_l", "{col}_r")) >= 1',
               lambda left, right: bool(set(left[col]) & set(right[col]))),))


def _names_swapped(left: Record, right: Record) -> bool:
    g_l, f_l, g_r, f_r = (left.get("given_name"), left.get("family_name"), right.get("given_name"),
                          right.get("family_name"))
    return None not in (g_l, f_l, g_r, f_r) and g_l == f_r and f_l == g_r and g_l != g_r


_SWAPPED_SQL = ('"given_name_l" = "family_name_r" AND "family_name_l" = "given_name_r" '
                'AND "given_name_l" <> "given_name_r"')


def _given_name() -> ComparisonSpec:
    """Given and family name swapped between the records is one piece of evidence (both names
    agree), scored here; the family-name comparison counts such a pair as null."""
    null_sql, is_null = _null("given_name")
    return ComparisonSpec("given_name", null_sql, is_null, (
        _exact("given_name", tf=True), Level("swapped with family name", _SWAPPED_SQL, _names_swapped),
        _phonetic("given_name", tf=True), _lev("given_name", 2, tf=True)))


def _family_name() -> ComparisonSpec:
    null_sql, is_null = _null("family_name")
    return ComparisonSpec("family_name", f"{null_sql} OR ({_SWAPPED_SQL})",
                          lambda left, right: is_null(left, right) or _names_swapped(left, right),
                          (_exact("family_name", tf=True), _phonetic("family_name", tf=True),
                           _lev("family_name", 2, tf=True)))


def _dob_swapped(left: Record, right: Record) -> bool:
    a, b = left["birth_date"], right["birth_date"]
    return a[:4] == b[:4] and a[5:7] == b[8:10] and a[8:10] == b[5:7]


def _same(left: Record, right: Record, *cols: str) -> bool:
    """SQL equality on every column: NULL equals nothing, not even NULL."""
    return all(left.get(c) is not None and left.get(c) == right.get(c) for c in cols)


_bd_null, _bd_is_null = _null("birth_date")
_ADDRESS = ("street", "postcode", "city")
# Null when no address field can be compared: both records need at least one in common.
_addr_null = " AND ".join(f'("{c}_l" IS NULL OR "{c}_r" IS NULL)' for c in _ADDRESS)


def _addr_is_null(left: Record, right: Record) -> bool:
    return all(left.get(c) is None or right.get(c) is None for c in _ADDRESS)


COMPARISONS: tuple[ComparisonSpec, ...] = (
    _given_name(),
    _family_name(),
    ComparisonSpec("birth_date", _bd_null, _bd_is_null, (
        _exact("birth_date"),
        Level("one typo or day/month swapped",
              'levenshtein("birth_date_l", "birth_date_r") <= 1 OR (substr("birth_date_l", 1, 4) = '
              'substr("birth_date_r", 1, 4) AND substr("birth_date_l", 6, 2) = substr("birth_date_r", 9, 2) '
              'AND substr("birth_date_l", 9, 2) = substr("birth_date_r", 6, 2))',
              lambda left, right: levenshtein_within(left["birth_date"], right["birth_date"], 1)
              or _dob_swapped(left, right)),
        Level("same year", 'substr("birth_date_l", 1, 4) = substr("birth_date_r", 1, 4)',
              lambda left, right: left["birth_date"][:4] == right["birth_date"][:4]),
    )),
    # One comparison for the whole address: street, postcode and city move together, so three
    # comparisons would count one move (or one shared home) three times.
    ComparisonSpec("address", _addr_null, _addr_is_null, (
        Level("street, number and postcode",
              '"street_l" = "street_r" AND "house_number_l" = "house_number_r" AND "postcode_l" = "postcode_r"',
              lambda left, right: _same(left, right, "street", "house_number", "postcode")),
        Level("postcode", '"postcode_l" = "postcode_r"', lambda left, right: _same(left, right, "postcode")),
        Level("city", '"city_l" = "city_r"', lambda left, right: _same(left, right, "city")),
    )),
    _array("emails"),
    _array("phones"),
    # Social handles and login names, bare (without provider or source) and pooled: a person's
    # social handle is often their webshop login. Which handles count: normalize.model_handle.
    _array("handles", "share a handle"),
    # A role address (info@, kontakt@) narrows the candidates to the people who use it; which of
    # them a record is, only names and the rest can tell. Its weight is learned like any other.
    _array("role_emails", "share a role address"),
)

# Term-frequency adjustments treat no value as rarer than this. Germany has over half a million
# surnames; most are carried by fewer than 1 in 100,000 people, and two records sharing one are
# strong evidence. (It was 1e-3 while the benchmarks drew every name from a hundred common ones.)
TF_MINIMUM_U = 1e-5
TF_COLUMNS = tuple(dict.fromkeys(level.tf_column for spec in COMPARISONS for level in spec.levels if level.tf_column))

# Prediction blocking: pairs worth scoring (bulk). Real-time candidates use the same ideas as
# graph blocking keys (services/identity/domain/blocking.py).
PREDICT_BLOCKING = (
    ("family_name_phonetic", "birth_year"),
    ("given_name_phonetic", "postcode"),
    ("birth_date", "given_initial"),
    ("family_name", "postcode"),
    ("name_pair",),  # both names, in either order: catches given and family name swapped
    ("given_name", "family_name_phonetic"),  # a typo in the family name, nothing else in common
    ("family_name", "given_initial"),  # a typo in the given name, nothing else in common
    ("birth_date", "postcode"),
    ("first_email",),
    ("first_phone",),
    ("first_handle",),  # a social handle that is another account's login
    ("first_role_email",),  # bulk only: a role address on many accounts is dropped before scoring
)
# EM sessions: together they leave no comparison untrained; none is blocked on an identifier
# (Splink 5's EM fails with m=0 when blocked on e-mail or phone), and none on a household's shared
# traits: blocked on surname + postcode, EM takes family members for duplicates and learns that
# true matches often differ in given name and birth date.
EM_BLOCKING = (("birth_date",), ("given_name", "family_name"))
# Deterministic rules for the first estimate of the prior (probability two random records match);
# training re-estimates it with the trained model.
PRIOR_RULES = (("given_name", "family_name", "birth_date"), ("family_name", "birth_date", "postcode"))
COLUMNS = ("unique_id", "given_name", "family_name", "given_name_phonetic", "family_name_phonetic", "birth_date",
           "street", "house_number", "postcode", "city", "emails", "phones", "handles", "birth_year",
           "given_initial", "first_email", "first_phone", "name_pair", "role_emails", "first_handle",
           "first_role_email")


def splink_settings() -> dict[str, Any]:
    comparisons = []
    for spec in COMPARISONS:
        levels: list[dict[str, Any]] = [{"sql_condition": spec.null_sql, "label_for_charts": "null",
                                         "is_null_level": True}]
        m_start, u_start = _starting_values(len(spec.levels))
        for level, m, u in zip(spec.levels, m_start, u_start, strict=False):
            entry: dict[str, Any] = {"sql_condition": level.sql, "label_for_charts": level.label,
                                     "m_probability": m, "u_probability": u}
            if level.tf_column:
                entry["tf_adjustment_column"] = level.tf_column
                entry["tf_adjustment_weight"] = 1.0
                entry["tf_minimum_u_value"] = TF_MINIMUM_U
            levels.append(entry)
        levels.append({"sql_condition": "ELSE", "label_for_charts": "else", "m_probability": m_start[-1],
                       "u_probability": u_start[-1]})
        comparisons.append({"output_column_name": spec.name, "comparison_levels": levels,
                            "comparison_description": spec.name})
    return {
        "link_type": "dedupe_only",
        "unique_id_column_name": "unique_id",
        "comparisons": comparisons,
        "blocking_rules_to_generate_predictions": [_rule(cols) for cols in PREDICT_BLOCKING],
        "retain_intermediate_calculation_columns": True,
        "retain_matching_columns": True,
    }


def _starting_values(n: int) -> tuple[list[float], list[float]]:
    """Starting m and u for n similarity levels plus else. Training overwrites every level it
    observes; a level too rare to observe keeps a conservative start instead of no value."""
    m = [0.7] + [0.25 / max(n - 1, 1)] * (n - 1) + [0.05]
    u = [0.001] + [0.01] * (n - 1) + [1.0 - 0.001 - 0.01 * (n - 1)]
    return m, u


def _rule(cols: tuple[str, ...]) -> dict[str, str]:
    return {"blocking_rule": " AND ".join(f'l."{c}" = r."{c}"' for c in cols)}


def prepare(record: Record) -> Record:
    """Adds derived blocking columns and fills absent keys with None. An account without names is
    compared by those its e-mail address spells (`normalize.spelled_names`)."""
    out = {c: record.get(c) for c in COLUMNS}
    for column in ("given_name", "family_name"):
        spelled = record.get(f"email_{column}")
        if spelled and not out[column]:
            out[column] = spelled
            out[f"{column}_phonetic"] = cologne_phonetic(spelled)
    out["emails"] = list(record.get("emails") or [])
    out["phones"] = list(record.get("phones") or [])
    out["handles"] = list(record.get("handles") or [])  # absent from records stored before handles
    out["role_emails"] = list(record.get("role_emails") or [])  # absent from records stored before 12-03
    bd = record.get("birth_date")
    out["birth_year"] = bd[:4] if bd else None
    gn = out["given_name"]
    out["given_initial"] = gn[:1] if gn else None
    out["first_email"] = out["emails"][0] if out["emails"] else None
    out["first_phone"] = out["phones"][0] if out["phones"] else None
    out["first_handle"] = out["handles"][0] if out["handles"] else None
    out["first_role_email"] = out["role_emails"][0] if out["role_emails"] else None
    out["name_pair"] = name_pair(out)
    return out


def name_pair(record: Record) -> str | None:
    """Given and family name in sorted order, so that swapped fields give the same key."""
    gn, fn = record.get("given_name"), record.get("family_name")
    return "\x1f".join(sorted((gn, fn))) if gn and fn else None
