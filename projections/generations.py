"""Generations: every model call with its tokens (usage per clone and per user), and the
artifacts generations made, stored once per SHA-256 and listed per clone.

The artifacts arrive in the events (`Generation.Answered`, `.Completed`), so this read model
is the content-addressed store: `generation_artifacts` keeps each content once under its
hash (bytea, whatever a model wrote), `generation_artifact_refs` says which generation of
which clone made which artifact, in log order (`position`, then `ordinal` within an event).

The cadence driver's decisions (`TradingDecisions.Decided`) land here too: each decision's
record (`aggregates.decisions.decision_record`) is an artifact of the account's clone
(`account_id` set, no generation), and its model nodes' provider calls are rows of
`generation_calls` (purpose `model-node`), so per-clone and per-user usage count them. A
backtest job's report (`BacktestReportRecord.Recorded`) is an artifact of its clone too
(`job_id` set).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from psycopg.sql import SQL

from aggregates.backtest_reports import BacktestReportRecord
from aggregates.decisions import TradingDecisions, decision_record
from aggregates.generations import Generation
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.paging import Page
from projections.reads import ProjectionReads, columns


class GenerationsView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "generations": """(
            generation_id uuid PRIMARY KEY,
            clone_id uuid NOT NULL,
            owner_id uuid NOT NULL,
            prompt_version text NOT NULL,
            status text NOT NULL,
            day date NOT NULL,
            rounds integer NOT NULL DEFAULT 0,
            provider text,
            model text,
            draft_number integer,
            graph_digest text,
            failure_code text,
            started_at timestamptz NOT NULL,
            finished_at timestamptz,
            position bigint NOT NULL UNIQUE
        )""",
        "generation_calls": """(
            position bigint NOT NULL,
            ordinal integer NOT NULL DEFAULT 0,
            generation_id uuid,
            account_id uuid,
            clone_id uuid NOT NULL,
            owner_id uuid NOT NULL,
            day date NOT NULL,
            round integer,
            purpose text NOT NULL,
            provider text NOT NULL,
            model text NOT NULL,
            request_hash text NOT NULL,
            prompt_tokens bigint NOT NULL,
            completion_tokens bigint NOT NULL,
            cached_tokens bigint NOT NULL,
            outcome text NOT NULL,
            detail text NOT NULL,
            retry_after_ms bigint,
            duration_ms bigint NOT NULL,
            occurred_at timestamptz NOT NULL,
            PRIMARY KEY (position, ordinal)
        )""",
        "generation_artifacts": """(
            sha256 text PRIMARY KEY,
            media_type text NOT NULL,
            size_bytes integer NOT NULL,
            content bytea NOT NULL,
            first_position bigint NOT NULL
        )""",
        "generation_artifact_refs": """(
            position bigint NOT NULL,
            ordinal integer NOT NULL,
            generation_id uuid,
            account_id uuid,
            job_id uuid,
            clone_id uuid NOT NULL,
            owner_id uuid NOT NULL,
            kind text NOT NULL,
            sha256 text NOT NULL,
            round integer,
            created_at timestamptz NOT NULL,
            PRIMARY KEY (position, ordinal)
        )""",
    }
    indexes: ClassVar[dict[str, list[str]]] = {
        "generations": ["(clone_id, position)"],
        "generation_calls": ["(clone_id)", "(owner_id, day)"],
        "generation_artifact_refs": ["(clone_id, position, ordinal)", "(clone_id, sha256)"],
    }

    def start(
        self,
        generation_id: UUID,
        clone_id: UUID,
        owner_id: UUID,
        prompt_version: str,
        day: str,
        at: datetime,
        position: int,
    ) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (generation_id, clone_id, owner_id, prompt_version, status, day,"
                " started_at, position) VALUES (%s, %s, %s, %s, 'running', %s, %s, %s)"
            ).format(self.table("generations")),
            (
                generation_id,
                clone_id,
                owner_id,
                prompt_version,
                date.fromisoformat(day),
                at,
                position,
            ),
        )

    def resume(self, generation_id: UUID, day: str) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = 'running', day = %s, failure_code = NULL,"
                " finished_at = NULL WHERE generation_id = %s"
            ).format(self.table("generations")),
            (date.fromisoformat(day), generation_id),
        )

    def record_call(self, event: Generation.CallRecorded, position: int) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (position, generation_id, clone_id, owner_id, day, round, purpose,"
                " provider, model, request_hash, prompt_tokens, completion_tokens, cached_tokens,"
                " outcome, detail, retry_after_ms, duration_ms, occurred_at)"
                " SELECT %s, generation_id, clone_id, owner_id, day, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, %s, %s, %s, %s FROM {} WHERE generation_id = %s"
            ).format(self.table("generation_calls"), self.table("generations")),
            (
                position,
                event.round,
                event.purpose,
                event.provider,
                event.model,
                event.request_hash,
                event.prompt_tokens,
                event.completion_tokens,
                event.cached_tokens,
                event.outcome,
                event.detail,
                event.retry_after_ms,
                event.duration_ms,
                event.timestamp,
                event.originator_id,
            ),
        )

    def answer(self, event: Generation.Answered, position: int) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET rounds = greatest(rounds, %s), provider = %s, model = %s"
                " WHERE generation_id = %s"
            ).format(self.table("generations")),
            (event.round, event.provider, event.model, event.originator_id),
        )
        self.store_artifacts(
            event.originator_id, event.artifacts, event.round, event.timestamp, position
        )

    def complete(self, event: Generation.Completed, position: int) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = 'completed', draft_number = %s, graph_digest = %s,"
                " finished_at = %s WHERE generation_id = %s"
            ).format(self.table("generations")),
            (event.draft_number, event.graph_digest, event.timestamp, event.originator_id),
        )
        self.store_artifacts(event.originator_id, event.artifacts, None, event.timestamp, position)

    def fail(self, generation_id: UUID, code: str, at: datetime) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = 'failed', failure_code = %s, finished_at = %s"
                " WHERE generation_id = %s"
            ).format(self.table("generations")),
            (code, at, generation_id),
        )

    def keep_content(self, sha256: str, media_type: str, content: str, position: int) -> None:
        """An artifact's bytes, stored once by their hash whoever refers to them."""
        data = content.encode("utf-8")
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (sha256, media_type, size_bytes, content, first_position)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (sha256) DO NOTHING"
            ).format(self.table("generation_artifacts")),
            (sha256, media_type, len(data), data, position),
        )

    def store_artifacts(
        self,
        generation_id: UUID,
        artifacts: list[dict[str, str]],
        round: int | None,
        at: datetime,
        position: int,
    ) -> None:
        for ordinal, artifact in enumerate(artifacts):
            self.keep_content(
                artifact["sha256"], artifact["media_type"], artifact["content"], position
            )
            self.cursor.execute(
                SQL(
                    "INSERT INTO {} (position, ordinal, generation_id, clone_id, owner_id, kind,"
                    " sha256, round, created_at) SELECT %s, %s, generation_id, clone_id,"
                    " owner_id, %s, %s, %s, %s FROM {} WHERE generation_id = %s"
                ).format(self.table("generation_artifact_refs"), self.table("generations")),
                (
                    position,
                    ordinal,
                    artifact["kind"],
                    artifact["sha256"],
                    round,
                    at,
                    generation_id,
                ),
            )

    def decide(self, event: TradingDecisions.Decided, position: int) -> None:
        """A decision's record as an artifact of the account's clone, and its model calls."""
        if event.clone_id is None or event.owner_id is None:
            return  # recorded before decisions named their clone: nothing to list it under
        day = event.timestamp.astimezone(UTC).date()
        for ordinal, call in enumerate(event.model_calls or []):
            self.cursor.execute(
                SQL(
                    "INSERT INTO {} (position, ordinal, account_id, clone_id, owner_id, day,"
                    " purpose, provider, model, request_hash, prompt_tokens, completion_tokens,"
                    " cached_tokens, outcome, detail, retry_after_ms, duration_ms, occurred_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                    " %s, %s)"
                ).format(self.table("generation_calls")),
                (
                    position,
                    ordinal,
                    event.account_id,
                    event.clone_id,
                    event.owner_id,
                    day,
                    call["purpose"],
                    call["provider"],
                    call["model"],
                    call["request_hash"],
                    call["prompt_tokens"],
                    call["completion_tokens"],
                    call["cached_tokens"],
                    call["outcome"],
                    call["detail"],
                    call["retry_after_ms"],
                    call["duration_ms"],
                    event.timestamp,
                ),
            )
        record = decision_record(event)
        self.keep_content(record.sha256, record.media_type, record.content, position)
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (position, ordinal, account_id, clone_id, owner_id, kind,"
                " sha256, created_at) VALUES (%s, 0, %s, %s, %s, %s, %s, %s)"
            ).format(self.table("generation_artifact_refs")),
            (
                position,
                event.account_id,
                event.clone_id,
                event.owner_id,
                record.kind,
                record.sha256,
                event.timestamp,
            ),
        )

    def report(self, event: BacktestReportRecord.Recorded, position: int) -> None:
        """A backtest job's report as an artifact of its clone."""
        for ordinal, artifact in enumerate(event.artifacts):
            self.keep_content(
                artifact["sha256"], artifact["media_type"], artifact["content"], position
            )
            self.cursor.execute(
                SQL(
                    "INSERT INTO {} (position, ordinal, job_id, clone_id, owner_id, kind, sha256,"
                    " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                ).format(self.table("generation_artifact_refs")),
                (
                    position,
                    ordinal,
                    event.job_id,
                    event.clone_id,
                    event.owner_id,
                    artifact["kind"],
                    artifact["sha256"],
                    event.timestamp,
                ),
            )


class Generations(ReadModel[GenerationsView]):
    name = "generations"
    view_class = GenerationsView
    topics = topics_of(
        Generation.Started,
        Generation.Resumed,
        Generation.CallRecorded,
        Generation.Answered,
        Generation.Completed,
        Generation.Failed,
        TradingDecisions.Decided,
        BacktestReportRecord.Recorded,
    )

    process_event = event_handlers()

    @process_event.register
    def _(self, event: Generation.Started, tracking: Tracking) -> None:
        self.view.start(
            event.originator_id,
            event.clone_id,
            event.owner_id,
            event.prompt_version,
            event.day,
            event.timestamp,
            tracking.notification_id,
        )

    @process_event.register
    def _(self, event: Generation.Resumed, tracking: Tracking) -> None:
        self.view.resume(event.originator_id, event.day)

    @process_event.register
    def _(self, event: Generation.CallRecorded, tracking: Tracking) -> None:
        self.view.record_call(event, tracking.notification_id)

    @process_event.register
    def _(self, event: Generation.Answered, tracking: Tracking) -> None:
        self.view.answer(event, tracking.notification_id)

    @process_event.register
    def _(self, event: Generation.Completed, tracking: Tracking) -> None:
        self.view.complete(event, tracking.notification_id)

    @process_event.register
    def _(self, event: Generation.Failed, tracking: Tracking) -> None:
        self.view.fail(event.originator_id, event.code, event.timestamp)

    @process_event.register
    def _(self, event: TradingDecisions.Decided, tracking: Tracking) -> None:
        self.view.decide(event, tracking.notification_id)

    @process_event.register
    def _(self, event: BacktestReportRecord.Recorded, tracking: Tracking) -> None:
        self.view.report(event, tracking.notification_id)


# --- queries -------------------------------------------------------------------------------

_TOTALS = (
    "count(*)::bigint AS calls,"
    " (count(*) FILTER (WHERE outcome <> 'ok'))::bigint AS failed_calls,"
    " coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,"
    " coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens,"
    " coalesce(sum(cached_tokens), 0)::bigint AS cached_tokens,"
    " coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint AS total_tokens"
)


@dataclass(frozen=True, slots=True)
class UsageRow:
    calls: int
    failed_calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class ModelUsageRow(UsageRow):
    provider: str
    model: str
    purpose: str


@dataclass(frozen=True, slots=True)
class CloneUsageRow(UsageRow):
    clone_id: UUID


@dataclass(frozen=True, slots=True)
class ArtifactRow:
    sha256: str
    kind: str
    media_type: str
    size_bytes: int
    generation_id: UUID | None
    account_id: UUID | None
    job_id: UUID | None
    round: int | None
    created_at: datetime
    position: int
    ordinal: int


@dataclass(frozen=True, slots=True)
class ArtifactContentRow:
    sha256: str
    media_type: str
    content: bytes


async def usage_of_clone(reads: ProjectionReads, clone_id: UUID) -> UsageRow:
    query = f"SELECT {_TOTALS} FROM generation_calls WHERE clone_id = %s"
    row = await reads.one(UsageRow, query, (clone_id,))
    assert row is not None  # an aggregate over no rows is still one row
    return row


async def usage_of_clone_by_model(reads: ProjectionReads, clone_id: UUID) -> list[ModelUsageRow]:
    query = (
        f"SELECT {_TOTALS}, provider, model, purpose FROM generation_calls WHERE clone_id = %s"
        " GROUP BY provider, model, purpose ORDER BY provider, model, purpose"
    )
    return await reads.all(ModelUsageRow, query, (clone_id,))


async def usage_of_user(
    reads: ProjectionReads, owner_id: UUID, day: date | None, *, generations_only: bool = False
) -> UsageRow:
    """The user's usage on one UTC day (the budget's), or over all time (`day` None); with
    `generations_only`, the calls the daily generation budget counts (not model nodes')."""
    query = (
        f"SELECT {_TOTALS} FROM generation_calls WHERE owner_id = %s"
        " AND (%s::date IS NULL OR day = %s::date)"
        " AND (NOT %s OR generation_id IS NOT NULL)"
    )
    row = await reads.one(UsageRow, query, (owner_id, day, day, generations_only))
    assert row is not None
    return row


async def usage_of_user_by_clone(
    reads: ProjectionReads, owner_id: UUID, limit: int
) -> list[CloneUsageRow]:
    """The user's `limit` clones that used the most tokens, most first."""
    query = (
        f"SELECT {_TOTALS}, clone_id FROM generation_calls WHERE owner_id = %s"
        " GROUP BY clone_id ORDER BY total_tokens DESC, clone_id LIMIT %s"
    )
    return await reads.all(CloneUsageRow, query, (owner_id, limit))


async def artifacts_of_clone(
    reads: ProjectionReads, clone_id: UUID, page: Page
) -> list[ArtifactRow]:
    """A page of the artifacts the clone's generations made, in log order (cursor:
    position and ordinal)."""
    after = (page.position(), page.position("ordinal"))
    query = (
        "SELECT r.sha256, r.kind, a.media_type, a.size_bytes, r.generation_id, r.account_id,"
        " r.job_id, r.round,"
        " r.created_at, r.position, r.ordinal"
        " FROM generation_artifact_refs r JOIN generation_artifacts a USING (sha256)"
        " WHERE r.clone_id = %s AND (r.position, r.ordinal) > (%s, %s)"
        " ORDER BY r.position, r.ordinal LIMIT %s"
    )
    return await reads.all(ArtifactRow, query, (clone_id, *after, page.fetch))


async def artifact_of_clone(
    reads: ProjectionReads, clone_id: UUID, sha256: str
) -> ArtifactContentRow | None:
    """An artifact's content, if one of the clone's generations made it."""
    query = SQL(
        "SELECT {} FROM generation_artifacts WHERE sha256 = %s AND EXISTS"
        " (SELECT 1 FROM generation_artifact_refs WHERE clone_id = %s AND sha256 = %s)"
    ).format(columns(ArtifactContentRow))
    return await reads.one(ArtifactContentRow, query, (sha256, clone_id, sha256))
