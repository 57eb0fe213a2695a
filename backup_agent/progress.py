"""Progress reports: a background thread that tells the portal how far a job is.

Each report extends the job's lease; its answer may ask the job to stop
(`cancel: true`), and a 404/409 means the job is no longer ours. Either way
the job is cancelled through its context, and its tools are killed.
"""

from __future__ import annotations

import logging
import threading

from backup_agent.client import PortalClient
from backup_agent.context import JobContext
from backup_agent.errors import PortalError, PortalUnreachable

log = logging.getLogger(__name__)


class Progress:
    """Bytes done/total of one job. Written by the job thread, read by the reporter.

    Plain int attributes: a torn read is impossible under the GIL and a
    slightly stale number is harmless.
    """

    def __init__(self) -> None:
        self.bytes_done = 0
        self.bytes_total: int | None = None

    def phase(self, total: int | None) -> None:
        """Start counting a new pass (e.g. verify, then restore) from zero."""
        self.bytes_done = 0
        self.bytes_total = total

    def add(self, n: int) -> None:
        self.bytes_done += n


#: The progress intervals, in seconds, an agent accepts from the portal.
CADENCE = (1, 300)


class ProgressReporter:
    """Posts jobs/<id>/progress every `interval` seconds while the job runs."""

    def __init__(self, client: PortalClient, ctx: JobContext, progress: Progress, interval: float) -> None:
        self.client = client
        self.ctx = ctx
        self.progress = progress
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{ctx.job_id}", daemon=True)

    def __enter__(self) -> ProgressReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.post()

    def follow_cadence(self, report_after: object) -> None:
        """Report as often as the portal asks (a quarter of its lease), within ``CADENCE`` seconds.

        Bounded, so a wrong or hostile answer can neither flood the portal nor
        let the lease run out; older portals say nothing and the configured
        interval stays.
        """
        if type(report_after) in (int, float) and CADENCE[0] <= report_after <= CADENCE[1]:
            self.interval = float(report_after)

    def post(self) -> None:
        try:
            done, total = self.progress.bytes_done, self.progress.bytes_total
            answer = self.client.progress(self.ctx.job_id, done, total)
        except PortalUnreachable as exc:
            # Keep working: the report is spooled at the end and the lease
            # may still be valid when the portal comes back.
            log.warning("job %s: progress not sent: %s", self.ctx.job_id, exc)
            return
        except PortalError as exc:
            if exc.status in (404, 409):
                self.ctx.request_cancel(f"cancelled: lease lost ({exc.code})")
            else:
                log.warning("job %s: progress refused: %s", self.ctx.job_id, exc)
            return
        self.follow_cadence(answer.get("report_after"))
        if answer.get("cancel"):
            self.ctx.request_cancel("cancelled by the portal")
