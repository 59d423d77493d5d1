"""The SQLite schema as numbered migrations; ``upgrade`` applies the missing ones in order.

A new migration here needs its twin in ``pg_schema`` (PostgreSQL's own numbering): both
engines run the same operations, so they must have the same tables, columns and indexes
(``tests/store/test_schema.py`` compares them)."""

from __future__ import annotations

import sqlite3

from smsrelay.errors import SmsRelayError

MIGRATIONS: tuple[str, ...] = (
    # 1: accounts, numbers, messages and their parts (the parts are the dispatcher's queue).
    """
    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        key_hash TEXT NOT NULL UNIQUE,
        demo_key TEXT,
        credit_micros INTEGER NOT NULL DEFAULT 0,
        disabled INTEGER NOT NULL DEFAULT 0,
        quiet_hours INTEGER NOT NULL DEFAULT 1,
        region TEXT NOT NULL DEFAULT 'metropole',
        marketing INTEGER NOT NULL DEFAULT 0,
        reply_url TEXT,
        webhook_secret TEXT,
        reassemble_replies INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE numbers (
        msisdn TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        connector TEXT NOT NULL DEFAULT 'default',
        created_at REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        region TEXT NOT NULL,
        text TEXT NOT NULL,
        encoding TEXT NOT NULL,
        nb_sms INTEGER NOT NULL,
        cost_micros INTEGER NOT NULL,
        tag TEXT,
        url_response TEXT,
        url_dlr TEXT,
        stop_sms INTEGER NOT NULL DEFAULT 0,
        sandbox INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        connector TEXT NOT NULL,
        created_at REAL NOT NULL,
        due_at REAL NOT NULL,
        final_at REAL
    );
    CREATE INDEX messages_by_tag ON messages(account_id, tag) WHERE tag IS NOT NULL;
    CREATE INDEX messages_by_conversation ON messages(sender, recipient);
    CREATE INDEX messages_sandbox ON messages(created_at) WHERE sandbox = 1;
    CREATE TABLE parts (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        connector TEXT NOT NULL,
        state TEXT NOT NULL,
        due_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_until REAL,
        carrier_id TEXT,
        carrier_key TEXT,
        stat TEXT,
        err TEXT,
        submitted_at REAL,
        done_at REAL,
        last_error TEXT
    );
    CREATE INDEX parts_of_message ON parts(message_id);
    -- Partial indexes: only live work is indexed, so a large history does not slow claiming.
    CREATE INDEX parts_due ON parts(connector, due_at) WHERE state = 'queued';
    CREATE INDEX parts_leased ON parts(lease_until) WHERE state = 'sending';
    CREATE INDEX parts_awaiting_receipt ON parts(submitted_at) WHERE state = 'submitted';
    CREATE INDEX parts_by_carrier_key ON parts(carrier_key) WHERE carrier_key IS NOT NULL;
    CREATE TABLE receipts (
        id INTEGER PRIMARY KEY,
        part_id INTEGER,
        connector TEXT NOT NULL,
        carrier_id TEXT NOT NULL,
        stat TEXT NOT NULL,
        err TEXT,
        received_at REAL NOT NULL,
        matched INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX receipts_of_part ON receipts(part_id);
    CREATE TABLE early_receipt_keys (
        carrier_key TEXT NOT NULL,
        connector TEXT NOT NULL,
        receipt_id INTEGER NOT NULL
    );
    CREATE INDEX early_receipt_lookup ON early_receipt_keys(carrier_key);
    CREATE TABLE replies (
        id INTEGER PRIMARY KEY,
        account_id INTEGER,
        msisdn TEXT NOT NULL,
        virtual_number TEXT NOT NULL,
        text TEXT NOT NULL,
        keyword TEXT NOT NULL,
        message_id INTEGER,
        concat_ref INTEGER,
        concat_total INTEGER,
        concat_part INTEGER,
        connector TEXT NOT NULL,
        received_at REAL NOT NULL,
        awaiting INTEGER NOT NULL DEFAULT 0
    );
    -- Parts held back for reassembly: the sweeper posts them as they are if the rest never comes.
    CREATE INDEX replies_awaiting ON replies(received_at) WHERE awaiting = 1;
    CREATE INDEX replies_by_concat ON replies(msisdn, virtual_number, concat_ref)
        WHERE concat_ref IS NOT NULL;
    CREATE INDEX replies_by_sender ON replies(msisdn, virtual_number, received_at);
    CREATE TABLE stop_list (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL,
        phone TEXT NOT NULL,
        created_at REAL NOT NULL,
        UNIQUE (account_id, phone)
    );
    CREATE TABLE webhooks (
        id INTEGER PRIMARY KEY,
        uuid TEXT NOT NULL UNIQUE,
        account_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        message_id INTEGER,
        reply_id INTEGER,
        url TEXT NOT NULL,
        body BLOB NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        due_at REAL NOT NULL,
        lease_until REAL,
        delivered_at REAL,
        last_error TEXT,
        order_key TEXT
    );
    CREATE INDEX webhooks_due ON webhooks(due_at) WHERE state = 'pending';
    -- Callbacks that share a key (one message's, one conversation's replies) go out in order.
    CREATE INDEX webhooks_in_order ON webhooks(order_key, id) WHERE state IN ('pending', 'sending');
    CREATE INDEX webhooks_leased ON webhooks(lease_until) WHERE state = 'sending';
    CREATE INDEX webhooks_failed ON webhooks(id) WHERE state = 'failed';
    CREATE TABLE webhook_attempts (
        id INTEGER PRIMARY KEY,
        webhook_id INTEGER NOT NULL,
        at REAL NOT NULL,
        status INTEGER,
        latency_ms REAL,
        error TEXT
    );
    CREATE INDEX webhook_attempts_of ON webhook_attempts(webhook_id);
    """,
    # 2: the SMPP session a reply came in on (an identical reply on the same one is the
    # person again, not the SMSC re-sending).
    """
    ALTER TABLE replies ADD COLUMN bind_id TEXT;
    """,
    # 3: STOP entry ids are never reused (a client holding an old stopId must not delete
    # somebody else's entry): AUTOINCREMENT needs the table rebuilt.
    """
    CREATE TABLE stop_list_new (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id INTEGER NOT NULL,
        phone TEXT NOT NULL,
        created_at REAL NOT NULL,
        UNIQUE (account_id, phone)
    );
    INSERT INTO stop_list_new (id, account_id, phone, created_at)
        SELECT id, account_id, phone, created_at FROM stop_list;
    DROP TABLE stop_list;
    ALTER TABLE stop_list_new RENAME TO stop_list;
    """,
    # 4: a reply's callbacks found by the reply (retention asks "is one still to post?"):
    # scanning the index of callbacks still to go took seconds with a receiver down a day.
    # Partial: delivery reports (no reply_id) add nothing to it.
    """
    CREATE INDEX webhooks_of_reply ON webhooks(reply_id) WHERE reply_id IS NOT NULL;
    """,
    # 5: when a part in 'sending' was claimed (NULL otherwise, and for rows claimed before):
    # `status` tells a part the SMSC never answers, whose due_at each retry moves on.
    """
    ALTER TABLE parts ADD COLUMN claimed_at REAL;
    """,
    # 6: a callback behind an earlier one of its key still to go is parked (due_at +inf,
    # webhook_ops.PARKED) until that one is done, so claims no longer walk it; callbacks
    # stored by an older build are parked here (9e999 reads as +inf).
    """
    UPDATE webhooks SET due_at = 9e999 WHERE state = 'pending' AND order_key IS NOT NULL
        AND EXISTS (SELECT 1 FROM webhooks o WHERE o.order_key = webhooks.order_key
            AND o.id < webhooks.id AND o.state IN ('pending', 'sending'));
    """,
    # 7: a part of a long reply keeps its octets: a phone may cut a text inside a character
    # (a GSM escape pair, an emoji's surrogate pair), which only the joined octets can read.
    """
    ALTER TABLE replies ADD COLUMN body BLOB;
    ALTER TABLE replies ADD COLUMN data_coding INTEGER;
    ALTER TABLE replies ADD COLUMN smsc_default INTEGER;
    """,
    # 8: a part that may have reached the SMSC (its process died, or its link was lost, while
    # it was out: its outcome unknown) can no longer be cancelled: it goes again, and the
    # person may already have it. Parts a crash released before this build are marked too.
    """
    ALTER TABLE parts ADD COLUMN may_have_left INTEGER NOT NULL DEFAULT 0;
    UPDATE parts SET may_have_left = 1
        WHERE state = 'queued' AND last_error = 'lease expired: no submit outcome recorded';
    """,
    # 9: builds before 8 requeued a part whose link was lost or whose submit went unanswered
    # without a mark: such parts may have left: by their error, or by a counted attempt (a
    # later retry overwrote the error: throttled after a lost link); one given back at a stop
    # or throttled, uncounted, with no counted attempt before, did not. A conversation's reply
    # callbacks are ordered per account now: the open ones get the new key, so order holds
    # across the upgrade. And one-off work that needs the running gateway (a data step, done
    # by serve at its start, then deleted): builds before the STOP cancel left held messages
    # to people who had asked to stop.
    """
    UPDATE parts SET may_have_left = 1
        WHERE state = 'queued' AND may_have_left = 0
        AND (attempts > 0 OR last_error LIKE '%smpp connection lost%'
            OR last_error LIKE '%no SUBMIT_SM_resp in time%');
    UPDATE webhooks SET order_key = 'c' || account_id || ':' || substr(order_key, 2)
        WHERE state IN ('pending', 'sending') AND kind = 'reply'
        AND order_key LIKE 'c%' AND instr(order_key, ':') = 0;
    CREATE TABLE data_steps (name TEXT PRIMARY KEY);
    INSERT INTO data_steps (name) VALUES ('cancel_waiting_for_stopped');
    """,
    # 10: what the gateway remembers of how it was run: the real SMSC its default connector
    # last sent to, so a start on the built-in simulator by mistake is refused
    """
    CREATE TABLE gateway_facts (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 11: a reply's number on its bind, and how far each bind's answers are proven read by
    # the SMSC (carrier/answer_proof): a reply re-sent after an outage longer than 120 s is
    # told from the person writing the same text again. And a data step: account names an
    # older build stored decomposed (NFD) get their composed form, the one the CLI reads.
    """
    ALTER TABLE replies ADD COLUMN bind_seq INTEGER;
    CREATE TABLE binds (
        bind_id TEXT PRIMARY KEY,
        proven_through INTEGER NOT NULL,
        proven_at REAL NOT NULL
    );
    INSERT INTO data_steps (name) VALUES ('compose_account_names');
    """,
    # 12: a reply's re-send is looked for by its text's opening, on its own connector: by the
    # sender alone, each reply read every reply of that sender in the hour (a burst of 20,000
    # took 115 s with the API frozen); the bind last, so other binds' copies are found
    # without reading the rows of the bind the burst comes on; a long reply's parts by their
    # reference and time (by the sender alone, each part read the sender's hour)
    """
    CREATE INDEX replies_by_text ON replies(
        msisdn, virtual_number, connector, substr(text, 1, 32), received_at, bind_id
    );
    DROP INDEX replies_by_concat;
    CREATE INDEX replies_by_concat ON replies(msisdn, virtual_number, concat_ref, received_at)
        WHERE concat_ref IS NOT NULL;
    """,
    # 13: a callback's attempts before its current round (`webhooks retry` starts one): its
    # backoff counts the round's attempts, as its budget counts from the retry (created_at);
    # a retried callback past the cap otherwise waited the cap at once, and one whose next
    # wait ran past a short budget was given up after one more post. `attempts` still counts
    # every post (X-Smsrelay-Attempt, `webhooks list`).
    """
    ALTER TABLE webhooks ADD COLUMN attempts_before_round INTEGER NOT NULL DEFAULT 0;
    """,
    # 14: the addresses and networks an account's API key may be used from (SMS Partner's
    # code 96 elsewhere), comma-separated in their canonical form; '' (every account before
    # this): from anywhere.
    """
    ALTER TABLE accounts ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT '';
    """,
    # 15: an account's STOP list in id order, so it is read a page at a time (``id > ? LIMIT``):
    # by (account_id, phone), each page read and sorted the account's whole list again.
    """
    CREATE INDEX stop_list_in_order ON stop_list(account_id, id);
    """,
)


def current_version(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def upgrade(conn: sqlite3.Connection, *, only_new: bool = False) -> list[int]:
    """Apply every missing migration, each in its own transaction; returns those applied.
    A database a newer build has upgraded is refused (``SchemaTooNew``); with ``only_new``,
    so is one an older build made (``SchemaTooOld``): only a new database gets its schema."""
    current = current_version(conn)
    refuse_newer(current, len(MIGRATIONS))
    if only_new:
        refuse_older(current, len(MIGRATIONS))
    applied = []
    for version, script in enumerate(MIGRATIONS, start=1):
        if version <= current_version(conn):
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


class SchemaTooNew(SmsRelayError):
    """The database's schema is newer than this build knows: a newer build upgraded it."""


class SchemaTooOld(SmsRelayError):
    """A command other than ``db upgrade`` (and serve) met a database an older build made:
    migrating it under a running older serve (a monitoring check of a newly installed build)
    broke the order the README's upgrade steps keep."""


def refuse_older(version: int, known: int) -> None:
    if 0 < version < known:
        raise SchemaTooOld(
            f"the database's schema is version {version}, older than this build's ({known}): "
            "stop serve (every node), run `smsrelay db upgrade`, then start serve again "
            "(README: Upgrading)"
        )


def refuse_newer(version: int, known: int) -> None:
    if version > known:
        raise SchemaTooNew(
            f"the database's schema is version {version}, newer than this build knows "
            f"({known}): a newer smsrelay upgraded it; run that version (going back needs "
            "the backup taken before the upgrade)"
        )


def _statements(script: str) -> list[str]:
    # executescript() would commit on its own; split so the migration stays one transaction.
    return [s.strip() for s in script.split(";") if s.strip() and not _only_comments(s)]


def _only_comments(chunk: str) -> bool:
    return all(line.strip().startswith("--") or not line.strip() for line in chunk.splitlines())
