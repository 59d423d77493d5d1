"""Writes with a set-based form: consecutive ones of a kind in a batch run as one call.

Under load a batch holds runs of the same write (79 receipts in a row, 34 submit outcomes,
29 accepts: measured in the end-to-end benchmark). Run one at a time, each costs its own
statements: ~22 a message, and on PostgreSQL each statement is a round trip. A ``Grouped``
write names a function that takes the whole run and does the same with a few statements
whatever its length (``UPDATE … FROM (VALUES …)``, ``IN`` lists, multi-row inserts).

The contract of such a function (``many``): its effects and its answers are those of the
items run one after another in their order, and it decides every refusal before it writes,
so a refused item (its answer is the exception) has written nothing and the batch needs no
savepoint for it. Anything it raises fails the batch, which the engine then redoes one write
at a time, each alone in a savepoint (``Grouped.__call__``: a run of one).

The order a batch runs in is the engine's to choose: its writes were all waiting at once (a
caller waits for one write's answer before it makes its next), so any order is one they could
have arrived in. ``run_all`` runs every grouped write of a kind as one call, kinds that
``go_first`` ahead of the rest, and otherwise keeps the order they came in (within a kind,
always: two receipts for one part stay in the SMSC's order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain
from typing import Any, Generic, TypeVar, cast

from smsrelay.quick_init import quick_init
from smsrelay.store.sql import Conn

Item = TypeVar("Item")
Row = TypeVar("Row")
Answers = list[Any]  # per item: its result, or the exception that refuses it
Outcome = tuple[Any, BaseException | None]
CHUNK = 256  # rows per statement: well under either engine's limit on parameters


@quick_init
@dataclass(frozen=True, slots=True)
class Grouped(Generic[Item]):
    many: Callable[[Conn, Sequence[Item]], Answers]
    item: Item

    def __call__(self, conn: Conn) -> Any:
        (answer,) = self.many(conn, [self.item])
        if isinstance(answer, BaseException):
            raise answer
        return answer


_FIRST: set[object] = set()
Many = TypeVar("Many", bound=Callable[..., Answers])


def go_first(many: Many) -> Many:
    """Mark a grouped kind to run ahead of the rest of its batch (a submit outcome: a receipt
    in the same batch then finds its part submitted, instead of being kept as early)."""
    _FIRST.add(many)
    return many


def runs_of(
    many: Callable[[Conn, Sequence[Item]], Answers],
) -> Callable[[Conn, Sequence[Sequence[Item]]], Answers]:
    """The grouped kind whose item is a run of ``many``'s items (a caller's whole batch, one
    write): the runs go to ``many`` as one, each answered with its own items' answers. It
    goes first when ``many`` does."""

    def runs(conn: Conn, items: Sequence[Sequence[Item]]) -> Answers:
        answers = many(conn, [item for run in items for item in run])
        ends = list(accumulate(len(run) for run in items))
        return [answers[end - len(run) : end] for run, end in zip(items, ends, strict=True)]

    if many in _FIRST:
        _FIRST.add(runs)
    return runs


def run_all(conn: Conn, ops: Sequence[Callable[[Conn], Any]]) -> list[Outcome]:
    """Each op's result (or a grouped item's refusal), answered in the ops' order, run in the
    order ``schedule`` gives. Raises what an op raised."""
    outcomes: list[Outcome] = [(None, None)] * len(ops)
    for indexes in schedule(ops):
        op = ops[indexes[0]]
        if not isinstance(op, Grouped):
            outcomes[indexes[0]] = (op(conn), None)
            continue
        answers = op.many(conn, [cast(Grouped[Any], ops[i]).item for i in indexes])
        for index, answer in zip(indexes, answers, strict=True):
            outcomes[index] = _as_outcome(answer)
    return outcomes


def schedule(ops: Sequence[Callable[[Conn], Any]]) -> list[list[int]]:
    """The ops' indexes in runs: a plain op alone; a grouped kind's items together (in their
    order) where its first one came; the kinds that ``go_first`` before everything."""
    runs: list[list[int]] = []
    by_kind: dict[object, list[int]] = {}
    for index, op in enumerate(ops):
        if not isinstance(op, Grouped):
            runs.append([index])
        elif (run := by_kind.get(op.many)) is not None:
            run.append(index)
        else:
            by_kind[op.many] = run = [index]
            runs.append(run)
    first = [run for run in runs if _goes_first(ops[run[0]])]
    return first + [run for run in runs if not _goes_first(ops[run[0]])]


def _goes_first(op: Callable[[Conn], Any]) -> bool:
    return isinstance(op, Grouped) and op.many in _FIRST


def _as_outcome(answer: Any) -> Outcome:
    return (None, answer) if isinstance(answer, BaseException) else (answer, None)


def values(rows: int, columns: Sequence[str]) -> str:
    """SQL for ``rows`` rows of placeholders, to read as ``(VALUES …) AS v`` (its columns are
    ``v.column1``, ``v.column2``… on both engines). ``columns``: each one's SQL type, or ""
    for text; typed ones are cast, because PostgreSQL reads an untyped NULL as text."""
    row = "(" + ", ".join(f"CAST(? AS {kind})" if kind else "?" for kind in columns) + ")"
    return "(VALUES " + ", ".join([row] * rows) + ")"


def insert_rows(
    conn: Conn, table: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
) -> None:
    """A multi-row INSERT, in chunks; ``columns``: each one's name and type (as ``values``)."""
    for count, parameters in filled_chunks(rows, len(columns)):
        conn.execute(_insert_sql(table, columns, count), parameters)


