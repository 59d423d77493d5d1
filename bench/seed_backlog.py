"""Seed N held messages straight into a stopped gateway's SQLite database, mirroring what
accept writes (accept_batch.accept_many: one messages row in state 'held' + its parts rows 'queued'
with due_at = the quiet-hours release time), in chunks of 50,000 rows per transaction.
Seeding is set-up, not the measurement: it uses synchronous=OFF. Usage:
seed_backlog.py DB N DUE_AT_EPOCH CREATED_AT_EPOCH  -> 'SEEDJSON {...}'
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time

TEXT = "Votre code de confirmation est 482913. Il expire dans 10 minutes."
CHUNK = 50_000


def main(db: str, n: int, due_at: float, created_at: float) -> dict:
    t0 = time.perf_counter()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    account_id, sender, connector = conn.execute(
        "SELECT a.id, n.msisdn, n.connector FROM accounts a JOIN numbers n ON n.account_id = a.id "
        "WHERE a.name = 'demo'"
    ).fetchone()
    start = (conn.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0]) + 1
    done = 0
    while done < n:
        size = min(CHUNK, n - done)
        ids = range(start + done, start + done + size)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO messages (id, account_id, sender, recipient, region, text, encoding, "
            "nb_sms, cost_micros, tag, url_response, url_dlr, stop_sms, sandbox, state, connector, "
            "created_at, due_at) VALUES (?, ?, ?, ?, 'FR', ?, 'gsm7', 1, 45000, NULL, NULL, NULL, "
            "0, 0, 'held', ?, ?, ?)",
            (
                (
                    i,
                    account_id,
                    sender,
                    f"+336{i % 100000000:08d}",
                    TEXT,
                    connector,
                    created_at,
                    due_at,
                )
                for i in ids
            ),
        )
        conn.executemany(
            "INSERT INTO parts (message_id, seq, connector, state, due_at) "
            "VALUES (?, 1, ?, 'queued', ?)",
            ((i, connector, due_at) for i in ids),
        )
        conn.execute("COMMIT")
        done += size
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    elapsed = time.perf_counter() - t0
    return {"seeded": n, "seconds": round(elapsed, 2), "rows_per_s": round(n / elapsed, 1)}


if __name__ == "__main__":
    result = main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
    print("SEEDJSON " + json.dumps(result), flush=True)
