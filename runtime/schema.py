"""The database schema beyond the library's own tables, applied in numbered steps.

`pumpparty migrate` runs `migrate()` as the log's owner: the library creates the events
and snapshots tables, then each step not yet recorded in `schema_migrations` runs in its
own transaction, under an advisory lock so two processes never migrate at once. Then
`secure_service_role` makes sure the role the service runs as exists and may do exactly
what `LOG_GRANTS` and `WORKING_STATE` say, on every run (grants are idempotent).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.sql import SQL, Identifier, Literal

log = logging.getLogger(__name__)

LOG_NAME = "PumpParty"
"""The one log: the event-store application's name, which the library turns into table names."""
EVENTS_TABLE = f"{LOG_NAME.lower()}_events"
SNAPSHOTS_TABLE = f"{LOG_NAME.lower()}_snapshots"
INSERT_FUNCTION = "pumpparty_insert_events"
"""How the service appends (runtime/recorder.py): ids, versions, topics and states."""
INSERT_FUNCTION_ARGUMENTS = "uuid[], bigint[], text[], bytea[]"
_MIGRATION_LOCK = 7_041_001

LOG_GRANTS: dict[str, str] = {
    EVENTS_TABLE: "SELECT, INSERT (originator_id, originator_version, topic, state)",
    SNAPSHOTS_TABLE: "SELECT, INSERT",
    "audit_chain": "SELECT",
    "audit_digests": "SELECT, INSERT",
    "schema_migrations": "SELECT",
}
"""The log and its evidence, owned by the owner: all the service role may do with them.
No UPDATE, DELETE or TRUNCATE, and as it owns none of them it cannot disable or drop their
triggers; the chain is written only by the owner's `extend_audit_chain` (SECURITY DEFINER).
A new table that must not change belongs here."""
WORKING_STATE = "SELECT, INSERT, UPDATE, DELETE"
"""What the service may do with every other table a step creates (projection state,
heartbeats, market data, ingestion health, reconciliation results): its working state,
derived or fetched again, never the record. Projection tables it creates and owns itself."""

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
        50,
        "two roles: the chain and appends run as the owner; snapshots append-only and sealed",
        f"""
        -- The service role may not write the chain: the trigger writes it as the owner.
        -- A fixed search_path and qualified names: nothing the caller creates (a temp
        -- table, a function overload in public) can stand in for what this function uses.
        CREATE OR REPLACE FUNCTION extend_audit_chain() RETURNS trigger LANGUAGE plpgsql
        SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE previous bytea;
        BEGIN
            SELECT hash INTO previous FROM public.audit_chain ORDER BY position DESC LIMIT 1;
            INSERT INTO public.audit_chain (position, hash) VALUES (
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

        -- The EXCLUSIVE lock that keeps commit order = position order needs more than
        -- INSERT on the table, so appends run as the owner; EXECUTE is granted to the
        -- service role alone (see `secure_service_role`).
        CREATE OR REPLACE FUNCTION pumpparty_insert_events(events public.stored_event_uuid[])
        RETURNS SETOF bigint LANGUAGE plpgsql
        SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            SET LOCAL lock_timeout = '10s';
            LOCK TABLE public.{EVENTS_TABLE} IN EXCLUSIVE MODE;
            NOTIFY {EVENTS_TABLE};
            RETURN QUERY
                INSERT INTO public.{EVENTS_TABLE} (originator_id, originator_version, topic, state)
                SELECT e.originator_id, e.originator_version, e.topic, e.state
                FROM unnest(events) AS e
                RETURNING notification_id;
        END $$;

        -- A digest must be the chain's own hash at its position.
        CREATE OR REPLACE FUNCTION digest_matches_chain() RETURNS trigger LANGUAGE plpgsql
        SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            IF NOT EXISTS (
                SELECT 1 FROM public.audit_chain c
                WHERE c.position = NEW.position AND c.hash = NEW.hash
            ) THEN
                RAISE EXCEPTION 'digest at % is not the chain''s hash there', NEW.position
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER digest_matches_chain BEFORE INSERT ON audit_digests
            FOR EACH ROW EXECUTE FUNCTION digest_matches_chain();

        -- Snapshots: never changed, and each sealed with a key the database never sees
        -- (runtime/recorder.py); a snapshot whose seal fails is not used.
        ALTER TABLE {SNAPSHOTS_TABLE} ADD COLUMN IF NOT EXISTS mac bytea;
        CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON {SNAPSHOTS_TABLE}
            FOR EACH ROW EXECUTE FUNCTION reject_change();
        CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON {SNAPSHOTS_TABLE}
            FOR EACH STATEMENT EXECUTE FUNCTION reject_change();
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
    (
        13,
        "sign-in nonces: working state with an expiry, not events (the sign-in is the event)",
        """
        CREATE TABLE sign_in_nonces (
            nonce text PRIMARY KEY,
            address text NOT NULL,
            issued_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            consumed_at timestamptz
        );
        CREATE INDEX sign_in_nonces_expiry ON sign_in_nonces (expires_at);
        """,
    ),
    (
        14,
        "what a worker job's last successful round did (`/v1/health/workers`)",
        """
        ALTER TABLE worker_heartbeats ADD COLUMN last_outcome text;
        """,
    ),
    (
        15,
        "rate-limit windows shared by every API process (working state, pruned on expiry)",
        """
        -- One row per key and fixed window (its start in epoch seconds); a window weighs on
        -- the next one (sliding window counter), so it is kept until that one ends.
        CREATE TABLE rate_limit_windows (
            key text NOT NULL,
            window_start bigint NOT NULL,
            hits integer NOT NULL,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (key, window_start)
        );
        CREATE INDEX rate_limit_windows_expiry ON rate_limit_windows (expires_at);
        """,
    ),
    (
        51,
        "the job queue: background work with leases, fencing tokens, backoff and dead letters",
        """
        CREATE TABLE job_queue (
            id uuid PRIMARY KEY,
            kind text NOT NULL,
            subject text,
            payload jsonb NOT NULL,
            fingerprint text,
            state text NOT NULL CHECK (state IN ('queued', 'leased', 'succeeded', 'dead')),
            priority integer NOT NULL DEFAULT 100,
            run_at timestamptz NOT NULL,
            attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            max_attempts integer NOT NULL CHECK (max_attempts >= 1),
            lease_token uuid,
            leased_by text,
            lease_until timestamptz,
            heartbeat_at timestamptz,
            progress jsonb,
            result jsonb,
            last_error text,
            first_failed_at timestamptz,
            last_failed_at timestamptz,
            replays integer NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            finished_at timestamptz
        );
        -- What a lease scans: ready and leased jobs only, in pick order.
        CREATE INDEX job_queue_ready ON job_queue (priority, run_at, id)
            WHERE state IN ('queued', 'leased');
        CREATE INDEX job_queue_subject ON job_queue (kind, subject, created_at DESC);
        CREATE INDEX job_queue_dead ON job_queue (kind, last_failed_at DESC) WHERE state = 'dead';
        """,
    ),
    (
        52,
        "dead letters: a dead job can be discarded; one open row per work item",
        """
        ALTER TABLE job_queue DROP CONSTRAINT job_queue_state_check;
        ALTER TABLE job_queue ADD CONSTRAINT job_queue_state_check
            CHECK (state IN ('queued', 'leased', 'succeeded', 'dead', 'discarded'));
        -- What the retried work (scheduled rounds, payment checks) looks up every round.
        CREATE INDEX job_queue_open_subject ON job_queue (kind, subject)
            WHERE state IN ('queued', 'leased', 'dead', 'discarded');
        """,
    ),
    (
        53,
        "reconciliation runs keep their common position and one row per check",
        """
        ALTER TABLE reconciliation_checks ADD COLUMN position bigint;
        CREATE TABLE reconciliation_check_results (
            checked_at timestamptz NOT NULL
                REFERENCES reconciliation_checks (checked_at) ON DELETE CASCADE ON UPDATE CASCADE,
            name text NOT NULL,
            ok boolean NOT NULL,
            position bigint NOT NULL,
            breach_count integer NOT NULL,
            breaches jsonb NOT NULL,
            PRIMARY KEY (checked_at, name)
        );
        """,
    ),
    (
        54,
        "appends take parallel arrays, sent in binary (a composite array is dumped as text)",
        f"""
        DROP FUNCTION pumpparty_insert_events(public.stored_event_uuid[]);
        CREATE FUNCTION pumpparty_insert_events(
            ids uuid[], versions bigint[], topics text[], states bytea[]
        ) RETURNS SETOF bigint LANGUAGE plpgsql
        SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            SET LOCAL lock_timeout = '10s';
            LOCK TABLE public.{EVENTS_TABLE} IN EXCLUSIVE MODE;
            NOTIFY {EVENTS_TABLE};
            RETURN QUERY
                INSERT INTO public.{EVENTS_TABLE} (originator_id, originator_version, topic, state)
                SELECT * FROM unnest(ids, versions, topics, states)
                RETURNING notification_id;
        END $$;
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


