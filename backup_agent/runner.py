"""The agent's main loop: resend spooled reports, poll, run jobs, report.

Jobs run in their own threads (at most `max_parallel_jobs` at a time), so the
loop keeps polling, heartbeating and resending while a long backup runs. A
job's progress reporter starts as soon as the job is claimed, so its lease is
kept alive even while it waits for a free slot.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backup_agent import __version__, plugins, upgrade
from backup_agent.allow import AllowList
from backup_agent.archives import ArchiveRecord
from backup_agent.client import AGENT_CLONED, AGENT_UNSUPPORTED, NOT_IMPLEMENTED, PortalClient
from backup_agent.config import Config, ConfigError, load
from backup_agent.context import JobContext
from backup_agent.errors import PortalError, PortalUnreachable, RefusedByAgent
from backup_agent.executor import Executor, index_path, new_context
from backup_agent.jobs import job_id_of
from backup_agent.progress import Progress, ProgressReporter
from backup_agent.spool import Spool
from backup_agent.state import StagingRecord, instance_of

log = logging.getLogger(__name__)

BACKOFF_BASE = 5.0
BACKOFF_CAP = 300.0  # five minutes, as the protocol promises the portal
MAX_POLL_AFTER = 3600
# The spool is resent on its own timer while it holds reports: every
# min(SPOOL_INTERVAL, poll interval), backing off to at most SPOOL_RETRY_CAP
# while the portal is down, so a report arrives seconds after the portal is
# back even when the poll backoff has grown to minutes.
SPOOL_INTERVAL = 5.0
SPOOL_RETRY_CAP = 10.0
# How often a cloned agent (poll answered 409 agent_cloned) asks again.
CLONED_RETRY = 300.0
CLONED_MESSAGE = (
    "the portal refused this agent: this config was copied from another host; ask the backup team "
    "to re-key this server: backup-agent enrol --token … --force (no jobs run until then)"
)

# While the portal refuses this agent as too old (426 agent_unsupported): poll this slowly, and
# log the portal's message (how to upgrade) at most once per UNSUPPORTED_LOG_EVERY.
UNSUPPORTED_RETRY = 600.0
UNSUPPORTED_LOG_EVERY = 1800.0
# After a failed automatic upgrade (the portal offered one): try again after this long.
UPGRADE_RETRY = 3600.0


def backoff_delay(failures: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after `failures` consecutive failed polls.

    Exponential, capped at five minutes, with jitter between half and all of
    it: when the portal comes back, its agents do not all return in the same second.
    """
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(failures - 1, 0))
    return delay * (0.5 + 0.5 * rand())


