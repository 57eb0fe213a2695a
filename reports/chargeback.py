"""Chargeback: what each cost centre pays for protection, application by application, client by client.

Definitions (the report prints them):

- **Protected size**: the front-end size (``size_bytes``) of the client's newest
  full backup taken before the month end and not deleted by then (an incremental's
  ``size_bytes`` is only what it read: what changed).
- **Stored GB-months**: for every backup held during the month, full or
  incremental, ``stored_size_bytes / 10^9 × seconds held in the month / seconds in
  the month``; a backup is held from ``taken_at`` until ``deleted_at`` (or the
  month end). An incremental stores what changed, so it costs less. **Of which
  incrementals**: the same sum over the incremental backups only (information: the
  amount is billed on the whole).
- **Price**: the client's policy's price per GB-month in effect each day
  (``PolicyPrice``). A month with a price change is cut at that day; each part
  is measured and billed on its own.
- **Amount** per client: ``Σ parts round(GB-months, 2) × price``, rounded to cents.
  Subtotals and totals add up the client amounts.
- **Backups**: recovery points taken in the month. **Restores**: restore jobs
  (restore tests excluded) that finished in the month, succeeded or failed.
- **Change**: the amount against last month's, computed the same way.

All of it is aggregated in the database: one grouped pass over the backups for
six months of usage (the trend), one for restores, one for the clients.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from django.db.models import Count, F, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce

from catalog.choices import BackupLevel, JobKind, JobState
from catalog.models import Backup, BackupClient, Job
from reports.base import CENT, GB, BuiltReport, cents, percent
from reports.periods import Month
from reports.prices import PriceBook, Slice
from reports.scope import Scope
from reports.sql import held_seconds

TREND_MONTHS = 6
#: How many of the largest changes the summary lists.
TOP_CHANGES = 10


@dataclass
class Figures:
    """What a client, an application, a cost centre or the company adds up to."""

    clients: int = 0
    protected_bytes: int = 0
    gb_months: Decimal = Decimal("0.00")
    incremental_gb_months: Decimal = Decimal("0.00")  # of gb_months
    backups: int = 0
    restores: int = 0
    amount: Decimal = Decimal("0.00")
    previous_amount: Decimal = Decimal("0.00")

    def add(self, other: Figures) -> None:
        self.clients += other.clients
        self.protected_bytes += other.protected_bytes
        self.gb_months += other.gb_months
        self.incremental_gb_months += other.incremental_gb_months
        self.backups += other.backups
        self.restores += other.restores
        self.amount += other.amount
        self.previous_amount += other.previous_amount

    @property
    def protected_gb(self) -> Decimal:
        return (Decimal(self.protected_bytes) / GB).quantize(CENT)

    @property
    def change(self) -> Decimal:
        return self.amount - self.previous_amount

    @property
    def change_pct(self) -> float | None:
        return percent(float(self.change), float(self.previous_amount))


@dataclass
class Line(Figures):
    """One client's bill."""

    client_id: int = 0
    client: str = ""
    hostname: str = ""
    application_id: int = 0
    application_slug: str = ""
    application_name: str = ""
    cost_center_id: int = 0
    cost_center_code: str = ""
    cost_center_name: str = ""
    policy: str = ""
    price: Decimal = Decimal("0")
    price_note: str = ""


@dataclass
class Group:
    """A cost centre or an application, with its subtotal."""

    code: str
    name: str
    totals: Figures = field(default_factory=Figures)
    children: list = field(default_factory=list)


@dataclass
class PriceChange:
    policy: str
    day: date
    old: Decimal
    new: Decimal


@dataclass
class ChargebackReport(BuiltReport):
    kind = "chargeback"
    title = "Chargeback"

    lines: list[Line] = field(default_factory=list)
    cost_centers: list[Group] = field(default_factory=list)
    totals: Figures = field(default_factory=Figures)
    trend: list[tuple[Month, Decimal]] = field(default_factory=list)
    price_changes: list[PriceChange] = field(default_factory=list)

    @property
    def applications(self) -> list[Group]:
        return [app for center in self.cost_centers for app in center.children]

    @property
    def top_changes(self) -> list[Line]:
        changed = [line for line in self.lines if line.change]
        return sorted(changed, key=lambda line: (-abs(line.change), line.client))[:TOP_CHANGES]

    CSV_HEADER = [
        "month", "cost_centre", "cost_centre_name", "application", "application_name", "client", "hostname",
        "policy", "price_per_gb_month", "price_note", "protected_gb", "stored_gb_months", "backups",
        "restores", "amount", "previous_month_amount", "change", "incremental_gb_months",
    ]  # fmt: skip

    def csv_rows(self):
        for line in self.lines:
            yield [
                str(self.month), line.cost_center_code, line.cost_center_name, line.application_slug,
                line.application_name, line.client, line.hostname, line.policy, line.price, line.price_note,
                line.protected_gb, line.gb_months, line.backups, line.restores, line.amount,
                line.previous_amount, line.change, line.incremental_gb_months,
            ]  # fmt: skip

    def summary(self) -> dict:
        return {
            "amount": str(self.totals.amount),
            "previous_amount": str(self.totals.previous_amount),
            "gb_months": str(self.totals.gb_months),
            "clients": self.totals.clients,
        }