class RoleError(RuntimeError):
    """The service role cannot be set up, or would not be kept from rewriting the log."""


def secure_service_role(url: str, service_url: str) -> str:
    """As the owner (`url`): make sure the service's role (the user in `service_url`)
    exists, is not the owner nor a superuser nor a member of the owner, and holds exactly
    its grants. Projection tables the owner still owns (made before the roles were split)
    are handed to it, since rebuilds create and drop them. Returns the role's name."""
    params = conninfo_to_dict(service_url)
    role = str(params.get("user") or "")
    if not role:
        raise RoleError("the service's database URL must name its role (user)")
    password = str(params["password"]) if params.get("password") else None
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            owner = str(_one(conn, "SELECT current_user"))
            if role == owner:
                raise RoleError(
                    f"the service must not run as {owner!r}, the log's owner: give"
                    " PUMPPARTY_SERVICE_DATABASE_URL another role (or leave it unset)"
                )
            _ensure_role(conn, role, password, service_url)
            _check_separation(conn, owner, role)
            with conn.transaction():
                _hand_over_projection_tables(conn, role)
                _grant(conn, role)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return role


def refuse_code_of(url: str, service_url: str) -> None:
    """As the owner, before running any step: the service may create tables in `public`
    (its projections), so it could also plant a function or operator there that a step,
    run with the owner's rights, would call in place of a built-in one. It never needs
    any: if it owns one, nothing runs until an operator has looked."""
    role = conninfo_to_dict(service_url).get("user")
    with psycopg.connect(url, autocommit=True) as conn:
        planted = conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner"
            " WHERE r.rolname = %s"
            " UNION ALL SELECT o.oid::regoperator::text FROM pg_operator o"
            " JOIN pg_roles r ON r.oid = o.oprowner WHERE r.rolname = %s",
            (role, role),
        ).fetchall()
    if planted:
        names = ", ".join(str(row[0]) for row in planted)
        raise RoleError(
            f"the service role {role!r} owns functions or operators ({names}): a step run"
            " as the owner could call them; drop them (and find out how they got there)"
        )


