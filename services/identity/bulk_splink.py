"""The records a bulk link compares, kept in DuckDB rather than in Python, and Splink's predict over them.

A million match records as Python dicts (and again as a pandas frame) cost several gigabytes;
the same columns in a DuckDB table cost a fraction, and DuckDB spills beyond its memory limit
instead of growing without bound. The table is filled bucket by bucket while the accounts are
read, with the rows' position in the bulk link's account list as Splink's `unique_id` (an
integer: the scored pairs come back as two integer arrays and a float array, not as strings).
Derived columns come from `model_settings.prepare`, the same function training and the
real-time scorer use, so the records Splink sees are exactly those it saw as a pandas frame.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from services.identity.domain.model import TrainedModel
from services.identity.domain.model_settings import COLUMNS, prepare

# The identifier lists the model compares (service.KIND_COLUMNS; handles: social handles and logins).
LIST_COLUMNS = ("emails", "phones", "handles", "role_emails")
SCHEMA = pa.schema([("unique_id", pa.int64()), *(
    (c, pa.list_(pa.string()) if c in LIST_COLUMNS else pa.string()) for c in COLUMNS if c != "unique_id")])
_SQL_TYPES = {pa.int64(): "BIGINT", pa.string(): "VARCHAR", pa.list_(pa.string()): "VARCHAR[]"}
# Each identifier list the model compares, and the blocking column that holds its first value.
_FIRST = {"emails": "first_email", "phones": "first_phone", "handles": "first_handle",
          "role_emails": "first_role_email"}


def _wide_statements(column: str, first: str) -> tuple[str, str]:
    """The values of `column` on at least ? records; and the update that removes the values in a
    list parameter from `column` and recomputes `first` from what is left, as `prepare` would.
    Static SQL only: the table and column names are constants, every value a parameter."""
    kept = f"list_filter({column}, lambda v: NOT list_contains(?::VARCHAR[], v))"
    select = f"SELECT v FROM (SELECT unnest({column}) AS v FROM bulk_accounts) GROUP BY v HAVING count(*) >= ?"  # noqa: S608
    update = (f"UPDATE bulk_accounts SET {column} = {kept}, {first} = {kept}[1] "  # noqa: S608
              f"WHERE len(list_intersect({column}, ?::VARCHAR[])) > 0")
    return select, update


_WIDE = {column: _wide_statements(column, first) for column, first in _FIRST.items()}


class RecordTable:
    """Prepared match records in an in-process DuckDB database; `close()` drops everything
    (the temporary directory DuckDB may spill to included: it holds personal data)."""

    def __init__(self, *, memory_limit: str = "3GB", threads: int = 2):
        self._spill = tempfile.mkdtemp(prefix="tessera-bulk-")
        self.con = duckdb.connect(config={"memory_limit": memory_limit, "threads": threads,
                                          "temp_directory": self._spill, "preserve_insertion_order": False})
        columns = ", ".join(f'"{f.name}" {_SQL_TYPES[f.type]}' for f in SCHEMA)
        self.con.execute(f"CREATE TABLE bulk_accounts ({columns})")
        self.count = 0

    def append(self, records: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Adds (position, match record) rows."""
        cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
        for position, record in records:
            prepared = prepare(record)
            prepared["unique_id"] = position
            for c in COLUMNS:
                cols[c].append(prepared[c])
        if not cols["unique_id"]:
            return
        chunk = pa.Table.from_pydict(cols, schema=SCHEMA)
        self.con.register("bulk_chunk", chunk)
        try:
            self.con.execute("INSERT INTO bulk_accounts SELECT * FROM bulk_chunk")
        finally:
            self.con.unregister("bulk_chunk")
        self.count += len(cols["unique_id"])

    def drop_widely_shared(self, limit: int) -> int:
        """An e-mail, phone or handle on `limit` or more records (a till's placeholder number) is no
        evidence for the model: removed from the records, and the `first_…` blocking column
        recomputed from what is left (as `prepare` would). Returns the number of values dropped."""
        dropped = 0
        for select, update in _WIDE.values():
            wide = [v for (v,) in self.con.execute(select, [limit]).fetchall()]
            if wide:
                dropped += len(wide)
                self.con.execute(update, [wide] * update.count("?"))
        return dropped

    def drop_identifiers(self, token_of: Callable[[str, str], str], tokens: Collection[str]) -> int:
        """Removes the e-mails and phones whose identifier token is in `tokens` (identifiers that
        do not link: shared too widely, or by provably different people) from the records, as
        real time leaves them out of both records it scores. Only values held by two or more
        records can be shared, so only those are tokenised. `token_of(kind, value)`. Returns the
        number of values dropped."""
        if not tokens:
            return 0
        dropped = 0
        for column, kind in (("emails", "email"), ("phones", "phone")):
            select, update = _WIDE[column]
            shared = [v for (v,) in self.con.execute(select, [2]).fetchall()]
            noise = [v for v in shared if token_of(kind, v) in tokens]
            if noise:
                dropped += len(noise)
                self.con.execute(update, [noise] * update.count("?"))
        return dropped

    def records(self, positions: Sequence[int], unique_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The prepared records at `positions`, in that order, with `unique_ids[position]` as
        their unique_id (for training, which works on records as dicts)."""
        pick = pa.table({"pos": pa.array(range(len(positions)), pa.int64()), "idx": pa.array(positions, pa.int64())})
        self.con.register("bulk_pick", pick)
        try:
            table = self.con.sql("SELECT a.* FROM bulk_pick p JOIN bulk_accounts a ON a.unique_id = p.idx "
                                 "ORDER BY p.pos").to_arrow_table()
        finally:
            self.con.unregister("bulk_pick")
        out = table.to_pylist()
        del table
        for row in out:
            row["unique_id"] = unique_ids[row["unique_id"]]
        return out

    def scored_pairs(self, model: TrainedModel, *, predict_threshold: float, keep_from: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Splink's predict over every blocked pair: (left positions, right positions, match
        probabilities) of the pairs at or above `keep_from`."""
        from splink import DuckDBAPI, Linker

        # Only ids and scores leave the comparison: retained columns would multiply memory.
        lean = {**model.settings, "retain_matching_columns": False, "retain_intermediate_calculation_columns": False}
        db = DuckDBAPI(connection=self.con)
        linker = Linker(db.register("bulk_accounts"), lean, log_level=logging.WARNING)
        predicted = linker.inference.predict(threshold_match_probability=predict_threshold)
        try:
            found = predicted.as_duckdbpyrelation().filter(f"match_probability >= {float(keep_from)!r}").project(
                "unique_id_l, unique_id_r, match_probability").fetchnumpy()
        finally:
            predicted.drop_table_from_database_and_remove_from_cache()
        return (np.asarray(found["unique_id_l"], dtype=np.int64), np.asarray(found["unique_id_r"], dtype=np.int64),
                np.asarray(found["match_probability"], dtype=np.float64))

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            shutil.rmtree(self._spill, ignore_errors=True)