def build(month: Month, scope: Scope, *, now=None) -> ChargebackReport:
    report = ChargebackReport(month=month, scope=scope, as_of=month.as_of(now))
    book = PriceBook.load()
    months = [month.shifted(n) for n in range(1 - TREND_MONTHS, 1)]
    slices = [piece for m in months for piece in book.slices(m, m.as_of(now))]
    usage = _usage(scope, slices, month, report.as_of)
    restores = _restores(scope, month, report.as_of)
    clients = _clients(scope, report.as_of)

    biller = Biller(slices, book)
    per_month: dict[Month, Decimal] = defaultdict(lambda: Decimal("0.00"))
    for client_id, client in clients.items():
        client_usage = usage.get(client_id)
        billed = biller.bill(client["policy_id"], client_usage["byte_seconds"]) if client_usage else {}
        for m, (_, amount) in billed.items():
            per_month[m] += amount
        line = _line(client, billed, client_usage, restores.get(client_id, 0), biller, month)
        if line.gb_months or line.backups or line.restores or line.previous_amount or line.amount:
            report.lines.append(line)
    report.trend = [(m, per_month[m]) for m in months]
    report.lines.sort(key=lambda line: (line.cost_center_code, line.application_name, line.client))
    _group(report)
    policies = {client["policy_id"]: client["policy__name"] for client in clients.values()}
    report.price_changes = [
        PriceChange(policies[policy_id], day, old, new)
        for policy_id, day, old, new in book.changes_within(month)
        if policy_id in policies
    ]
    return report


def _usage(scope: Scope, slices: list[Slice], month: Month, as_of) -> dict[int, dict]:
    """Per client: byte-seconds held in each slice, the backups taken in the month, and the
    byte-seconds the month's incrementals were held."""
    if not slices:
        return {}
    window_start, window_end = slices[0].start, slices[-1].end
    held = (
        Backup.objects.filter(scope.q("client__application"), taken_at__lt=window_end)
        .filter(Q(deleted_at__isnull=True) | Q(deleted_at__gt=window_start))
        .order_by()
        .values("client_id")
    )
    # FILTER keeps the arithmetic to the backups held in each slice: most rows touch one or two months.
    sums = {
        f"s{n}": Sum(
            held_seconds(piece.start, piece.end) * F("stored_size_bytes"),
            filter=Q(taken_at__lt=piece.end) & (Q(deleted_at__isnull=True) | Q(deleted_at__gt=piece.start)),
        )
        for n, piece in enumerate(slices)
    }
    taken = Count("pk", filter=Q(taken_at__gte=month.start, taken_at__lt=as_of))
    incremental = Sum(
        held_seconds(month.start, as_of) * F("stored_size_bytes"),
        filter=Q(level=BackupLevel.INCREMENTAL, taken_at__lt=as_of)
        & (Q(deleted_at__isnull=True) | Q(deleted_at__gt=month.start)),
    )
    result = {}
    for row in held.annotate(backups=taken, incremental=incremental, **sums):
        result[row["client_id"]] = {
            "backups": row["backups"],
            "byte_seconds": [row[f"s{n}"] or 0 for n in range(len(slices))],
            "incremental_byte_seconds": row["incremental"] or 0,
        }
    return result


def _restores(scope: Scope, month: Month, as_of) -> dict[int, int]:
    rows = (
        Job.objects.filter(
            scope.q("client__application"),
            kind=JobKind.RESTORE,
            state__in=(JobState.SUCCEEDED, JobState.FAILED),
            finished_at__gte=month.start,
            finished_at__lt=as_of,
        )
        .order_by()
        .values("client_id")
        .annotate(n=Count("pk"))
    )
    return {row["client_id"]: row["n"] for row in rows}