def _one(conn: psycopg.Connection[Any], query: str, *params: object) -> object:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _ensure_role(conn: psycopg.Connection[Any], role: str, password: str | None, url: str) -> None:
    """Create the role if missing; if its URL's password no longer logs in, set it again
    (the derived password follows the owner's when that one is rotated)."""
    if _one(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", role) is None:
        create = SQL(
            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
        ).format(Identifier(role))
        if password:
            create += SQL(" PASSWORD {}").format(Literal(password))
        try:
            conn.execute(create)
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            pass  # another migration (of another database on this server) made it just now
        except psycopg.errors.InsufficientPrivilege:
            raise RoleError(
                f"cannot create the service role {role!r}: let the owner create roles, or"
                " create it yourself and set PUMPPARTY_SERVICE_DATABASE_URL"
            ) from None
        log.info("created the service role %s", role)
        return
    if password is None:
        return
    try:
        psycopg.connect(url, connect_timeout=10).close()
    except psycopg.OperationalError:
        try:
            conn.execute(
                SQL("ALTER ROLE {} PASSWORD {}").format(Identifier(role), Literal(password))
            )
        except psycopg.errors.InsufficientPrivilege:
            raise RoleError(
                f"the service role {role!r} cannot log in with its URL's password, and the"
                " owner may not set it"
            ) from None
        log.info("set the service role %s's password again", role)


def _check_separation(conn: psycopg.Connection[Any], owner: str, role: str) -> None:
    row = conn.execute(
        "SELECT rolsuper, rolbypassrls, pg_has_role(rolname, %s, 'MEMBER')"
        " FROM pg_roles WHERE rolname = %s",
        (owner, role),
    ).fetchone()
    if row is None:
        raise RoleError(f"the service role {role!r} does not exist")
    superuser, bypasses_rls, member_of_owner = row
    if superuser or bypasses_rls:
        raise RoleError(f"the service role {role!r} must not be a superuser nor bypass RLS")
    if member_of_owner:
        raise RoleError(f"the service role {role!r} must not be a member of the owner {owner!r}")


def _hand_over_projection_tables(conn: psycopg.Connection[Any], role: str) -> None:
    """Generations (`<table>__g<N>`, their tracking tables) and readers' views the owner
    made before the service had a role of its own."""
    rows = conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relowner = (SELECT oid FROM pg_roles"
        "  WHERE rolname = current_user)"
        " AND ((c.relkind = 'r' AND c.relname ~ '__g[0-9]+(_tracking)?$')"
        "  OR (c.relkind = 'v' AND EXISTS (SELECT 1 FROM pg_class t"
        "   WHERE t.relnamespace = c.relnamespace AND t.relkind = 'r'"
        "   AND left(t.relname, length(c.relname) + 3) = c.relname || '__g')))"
    ).fetchall()
    for name, kind in rows:
        statement = (
            "ALTER VIEW {}.{} OWNER TO {}" if kind == "v" else "ALTER TABLE {}.{} OWNER TO {}"
        )
        conn.execute(
            SQL(statement).format(Identifier("public"), Identifier(str(name)), Identifier(role))
        )
    if rows:
        log.info("handed %d projection tables and views to %s", len(rows), role)


def _grant(conn: psycopg.Connection[Any], role: str) -> None:
    who = Identifier(role)
    database = Identifier(str(_one(conn, "SELECT current_database()")))
    conn.execute(SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, who))
    # Projection tables live beside the log: the service creates, owns and drops them.
    conn.execute(SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(who))
    for table, privileges in LOG_GRANTS.items():
        qualified = SQL("public.{}").format(Identifier(table))
        conn.execute(SQL("REVOKE ALL ON {} FROM {}").format(qualified, who))
        conn.execute(SQL("GRANT {} ON {} TO {}").format(SQL(privileges), qualified, who))
    working = [
        str(name)
        for (name,) in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
            " AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
            " AND NOT c.relname = ANY(%s)",
            (list(LOG_GRANTS),),
        ).fetchall()
    ]
    for table in working:
        conn.execute(
            SQL("GRANT {} ON public.{} TO {}").format(SQL(WORKING_STATE), Identifier(table), who)
        )
    # Serial columns: the events' positions and the working tables' ids (nextval only).
    for (sequence,) in conn.execute(
        "SELECT s.oid::regclass::text FROM pg_class s"
        " JOIN pg_depend d ON d.objid = s.oid AND d.deptype IN ('a', 'i')"
        " JOIN pg_class t ON t.oid = d.refobjid"
        " JOIN pg_namespace n ON n.oid = t.relnamespace"
        " WHERE s.relkind = 'S' AND n.nspname = 'public' AND t.relname = ANY(%s)",
        ([EVENTS_TABLE, *working],),
    ).fetchall():
        conn.execute(SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(SQL(str(sequence)), who))
    # Appends run as the owner (to take the ordering lock): the service alone may call it.
    insert = SQL("FUNCTION public.{}({})").format(
        Identifier(INSERT_FUNCTION), SQL(INSERT_FUNCTION_ARGUMENTS)
    )
    conn.execute(SQL("REVOKE ALL ON {} FROM PUBLIC").format(insert))
    conn.execute(SQL("GRANT EXECUTE ON {} TO {}").format(insert, who))