def spool_retry_delay(failures: int, interval: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds between spool resends after `failures` failed ones: short, capped at SPOOL_RETRY_CAP."""
    if failures <= 0:
        return interval
    delay = min(max(SPOOL_RETRY_CAP, interval), interval * 2 ** (failures - 1))
    return delay * (0.5 + 0.5 * rand())


def cloned_retry_delay(rand: Callable[[], float] = random.random) -> float:
    """Seconds between polls while the portal says this config is a copy: slow, jittered."""
    return CLONED_RETRY * (0.5 + 0.5 * rand())


def unsupported_retry_delay(rand: Callable[[], float] = random.random) -> float:
    """Seconds between polls while the portal refuses this agent as too old: slow, jittered."""
    return UNSUPPORTED_RETRY * (0.5 + 0.5 * rand())


def job_locations(raw: Any) -> set[str]:
    """The storage locations a raw job writes (`destination`) or reads: its `backup`, an incremental's
    `base`, a chain restore's `chain` members. None of them may be removed while the job runs."""
    if not isinstance(raw, dict):
        return set()
    chain = raw.get("chain") if isinstance(raw.get("chain"), list) else []
    read = [raw.get("backup"), raw.get("base"), *chain]
    values = [raw.get("destination"), *(ref.get("location") for ref in read if isinstance(ref, dict))]
    return {value for value in values if isinstance(value, str)}


class Agent:
    def __init__(
        self, config: Config, client: PortalClient | None = None, config_file: Path | None = None
    ) -> None:
        """`config_file`: re-read the allow-list from it before every job and poll (see Executor)."""
        self.config = config
        self.client = client or PortalClient(
            config.server, config.agent_token, timeout=config.http_timeout, ca_file=config.ca_file
        )
        self.spool = Spool(config.spool_dir)
        self.staging = StagingRecord(config.state_path)
        self.archives = ArchiveRecord(config.state_path)
        # When the last archive report went out (monotonic clock); None: not yet since start.
        self._archives_reported_at: float | None = None
        self.clock: Callable[[], float] = time.monotonic
        self.executor = Executor(config, config_file)
        self._instance: dict[str, str] | None = None
        # Set while the portal answers polls with 409 agent_cloned.
        self.cloned = False
        # Set while the portal refuses this agent's protocol (426 agent_unsupported).
        self.unsupported = False
        self._unsupported_logged_at: float | None = None
        self._upgrade_failed_at: float | None = None
        # The offered version last logged as "not installed automatically": said once per version.
        self._upgrade_noticed: str | None = None
        # run_forever's exit status: upgrade.RESTART_EXIT after an automatic upgrade.
        self.exit_code = 0
        self._poll_after = float(config.poll_after)
        self._spool_lock = threading.Lock()
        self.stop_event = threading.Event()
        self._slots = threading.BoundedSemaphore(config.max_parallel_jobs)
        self._lock = threading.Lock()
        self._running: dict[int, JobContext] = {}
        # Storage locations each running job writes or reads: never removed under it.
        self._locations: dict[int, set[str]] = {}
        self._threads: list[threading.Thread] = []
        self._acknowledged: dict[int, bool] = {}
        self.stop_reason = "stop requested"

    # --- reports ------------------------------------------------------------------

    def send_report(self, job_id: int, report: dict[str, Any], index_file: str | None = None) -> bool:
        """Spool first, then send; the spool entry goes only once acknowledged.

        ``index_file``: the backup's index on protection storage, uploaded
        before the report (and again before every resend of it).
        """
        try:
            self.spool.put(job_id, report, index_file)
        except OSError as exc:
            # A full or read-only disk must not also cost us the report: send
            # it anyway, it is only lost if the portal cannot take it now.
            log.error("job %s: report could not be spooled (%s); sending it unspooled", job_id, exc)
        return self._send_spooled(job_id, report, index_file)

    def _upload_index(
        self, job_id: int, report: dict[str, Any], index_file: str | None
    ) -> dict[str, Any] | None:
        """Upload the index a report announces; the report to send then, or None when the job is gone.

        The report loses its ``index`` when the file is gone or the portal
        refuses it for good (a 4xx but 409, or 501; 404 or 501 is also what a
        portal older than protocol 3 answers): a backup is never lost for want
        of its file list. PortalError (5xx, agent_cloned) and PortalUnreachable
        propagate: the report stays spooled and both are sent again later.
        """
        summary = report.get("index")
        if not isinstance(summary, dict):
            return report
        if index_file is None:
            log.warning("job %s: no index file to upload; reporting the backup without its index", job_id)
            return {key: value for key, value in report.items() if key != "index"}
        try:
            self.client.upload_index(job_id, index_file, str(summary.get("sha256") or ""))
        except FileNotFoundError:
            log.warning("job %s: index %s is gone; reporting the backup without it", job_id, index_file)
        except OSError as exc:
            log.error("job %s: index %s cannot be read (%s); reporting without it", job_id, index_file, exc)
        except PortalError as exc:
            if exc.status == 409 and exc.code != AGENT_CLONED:
                log.warning("job %s: index refused, lease lost (%s)", job_id, exc.detail)
                return None
            if (exc.status >= 500 and exc.status != NOT_IMPLEMENTED) or exc.code == AGENT_CLONED:
                raise
            log.error("job %s: the portal refused the index (%s); reporting without it", job_id, exc)
        else:
            return report
        return {key: value for key, value in report.items() if key != "index"}

    def _send_spooled(self, job_id: int, report: dict[str, Any], index_file: str | None = None) -> bool:
        try:
            if report.get("status") == "succeeded" and "index" in report:
                sendable = self._upload_index(job_id, report, index_file)
            else:
                sendable = report
            if sendable is not None:
                self.client.complete(job_id, sendable)
        except (PortalError, PortalUnreachable) as exc:
            log.warning("job %s: report kept in the spool: %s", job_id, exc)
            return False
        try:
            self.spool.remove(job_id)
        except OSError as exc:  # acknowledged all the same; a resend would be answered 200 again
            log.error("job %s: acknowledged report could not be removed from the spool: %s", job_id, exc)
        return True

    def resend_spool(self) -> bool:
        """Resend every spooled report; True when the spool is now empty."""
        all_sent = True
        # One resender at a time (the loop and the spool timer): no report twice at once.
        with self._spool_lock:
            for entry in self.spool.pending():
                with self._lock:
                    if entry.job_id in self._running:
                        continue  # its own thread is about to send it
                all_sent = self._send_spooled(entry.job_id, entry.report, entry.index_file) and all_sent
        return all_sent

    def spool_interval(self) -> float:
        return min(SPOOL_INTERVAL, self._poll_after)

    def _spool_timer(self) -> None:
        """Resend the spool on its own short timer, independent of the poll backoff."""
        failures = 0
        while not self.stop_event.wait(spool_retry_delay(failures, self.spool_interval())):
            try:
                if self.cloned or self.unsupported or self.resend_spool():
                    failures = 0
                else:
                    failures += 1
            except Exception:  # the timer must outlive any surprise; the loop resends too
                log.exception("spool resend failed")
                failures += 1

    # --- staging ------------------------------------------------------------------

    def sweep(self, *, everywhere: bool = True) -> None:
        """Remove stale staging folders of this agent (never those of jobs running now)."""
        try:
            self.staging.sweep(self.running, everywhere=everywhere)
        except Exception:  # cleaning up must never stop the agent
            log.exception("sweeping stale staging folders failed")

    def instance(self) -> dict[str, str] | None:
        """{"id", "host"} of this agent instance; the id lives in the state folder, not the config."""
        if self._instance is None:
            try:
                self._instance = instance_of(self.config.state_path)
            except OSError as exc:
                log.error("cannot read or create the instance id in %s: %s", self.config.state_path, exc)
                return None
        return self._instance

    # --- jobs ---------------------------------------------------------------------

    def start_job(self, raw: Any) -> threading.Thread | None:
        job_id = job_id_of(raw)
        if job_id is None:
            log.error("ignoring a job without an id: %r", raw)
            return None
        with self._lock:
            if job_id in self._running:
                return None  # already running here; a duplicate hand-out
            ctx = new_context(raw, self.config)
            ctx.record_staging = self.staging.add
            ctx.record_archive = self.archives.add
            self._running[job_id] = ctx
            self._locations[job_id] = job_locations(raw)
            if self.stop_event.is_set():
                ctx.request_cancel("cancelled: the agent is shutting down")
        # The job lock (shared), from the claim until the report is sent or spooled: released in the
        # job thread's finally. `backup-agent upgrade` (and the .deb's postinst) waits for it or
        # refuses, so no restart cuts a job, its index upload or its report short.
        held = contextlib.ExitStack()
        try:
            held.enter_context(upgrade.job_running(self.config.state_path, self.stop_event))
            thread = threading.Thread(
                target=self._run_job, args=(raw, ctx, held), name=f"job-{job_id}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        except BaseException:
            held.close()
            with self._lock:
                self._running.pop(job_id, None)
                self._locations.pop(job_id, None)
            raise
        return thread

    def _run_job(
        self, raw: dict[str, Any], ctx: JobContext, held: contextlib.ExitStack | None = None
    ) -> None:
        log.info("job %s: %s of %s started", ctx.job_id, raw.get("kind"), ctx.client or "?")
        progress = Progress()
        try:
            with (
                ProgressReporter(self.client, ctx, progress, self.config.progress_interval),
                self._slots,
            ):
                report = self.executor.execute(raw, ctx, progress)
            log.info("job %s: %s", ctx.job_id, report["status"])
            index = index_path(raw, report)
            self._acknowledged[ctx.job_id] = self.send_report(
                ctx.job_id, report, None if index is None else str(index)
            )
        finally:
            with self._lock:
                self._running.pop(ctx.job_id, None)
                self._locations.pop(ctx.job_id, None)
            self.sweep(everywhere=False)
            if held is not None:
                held.close()  # the job lock: an upgrade may go ahead

    def running(self) -> list[int]:
        with self._lock:
            return sorted(self._running)

    def running_or_unreported(self) -> list[int]:
        """What the poll lists as ours: running jobs, and finished ones whose report is still spooled.

        The portal re-queues a job missing from this list at once; a finished job whose
        report has not got through yet must not be run a second time.
        """
        try:
            spooled = {entry.job_id for entry in self.spool.pending()}
        except OSError:
            spooled = set()
        return sorted(set(self.running()) | spooled)

    def wait_for_jobs(self) -> None:
        for thread in list(self._threads):
            thread.join()
        self._threads = [t for t in self._threads if t.is_alive()]

    def request_stop(self, why: str) -> None:
        """Ask run_forever to stop. Safe in a signal handler: it only sets an event.

        (Taking self._lock or logging here could deadlock or raise if the
        signal lands while the main thread holds that lock or is mid-write.)
        """
        self.stop_reason = why
        self.stop_event.set()

    def shutdown(self, reason: str = "cancelled: the agent is shutting down") -> None:
        """Stop polling and stop running jobs; their failure reports are spooled and sent."""
        self.stop_event.set()
        with self._lock:
            for ctx in self._running.values():
                ctx.request_cancel(reason)

    # --- the loop -----------------------------------------------------------------

    def reported_allow_list(self) -> AllowList:
        """The allow-list for the poll body: what the next job will be checked against."""
        try:
            return self.executor.allow_list()
        except RefusedByAgent as exc:
            log.error("%s; every job is refused until the config file is fixed", exc)
            return AllowList()

    # --- archives this agent wrote (backup_agent/archives.py) ----------------------

    def archive_report_due(self) -> bool:
        """The first poll after start, then one every `archive_report_interval` seconds."""
        last = self._archives_reported_at
        return last is None or self.clock() - last >= self.config.archive_report_interval

    def archive_report(self) -> list[dict[str, Any]] | None:
        """The poll body's `archives`; None (no key at all) when the record cannot be read."""
        try:
            return self.archives.report()
        except Exception:  # reporting must never stop the agent polling
            log.exception("listing the archives this agent wrote failed")
            return None

    def busy_storage(self) -> tuple[set[str], set[int]]:
        """Locations and job ids the agent's own jobs use now: running, or report still spooled."""
        with self._lock:
            locations = set().union(*self._locations.values())
            jobs = set(self._running)
        try:
            for entry in self.spool.pending():
                jobs.add(entry.job_id)
                if isinstance(entry.report.get("location"), str):
                    locations.add(entry.report["location"])
        except OSError as exc:
            log.warning("cannot read the spool: %s", exc)
        return locations, jobs

    def remove_archives(self, locations: Any) -> None:
        """Act on a poll answer's `remove_archives`: only archives of this agent's own record."""
        try:
            self.archives.remove_all(locations, self.reported_allow_list(), self.busy_storage)
        except Exception:  # a removal gone wrong must never stop the agent polling
            log.exception("removing archives the portal asked to remove failed")

    def poll(self) -> tuple[list[Any], int]:
        report_due = self.archive_report_due()
        archives = self.archive_report() if report_due else None
        try:
            answer = self.client.poll(
                plugins.available(self.config.plugin_env),
                self.running_or_unreported(),
                self.reported_allow_list().to_json(),
                self.instance(),
                archives,
            )
        except PortalError as exc:
            if exc.status == 409 and exc.code == AGENT_CLONED:
                self.cloned = True
                log.error("%s", CLONED_MESSAGE)
            elif exc.code == AGENT_UNSUPPORTED:
                self.unsupported = True
                self.log_unsupported(exc.detail)
            raise
        self.cloned = self.unsupported = False
        if report_due:  # an unreadable record is tried again only at the next interval
            self._archives_reported_at = self.clock()
        if "remove_archives" in answer:
            # Before this answer's jobs start: none of them may be writing there yet.
            self.remove_archives(answer["remove_archives"])
        jobs = answer.get("jobs") or []
        poll_after = answer.get("poll_after", self.config.poll_after)
        if not isinstance(poll_after, int) or isinstance(poll_after, bool):
            poll_after = self.config.poll_after
        poll_after = min(max(poll_after, 1), MAX_POLL_AFTER)
        self._poll_after = float(poll_after)
        self.upgrade_offer = answer.get("upgrade") if isinstance(answer.get("upgrade"), dict) else None
        return (jobs if isinstance(jobs, list) else []), poll_after

    def log_unsupported(self, detail: str) -> None:
        """The portal's refusal (and how to upgrade), at most once per UNSUPPORTED_LOG_EVERY."""
        now = self.clock()
        last = self._unsupported_logged_at
        if last is None or now - last >= UNSUPPORTED_LOG_EVERY:
            self._unsupported_logged_at = now
            log.error(
                "the portal refuses this agent (backup-agent %s): %s; no jobs run until it is upgraded",
                __version__,
                detail or "its protocol is too old",
            )

    # --- automatic upgrade (the poll's `upgrade`, backup_agent/upgrade.py) ----------

    upgrade_offer: dict[str, Any] | None = None

    def auto_upgrade_allowed(self) -> bool:
        """The server's admin's word as the config file says it now (`backup-agent deny --auto-upgrade`
        takes effect without a restart, like the allow-list); an unreadable file says no."""
        if self.executor.config_file is None:
            return self.config.auto_upgrade
        try:
            return load(self.executor.config_file).auto_upgrade
        except ConfigError:
            return False

    def upgrade_if_offered(self) -> bool:
        """Between jobs, never during one: install the portal's agent when the poll offered it.

        True when the agent was replaced: run_forever then stops at once and exits with
        upgrade.RESTART_EXIT, and systemd starts the new one (the unit's RestartForceExitStatus=75).
        Only where the server's admin allowed it (config.auto_upgrade: the portal's switch alone is
        not enough), as the systemd service, from install.sh's zipapp (upgrade.automatic_blocker):
        otherwise the offer is logged once per version with what to run instead. A failure is logged and tried
        again after UPGRADE_RETRY.
        """
        offer = self.upgrade_offer
        if offer is None or self.running():
            return False
        blocker = upgrade.automatic_blocker() if self.auto_upgrade_allowed() else upgrade.NOT_ALLOWED_HERE
        if blocker is not None:
            offered = str(offer.get("version") or "?")
            if self._upgrade_noticed != offered:
                self._upgrade_noticed = offered
                log.warning(
                    "the portal offers backup-agent %s (this is %s), not installed automatically: %s",
                    offered,
                    __version__,
                    blocker,
                )
            return False
        failed = self._upgrade_failed_at
        if failed is not None and self.clock() - failed < UPGRADE_RETRY:
            return False
        log.info(
            "the portal offers backup-agent %s (this is %s): upgrading",
            offer.get("version"),
            __version__,
        )
        try:
            client = self.client if isinstance(self.client, PortalClient) else None
            result = upgrade.upgrade(self.config, automatic=True, client=client)
        except upgrade.UpgradeError as exc:
            self._upgrade_failed_at = self.clock()
            log.error("automatic upgrade failed: %s; trying again in %.0f minutes", exc, UPGRADE_RETRY / 60)
            return False
        except Exception:  # an upgrade gone wrong must never stop the agent polling
            self._upgrade_failed_at = self.clock()
            log.exception("automatic upgrade failed")
            return False
        if not result.replaced:
            self._upgrade_failed_at = self.clock()  # the portal's build is this one: ask again later
            return False
        self.exit_code = upgrade.RESTART_EXIT
        self.request_stop(
            f"upgraded to backup-agent {result.new}; exiting for the service manager to restart it"
        )
        return True

    def run_once(self) -> int:
        """Resend the spool, poll once, run what came, report. 0 if every report was acknowledged."""
        self.sweep()
        spool_empty = self.resend_spool()
        try:
            jobs, _ = self.poll()
        except (PortalError, PortalUnreachable) as exc:
            log.error("poll failed: %s", exc)
            return 1
        ids = [job_id_of(raw) for raw in jobs]
        for raw in jobs:
            self.start_job(raw)
        self.wait_for_jobs()
        all_acked = all(self._acknowledged.get(i, False) for i in ids if i is not None)
        return 0 if spool_empty and all_acked else 1

    def run_forever(self) -> int:
        """Poll until shutdown(); back off exponentially while the portal is unreachable."""
        failures = 0
        self.sweep()  # staging left by a crash or kill -9 of the previous run
        timer = threading.Thread(target=self._spool_timer, name="spool-timer", daemon=True)
        timer.start()
        while not self.stop_event.is_set():
            if not (self.cloned or self.unsupported):
                self.resend_spool()
            try:
                jobs, delay = self.poll()
                failures = 0
            except PortalUnreachable as exc:
                failures += 1
                delay = backoff_delay(failures)
                log.warning("portal unreachable (%s); next try in %.0fs", exc, delay)
            except PortalError as exc:
                failures += 1
                delay = backoff_delay(failures)
                if exc.status == 409 and exc.code == AGENT_CLONED:
                    delay = cloned_retry_delay()  # the error is logged by poll()
                elif exc.code == AGENT_UNSUPPORTED:
                    delay = unsupported_retry_delay()  # the error is logged by poll()
                elif exc.status == 401:
                    log.error("the portal rejected this agent's token (revoked?); re-enrol the agent")
                else:
                    log.warning("poll refused: %s; next try in %.0fs", exc, delay)
            else:
                for raw in jobs:
                    self.start_job(raw)
                if not jobs and self.upgrade_if_offered():
                    continue  # the loop ends: stop requested
            self._threads = [t for t in self._threads if t.is_alive()]
            self._acknowledged.clear()  # only run_once reads it; do not grow forever
            self.stop_event.wait(delay)
        log.info("%s, stopping: %d running job(s) will report", self.stop_reason, len(self.running()))
        self.shutdown()
        self.wait_for_jobs()
        timer.join(5)
        return self.exit_code
