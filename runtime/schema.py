"""The database schema beyond the library's own tables, applied in numbered steps.

`pumpparty migrate` runs `migrate()`: the library creates the events and snapshots
tables, then each step not yet recorded in `schema_migrations` runs in its own
transaction, under an advisory lock so two processes never migrate at once.
"""

from __future__ import annotations

import logging

import psycopg

log = logging.getLogger(__name__)

EVENTS = "pumpparty_events"
_MIGRATION_LOCK = 7_041_001

STEPS: list[tuple[int, str, str]] = [
    (
        1,
        "events are append-only and stamped with the time they were recorded",
        f"""
        ALTER TABLE {EVENTS}
            ADD COLUMN IF NOT EXISTS recorded_at timestamptz NOT NULL DEFAULT clock_timestamp();

        CREATE OR REPLACE FUNCTION reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% on % is refused: the table is append-only', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END $$;

        CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON {EVENTS}
            FOR EACH ROW EXECUTE FUNCTION reject_change();
        CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON {EVENTS}
            FOR EACH STATEMENT EXECUTE FUNCTION reject_change();
        """,
    ),
    (
        2,
        "a hash chain over the log, extended as each event is inserted, and its digests",
        f"""
        CREATE TABLE audit_chain (position bigint PRIMARY KEY, hash bytea NOT NULL);
        CREATE TABLE audit_digests (
            position bigint PRIMARY KEY,
            hash bytea NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );

        -- Inserts into the events table hold the library's EXCLUSIVE table lock until
        -- commit, so links are added in log order and `previous` is always the last one.
        CREATE OR REPLACE FUNCTION extend_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE previous bytea;
        BEGIN
            SELECT hash INTO previous FROM audit_chain ORDER BY position DESC LIMIT 1;
            INSERT INTO audit_chain (position, hash) VALUES (
                NEW.notification_id,
                sha256(
                    coalesce(previous, '\\x'::bytea)
                    || int8send(NEW.notification_id)
                    || uuid_send(NEW.originator_id)
                    || int8send(NEW.originator_version)
                    || int4send(octet_length(NEW.topic))
                    || convert_to(NEW.topic, 'UTF8')
                    || NEW.state
                )
            );
            RETURN NULL;
        END $$;

        CREATE TRIGGER extend_audit_chain AFTER INSERT ON {EVENTS}
            FOR EACH ROW EXECUTE FUNCTION extend_audit_chain();

        CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON audit_chain
            FOR EACH ROW EXECUTE FUNCTION reject_change();
        CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON audit_chain
            FOR EACH STATEMENT EXECUTE FUNCTION reject_change();
        CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON audit_digests
            FOR EACH ROW EXECUTE FUNCTION reject_change();
        CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON audit_digests
            FOR EACH STATEMENT EXECUTE FUNCTION reject_change();
        """,
    ),
    (
        3,
        "projection generations, stalls and skips; worker heartbeats",
        """
        CREATE TABLE projection_state (
            name text PRIMARY KEY,
            generation integer NOT NULL,
            stalled_position bigint,
            stalled_topic text,
            stalled_error text,
            stalled_since timestamptz
        );
        CREATE TABLE projection_skips (
            name text NOT NULL,
            position bigint NOT NULL,
            topic text,
            error text,
            reason text NOT NULL,
            skipped_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (name, position)
        );
        CREATE TABLE worker_heartbeats (
            job text PRIMARY KEY,
            process text NOT NULL,
            interval_seconds double precision NOT NULL,
            beat_at timestamptz NOT NULL,
            last_error text
        );
        """,
    ),
    (
        4,
        "mark prices observed by ingestion, read by the prop engine",
        """
        CREATE TABLE market_marks (
            source text NOT NULL,
            asset text NOT NULL,
            observed_at timestamptz NOT NULL,
            price numeric NOT NULL CHECK (price > 0),
            PRIMARY KEY (source, asset, observed_at)
        );
        CREATE INDEX market_marks_latest ON market_marks (asset, observed_at DESC);
        """,
    ),
]


def apply_steps(url: str) -> list[int]:
    """Apply the steps not yet applied; return the numbers applied now."""
    applied_now: list[int] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " step integer PRIMARY KEY, description text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
            done = {row[0] for row in conn.execute("SELECT step FROM schema_migrations")}
            for step, description, sql in STEPS:
                if step in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (step, description) VALUES (%s, %s)",
                        (step, description),
                    )
                log.info("applied schema step %d: %s", step, description)
                applied_now.append(step)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now
