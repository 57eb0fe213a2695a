"""Run a plugin's external tool: argv only, streamed I/O, bounded stderr, cancel, timeout.

Never a shell: argv lists go straight to exec, so a database name or a path
with "; rm -rf /" in it is one literal argument. Each tool runs in its own
session (process group) so a cancel also stops whatever it spawned.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence

from backup_agent import error_classes
from backup_agent.context import JobContext, Sink, Source
from backup_agent.errors import (
    AgentError,
    Cancelled,
    TimedOut,
    ToolFailed,
    ToolNotFound,
    tool_failure,
)

log = logging.getLogger(__name__)

CHUNK = 1 << 20
CAPTURE_LIMIT = 16 << 20  # captured output is for small query results only
TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
_STDERR_TAIL = 50


def find_program(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """Absolute path of `name` on the tool's PATH, or None."""
    path = (env if env is not None else os.environ).get("PATH", os.defpath)
    return shutil.which(name, path=path)


def run_tool(
    argv: Sequence[str],
    ctx: JobContext,
    *,
    stdout: Sink | None = None,
    stdin: Source | None = None,
    capture: bool = False,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> bytes:
    """Run argv to completion and return captured stdout (when `capture`).

    With `stdout`, the tool's output is streamed into the sink in chunks; with
    `stdin`, the source is streamed into the tool. Raises ToolNotFound,
    ToolFailed (non-zero exit, classed by its stderr), Cancelled or TimedOut.
    """
    tool = _Supervised(argv, ctx, env, timeout, stdin=stdin is not None, stdout=stdout is not None or capture)
    feeder = None
    if stdin is not None:
        feeder = threading.Thread(target=tool.feed, args=(stdin,), name=f"{tool.name}-stdin", daemon=True)
        feeder.start()
    captured = bytearray()
    try:
        if tool.proc.stdout is not None:
            while chunk := tool.proc.stdout.read1(CHUNK):  # type: ignore[attr-defined]
                if stdout is not None:
                    stdout.write(chunk)
                else:
                    captured += chunk
                    if len(captured) > CAPTURE_LIMIT:
                        raise AgentError(f"{tool.name} printed more than {CAPTURE_LIMIT} bytes")
        tool.proc.wait()
    except BaseException:
        # The sink failed (disk full, cancel) or we are interrupted: the tool
        # must not keep running unattended.
        tool.kill("error")
        raise
    finally:
        tool.stop(feeder)
    tool.raise_for_outcome()
    return bytes(captured)


class Session:
    """A long-lived tool spoken to line by line, e.g. psql holding a transaction open.

    Every `ask()` writes one command and reads one line of answer, so each
    command must print exactly one line (psql -q -A -t prints nothing for BEGIN:
    send it together with a query), and the tool must flush after each
    command (psql does). The watchdog still applies: a stuck answer is killed.
    """

    def __init__(
        self,
        argv: Sequence[str],
        ctx: JobContext,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        self._tool = _Supervised(argv, ctx, env, timeout, stdin=True, stdout=True)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ask(self, command: str) -> str:
        proc = self._tool.proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(command.encode("utf-8") + b"\n")
            proc.stdin.flush()
            line = proc.stdout.readline(CAPTURE_LIMIT)
        except BrokenPipeError:
            line = b""
        if not line:
            # The tool exited (an SQL error with ON_ERROR_STOP) or was killed.
            self.close()
            self._tool.raise_for_outcome()
            raise ToolFailed(f"{self._tool.name} ended without answering")
        return line.decode("utf-8").rstrip("\n")

    def close(self) -> None:
        proc = self._tool.proc
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()  # end of input: the tool exits on its own
        try:
            proc.wait(TERM_GRACE)
        except subprocess.TimeoutExpired:
            self._tool.kill("error")
        self._tool.stop(None)


class _Supervised:
    """One running tool: pumps its stderr into the log tail and kills it when it must stop."""

    def __init__(
        self,
        argv: Sequence[str],
        ctx: JobContext,
        env: Mapping[str, str] | None,
        timeout: float | None,
        *,
        stdin: bool,
        stdout: bool,
    ) -> None:
        self.name = os.path.basename(argv[0])
        self.ctx = ctx
        self.timeout = timeout if timeout is not None else ctx.tool_timeout
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        self.killed_for: str | None = None  # "cancel" | "timeout" | "error"
        self.feed_error: BaseException | None = None
        self._done = threading.Event()
        self._kill_lock = threading.Lock()
        env = env if env is not None else ctx.env
        program = find_program(argv[0], env)
        if program is None:
            raise ToolNotFound(argv[0])
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - an argv list, never a shell
                [program, *argv[1:]],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=dict(env),
                close_fds=True,
                # Own process group: a cancel reaches the tool's children too,
                # and no controlling terminal means no password prompt can hang us.
                start_new_session=True,
            )
        except PermissionError:
            raise AgentError(
                f"permission denied: cannot execute {program}", error_class=error_classes.PERMISSION_DENIED
            ) from None
        except FileNotFoundError:
            # Found on PATH a moment ago: gone since, or a script whose #! interpreter is missing.
            raise ToolNotFound(f"{program} (or the interpreter on its #! line)") from None
        self._threads = [
            threading.Thread(target=self._pump_stderr, name=f"{self.name}-stderr", daemon=True),
            threading.Thread(target=self._watch, name=f"{self.name}-watchdog", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self, feeder: threading.Thread | None) -> None:
        self._done.set()
        for t in [*self._threads, *([feeder] if feeder else [])]:
            t.join(TERM_GRACE)
            if t.is_alive():
                # A background child of the tool still holds a pipe open; the
                # job is over, so the whole group goes.
                self._signal_group(signal.SIGKILL)
                t.join()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def raise_for_outcome(self) -> None:
        if self.feed_error is not None:
            raise self.feed_error
        if self.killed_for == "cancel":
            raise Cancelled(self.ctx.cancel_reason)
        if self.killed_for == "timeout":
            raise TimedOut(f"{self.name} timed out after {self.timeout:.0f}s and was killed")
        if self.proc.returncode:
            raise tool_failure(self.name, self.proc.returncode, list(self.stderr_tail))

    def feed(self, source: Source) -> None:
        pipe = self.proc.stdin
        assert pipe is not None
        try:
            while data := source.read(CHUNK):
                pipe.write(data)
        except BrokenPipeError:
            return  # the tool stopped reading; its exit status tells why
        except BaseException as exc:
            # Kill before closing stdin: a closed stdin looks like a clean end of
            # input, and the tool would commit a half-restored database.
            self.feed_error = exc
            self.kill("error")
        finally:
            with contextlib.suppress(BrokenPipeError):
                pipe.close()

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        # readline with a limit: a tool printing one endless line must not grow memory.
        while raw := self.proc.stderr.readline(4096):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.stderr_tail.append(line)
            self.ctx.log.add(f"{self.name}: {line}")

    def _watch(self) -> None:
        deadline = time.monotonic() + self.timeout if self.timeout else None
        while not self._done.wait(0.2):
            if self.ctx.cancel.is_set():
                self.kill("cancel")
                return
            if deadline is not None and time.monotonic() > deadline:
                self.kill("timeout")
                return

    def kill(self, why: str) -> None:
        """SIGTERM the tool's process group, SIGKILL it if it lingers."""
        with self._kill_lock:
            if self.killed_for is not None or self.proc.poll() is not None:
                return
            self.killed_for = why
        log.warning("job %s: stopping %s (%s)", self.ctx.job_id, self.name, why)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self._signal_group(sig):
                return
            try:
                self.proc.wait(TERM_GRACE)
                return
            except subprocess.TimeoutExpired:
                continue

    def _signal_group(self, sig: int) -> bool:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True