def _clients(scope: Scope, as_of) -> dict[int, dict]:
    newest = (
        Backup.objects.filter(client=OuterRef("pk"), taken_at__lt=as_of, level=BackupLevel.FULL)
        .filter(Q(deleted_at__isnull=True) | Q(deleted_at__gt=as_of))
        .order_by("-taken_at")
        .values("size_bytes")[:1]
    )
    rows = (
        BackupClient.objects.filter(scope.q("application"))
        .annotate(protected=Coalesce(Subquery(newest), 0))
        .order_by()
        .values(
            "pk", "name", "hostname", "policy_id", "policy__name", "protected",
            "application_id", "application__slug", "application__name",
            "application__cost_center_id", "application__cost_center__code", "application__cost_center__name",
        )
    )  # fmt: skip
    return {row["pk"]: row for row in rows}


class Biller:
    """Turns a client's byte-seconds per slice into GB-months and amounts per month."""

    def __init__(self, slices: list[Slice], book: PriceBook):
        self.slices = slices
        self.book = book
        self.divisors = [GB * Decimal(repr(piece.month.seconds)) for piece in slices]
        self._prices: dict[tuple[int, int], Decimal] = {}

    def price(self, policy_id: int, index: int) -> Decimal:
        key = (policy_id, index)
        if key not in self._prices:
            self._prices[key] = self.book.price_on(policy_id, self.slices[index].first_day)
        return self._prices[key]

    def bill(self, policy_id: int, byte_seconds: list) -> dict[Month, tuple[Decimal, Decimal]]:
        """{month: (GB-months, amount)}: each slice rounded to 0.01 GB-month and billed at its own price."""
        billed: dict[Month, tuple[Decimal, Decimal]] = {}
        for index, value in enumerate(byte_seconds):
            if not value:
                continue
            gb_months = (Decimal(repr(float(value))) / self.divisors[index]).quantize(CENT)
            month = self.slices[index].month
            gbm, amount = billed.get(month, (Decimal("0.00"), Decimal("0")))
            billed[month] = (gbm + gb_months, amount + gb_months * self.price(policy_id, index))
        return {month: (gbm, cents(amount)) for month, (gbm, amount) in billed.items()}


def _line(
    client: dict, billed: dict, usage: dict | None, restores: int, biller: Biller, month: Month
) -> Line:
    gb_months, amount = billed.get(month, (Decimal("0.00"), Decimal("0.00")))
    _, previous = billed.get(month.previous(), (None, Decimal("0.00")))
    prices = [
        (piece, biller.price(client["policy_id"], index))
        for index, piece in enumerate(biller.slices)
        if piece.month == month
    ]
    return Line(
        clients=1,
        protected_bytes=client["protected"],
        gb_months=gb_months,
        incremental_gb_months=_gb_months(usage["incremental_byte_seconds"] if usage else 0, month),
        backups=usage["backups"] if usage else 0,
        restores=restores,
        amount=amount,
        previous_amount=previous,
        client_id=client["pk"],
        client=client["name"],
        hostname=client["hostname"],
        application_id=client["application_id"],
        application_slug=client["application__slug"],
        application_name=client["application__name"],
        cost_center_id=client["application__cost_center_id"],
        cost_center_code=client["application__cost_center__code"],
        cost_center_name=client["application__cost_center__name"],
        policy=client["policy__name"],
        price=prices[-1][1] if prices else biller.book.price_on(client["policy_id"], month.last_day),
        price_note=_price_note(prices),
    )


def _gb_months(byte_seconds, month: Month) -> Decimal:
    return (Decimal(repr(float(byte_seconds))) / (GB * Decimal(repr(month.seconds)))).quantize(CENT)


def _price_note(prices: list[tuple[Slice, Decimal]]) -> str:
    """'0.0500 to 15 Oct, 0.0800 from 16 Oct' when the price changed during the month."""
    if len({price for _, price in prices}) < 2:
        return ""
    parts = []
    for piece, price in prices:
        parts.append(f"{price} {piece.first_day:%-d}–{piece.last_day:%-d %b}")
    return ", ".join(parts)


def _group(report: ChargebackReport) -> None:
    centers: dict[str, Group] = {}
    apps: dict[tuple[str, str], Group] = {}
    for line in report.lines:
        center = centers.get(line.cost_center_code)
        if center is None:
            center = centers[line.cost_center_code] = Group(line.cost_center_code, line.cost_center_name)
        app = apps.get((line.cost_center_code, line.application_slug))
        if app is None:
            app = apps[(line.cost_center_code, line.application_slug)] = Group(
                line.application_slug, line.application_name
            )
            center.children.append(app)
        app.children.append(line)
        app.totals.add(line)
        center.totals.add(line)
        report.totals.add(line)
    report.cost_centers = list(centers.values())
