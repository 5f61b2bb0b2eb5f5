"""The database schema beyond the library's own tables, applied in numbered steps.

`pumpparty migrate` runs `migrate()`: the library creates the events and snapshots
tables, then each step not yet recorded in `schema_migrations` runs in its own
transaction, under an advisory lock so two processes never migrate at once.
"""

from __future__ import annotations

import logging

import psycopg

log = logging.getLogger(__name__)

LOG_NAME = "PumpParty"
"""The one log: the event-store application's name, which the library turns into table names."""
EVENTS_TABLE = f"{LOG_NAME.lower()}_events"
_MIGRATION_LOCK = 7_041_001

STEPS: list[tuple[int, str, str]] = [
    (
        1,
        "events are append-only and stamped with the time they were recorded",
        f"""
        ALTER TABLE {EVENTS_TABLE}
            ADD COLUMN IF NOT EXISTS recorded_at timestamptz NOT NULL DEFAULT clock_timestamp();

        CREATE OR REPLACE FUNCTION reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% on % is refused: the table is append-only', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END $$;

        CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON {EVENTS_TABLE}
            FOR EACH ROW EXECUTE FUNCTION reject_change();
        CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON {EVENTS_TABLE}
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

        CREATE TRIGGER extend_audit_chain AFTER INSERT ON {EVENTS_TABLE}
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
    (
        5,
        "appends in one statement, under the lock that keeps commit order = position order",
        f"""
        CREATE OR REPLACE FUNCTION pumpparty_insert_events(events stored_event_uuid[])
        RETURNS SETOF bigint LANGUAGE plpgsql AS $$
        BEGIN
            SET LOCAL lock_timeout = '10s';
            LOCK TABLE {EVENTS_TABLE} IN EXCLUSIVE MODE;
            NOTIFY {EVENTS_TABLE};
            RETURN QUERY
                INSERT INTO {EVENTS_TABLE} (originator_id, originator_version, topic, state)
                SELECT originator_id, originator_version, topic, state FROM unnest(events)
                RETURNING notification_id;
        END $$;
        """,
    ),
    (
        40,
        "ledger reconciliation results",
        """
        CREATE TABLE reconciliation_checks (
            checked_at timestamptz PRIMARY KEY DEFAULT clock_timestamp(),
            ok boolean NOT NULL,
            trial_balance_minor bigint NOT NULL,
            breaches jsonb NOT NULL
        );
        """,
    ),
    (
        10,
        "market data beside the marks: candles, funding, asset contexts, prediction markets, TVL",
        """
        CREATE TABLE market_candles (
            source text NOT NULL,
            instrument text NOT NULL,
            interval text NOT NULL,
            open_time timestamptz NOT NULL,
            close_time timestamptz NOT NULL,
            open numeric NOT NULL,
            high numeric NOT NULL,
            low numeric NOT NULL,
            close numeric NOT NULL,
            volume numeric NOT NULL,
            trades integer NOT NULL,
            PRIMARY KEY (source, instrument, interval, open_time)
        );
        CREATE TABLE market_funding (
            source text NOT NULL,
            instrument text NOT NULL,
            funded_at timestamptz NOT NULL,
            rate numeric NOT NULL,
            premium numeric NOT NULL,
            PRIMARY KEY (source, instrument, funded_at)
        );
        CREATE TABLE market_contexts (
            source text NOT NULL,
            instrument text NOT NULL,
            observed_at timestamptz NOT NULL,
            mark_price numeric NOT NULL,
            mid_price numeric,
            oracle_price numeric NOT NULL,
            funding numeric NOT NULL,
            open_interest numeric NOT NULL,
            premium numeric,
            prev_day_price numeric NOT NULL,
            day_notional_volume numeric NOT NULL,
            max_leverage integer NOT NULL,
            PRIMARY KEY (source, instrument, observed_at)
        );
        CREATE TABLE prediction_markets (
            source text NOT NULL,
            market_id text NOT NULL,
            slug text NOT NULL,
            question text NOT NULL,
            condition_id text NOT NULL,
            outcomes jsonb NOT NULL,
            token_ids jsonb NOT NULL,
            end_date timestamptz,
            active boolean NOT NULL,
            closed boolean NOT NULL,
            updated_at timestamptz NOT NULL,
            PRIMARY KEY (source, market_id)
        );
        CREATE INDEX prediction_markets_slug ON prediction_markets (slug);
        CREATE TABLE prediction_prices (
            source text NOT NULL,
            token_id text NOT NULL,
            observed_at timestamptz NOT NULL,
            market_id text NOT NULL,
            outcome text NOT NULL,
            midpoint numeric NOT NULL CHECK (midpoint BETWEEN 0 AND 1),
            buy_price numeric,
            sell_price numeric,
            PRIMARY KEY (source, token_id, observed_at)
        );
        CREATE TABLE protocol_tvl (
            source text NOT NULL,
            protocol text NOT NULL,
            observed_at timestamptz NOT NULL,
            tvl_usd numeric NOT NULL CHECK (tvl_usd >= 0),
            PRIMARY KEY (source, protocol, observed_at)
        );
        """,
    ),
    (
        11,
        "feature channel values, each stored with the time it describes",
        """
        CREATE TABLE feature_values (
            channel text NOT NULL,
            observed_at timestamptz NOT NULL,
            value numeric NOT NULL,
            computed_at timestamptz NOT NULL,
            PRIMARY KEY (channel, observed_at)
        );
        """,
    ),
    (
        12,
        "ingestion health per source and channel, and the errors ingestion recorded",
        """
        CREATE TABLE ingest_health (
            kind text NOT NULL CHECK (kind IN ('source', 'channel')),
            name text NOT NULL,
            cadence_seconds double precision NOT NULL,
            last_attempt_at timestamptz NOT NULL,
            last_success_at timestamptz,
            last_error_at timestamptz,
            last_error text,
            consecutive_failures integer NOT NULL DEFAULT 0,
            PRIMARY KEY (kind, name)
        );
        CREATE TABLE ingest_errors (
            id bigserial PRIMARY KEY,
            source text NOT NULL,
            request text NOT NULL,
            kind text NOT NULL,
            message text NOT NULL,
            excerpt text NOT NULL,
            occurred_at timestamptz NOT NULL
        );
        CREATE INDEX ingest_errors_recent ON ingest_errors (source, occurred_at DESC);
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
            for step, description, sql in sorted(STEPS):
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