def insert_numbered(
    conn: Conn, table: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
) -> list[int]:
    """As ``insert_rows``, for a table with an ``id``: the new rows' ids, in ``rows``' order.
    One statement numbers its rows in the order it inserts them (SQLite's rowids and
    PostgreSQL's sequences both count up), so its ids, ascending, are that order; the order
    RETURNING gives them in is not relied on."""
    ids: list[int] = []
    for count, parameters in filled_chunks(rows, len(columns)):
        sql = _insert_sql(table, columns, count) + " RETURNING id"
        ids += sorted(int(row[0]) for row in conn.execute(sql, parameters).fetchall())
    return ids


def _insert_sql(table: str, columns: Sequence[tuple[str, str]], rows: int) -> str:
    names = ", ".join(name for name, _ in columns)
    picked = ", ".join(f"v.column{n}" for n in range(1, len(columns) + 1))
    table_sql = values(rows, [*(kind for _, kind in columns), FILLER_TYPE])
    return (
        f"INSERT INTO {table} ({names}) SELECT {picked} FROM {table_sql} AS v "
        f"WHERE {not_filler(len(columns))}"
    )


# A statement's text depends on how many rows it binds, and a text not seen lately is parsed
# and planned again: with every batch's own count, that was 5 % of the event loop's thread in
# the end-to-end benchmark. Counts rounded up to a few lengths need a few texts per statement,
# which stay prepared (SQLite's statement cache, see ``engine.STATEMENT_CACHE``). The steps are
# small (8 rows up to 64, 32 beyond) because filler rows cost nearly as much as real ones.
ROUNDED: tuple[int, ...] = (1, 2, 4, *range(8, 64, 8), *range(64, CHUNK + 1, 32))
FILLER_TYPE = "INTEGER"  # the type of the column ``filled_chunks`` adds


def padded_chunks(items: Sequence[Row]) -> Iterator[tuple[Row, ...]]:
    """``items`` in chunks of up to CHUNK, each made a length of ``ROUNDED`` by repeating its
    last item: one statement per chunk, for statements where an item twice changes nothing (an
    ``IN`` list; an ``UPDATE … FROM (VALUES …)`` keyed by a unique id, as each engine updates
    a row once however many source rows match it)."""
    for start in range(0, len(items), CHUNK):
        yield padded(items[start : start + CHUNK])


def padded(items: Sequence[Row]) -> tuple[Row, ...]:
    """``items`` made a length of ``ROUNDED`` by repeating the last one (``padded_chunks``);
    more than CHUNK of them, a multiple of CHUNK."""
    if not items:
        return ()
    return (*items, *[items[-1]] * _missing(len(items)))


def filled_chunks(
    rows: Sequence[Sequence[Any]], width: int
) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """``rows`` (each ``width`` values) in chunks of up to CHUNK, for statements that must see
    each row once (an INSERT): per chunk its row count, one of ``ROUNDED``, and its parameters.
    Each row gets one more column, 1; filler rows, all NULL, make up the count. Select from
    ``values(count, [*types, FILLER_TYPE])`` ``WHERE`` ``not_filler(width)``."""
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        filler = (None,) * (width + 1) * _missing(len(chunk))
        marked = chain.from_iterable([(*row, 1) for row in chunk])
        yield len(chunk) + _missing(len(chunk)), (*marked, *filler)


def not_filler(width: int) -> str:
    """The condition that keeps the real rows of a ``filled_chunks`` chunk."""
    return f"v.column{width + 1} IS NOT NULL"


def _missing(count: int) -> int:
    """How many more make ``count`` (> 0) a length of ``ROUNDED`` (beyond, a multiple of the
    last: an ``IN`` list of a whole claim)."""
    if count > ROUNDED[-1]:
        return -count % ROUNDED[-1]
    return next(size for size in ROUNDED if size >= count) - count


def flat(rows: Sequence[Sequence[Any]]) -> tuple[Any, ...]:
    return tuple(chain.from_iterable(rows))  # chained in C: a generator costs ~40 ns a value


def marks(count: int) -> str:
    return ",".join("?" * count)
