"""Every scheduled job, built once with its collaborators (the clock, the price source, the
EVM node, read functions) from the process's services. The worker only runs what this lists."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from ingest.ingestion import Ingestion
from ingest.providers import open_model_router
from projections.arena import admission_candidates
from projections.audit_chain import record_digest
from projections.audition_queue import auditions_to_evaluate
from projections.deposits import pending_payments
from projections.prop_accounts import accounts_to_mark
from projections.races import active_races
from projections.reconciliation import reconcile_and_record
from projections.withdrawals import withdrawals_to_verify
from runtime.clock import Clock
from runtime.pg_tools import pg_tools
from services.arena import ADMISSION_JOB, AdmitFromQueue, admission_policy
from services.auditions import EVALUATOR_JOB, EvaluateDueAuditions
from services.backtests import BACKTEST_JOB, backtest_worker
from services.backups import BACKUP_JOB, BackupRound, backup_cadence, backup_dir, dump_url
from services.bootstrap import Services
from services.cadence import CADENCE_JOB, CadenceDriver
from services.economy import DEPOSIT_JOB, DepositConfirmations
from services.identity import NONCE_PRUNE_JOB, PruneSignInNonces
from services.job_queue import JobQueue, queue_policy
from services.prop_trading import MARK_JOB, MarkToMarket
from services.races import CALENDAR_JOB, RaceCalendar, payout_policy, race_tickets

Schedule = dict[str, tuple[Callable[[], object], float]]
"""Job name -> (one round of the job, seconds between rounds)."""


def scheduled_jobs(services: Services, *, clock: Clock | None = None) -> Schedule:
    """The worker's jobs; `clock` replaces the process's clock (a test, a replay)."""
    settings = services.settings
    clock = clock or services.clock
    datastore = services.datastore
    jobs: Schedule = {
        "audit_digest": (lambda: record_digest(services.url), settings.digest_interval),
        EVALUATOR_JOB: (
            EvaluateDueAuditions(
                services.event_log,
                services.prices,
                lambda now: auditions_to_evaluate(datastore, now),
                clock,
                services.url,
            ),
            settings.audition_evaluate_interval,
        ),
        ADMISSION_JOB: (
            AdmitFromQueue(
                services.event_log,
                lambda: admission_candidates(datastore),
                admission_policy(settings),
                clock,
                services.url,
            ),
            settings.arena_admission_interval,
        ),
        CALENDAR_JOB: (
            RaceCalendar(
                services.event_log,
                services.prices,
                lambda: active_races(datastore),
                lambda race_id: race_tickets(services.projections, race_id),
                payout_policy(settings),
                clock,
                services.url,
            ),
            settings.race_calendar_interval,
        ),
        MARK_JOB: (
            MarkToMarket(
                services.event_log,
                services.prices,
                lambda: accounts_to_mark(datastore),
                clock,
            ),
            settings.prop_mark_interval,
        ),
        DEPOSIT_JOB: (
            DepositConfirmations(
                services.event_log,
                services.evm,
                services.deposit_policy,
                # Payments in (purchases, deposits) and out (withdrawals' reported txs).
                lambda: pending_payments(datastore) + withdrawals_to_verify(datastore),
                clock,
                # A payment whose check fails is retried, then dead-lettered, on its own.
                JobQueue(datastore, clock, queue_policy(settings)),
            ),
            settings.deposit_poll_interval,
        ),
        NONCE_PRUNE_JOB: (PruneSignInNonces(services.event_log, clock), settings.nonce_ttl),
        BACKTEST_JOB: (
            backtest_worker(datastore, clock, settings, services.event_log),
            settings.backtest_poll_interval,
        ),
        CADENCE_JOB: (cadence_driver(services, clock), settings.engine_cadence_interval),
        "ledger_reconciliation": (
            lambda: reconcile_and_record(
                datastore, settings.admin_addresses, mapper=services.projections.mapper
            ),
            settings.reconciliation_interval,
        ),
        # Looks hourly; dumps, restores into a scratch cluster and verifies once a day.
        BACKUP_JOB: (
            BackupRound(
                services.event_log,
                dump_url(settings, services.url),
                services.url,
                backup_dir(settings),
                pg_tools(settings.pg_bin),
                settings.backup_interval,
                backup_cadence(settings),
                settings.backup_keep,
                clock,
            ),
            backup_cadence(settings),
        ),
    }
    if settings.ingest_mode != "off":  # market data: live, or replayed from recordings
        feed = Ingestion(settings, datastore, clock=clock)
        jobs |= {
            "ingest_hyperliquid": (feed.hyperliquid, feed.cadence("hyperliquid")),
            "ingest_polymarket": (feed.polymarket, feed.cadence("polymarket")),
            "ingest_defillama": (feed.defillama, feed.cadence("defillama")),
            "ingest_channels": (feed.channels, settings.ingest_channels_interval),
            "ingest_retention": (feed.prune, settings.ingest_retention_interval),
        }
    return jobs


def cadence_driver(services: Services, clock: Clock) -> CadenceDriver:
    """The engine's cadence driver, as the worker and `pumpparty engine` run it."""
    settings = services.settings
    return CadenceDriver(
        services.event_log,
        services.prices,
        services.datastore,
        services.url,
        clock,
        settings.ingest_candle_interval,  # a graph without a cadence: the stored bars
        settings.engine_max_accounts,
        timedelta(seconds=settings.prop_max_mark_age),
        router=open_model_router(settings, clock=clock),  # model nodes: the `model-node` route
    )
