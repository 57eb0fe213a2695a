"""Generated reports, and the price history chargeback bills from."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from catalog.models import Application, CostCenter, ProtectionPolicy
from catalog.tenancy import TenantQuerySet, owned_application_ids
from reports.choices import Paper, ReportFormat, ReportKind
from reports.periods import Month


class ReportQuerySet(TenantQuerySet):
    def owned_by(self, user):
        """An owner sees a report only if they own, now, every application whose data is in it.

        Those are its ``application`` and the ones recorded in ``applications`` when it
        was generated (a cost centre's applications at that moment). A cost centre's
        report that records none (made before they were recorded) is the backup team's,
        and so are company-wide reports, which name no scope. One query: the ownership
        test is a subquery, so no report is repeated.
        """
        owned = owned_application_ids(user)
        recorded = ReportApplication.objects.filter(report=OuterRef("pk"))
        return self.filter(
            Q(application__isnull=True) | Q(application__in=owned),
            Q(application__isnull=False) | (Q(cost_center__isnull=False) & Exists(recorded)),
            ~Exists(recorded.exclude(application__in=owned)),
        )

    def for_key(self, *, kind: str, month: Month, fmt: str, cost_center=None, application=None):
        return self.filter(
            kind=kind, month=month.first_day, format=fmt, cost_center=cost_center, application=application
        )


def report_upload_to(report: Report, filename: str) -> str:
    return f"reports/{report.month:%Y-%m}/{filename}"


class Report(models.Model):
    """One generated PDF or CSV: a kind, a month, a scope (company, cost centre or application).

    There is one row per (kind, month, scope, format): generating it again replaces the file.
    """

    kind = models.CharField(max_length=16, choices=ReportKind)
    month = models.DateField(help_text="The first day of the month reported on.")
    cost_center = models.ForeignKey(
        CostCenter, on_delete=models.PROTECT, related_name="reports", null=True, blank=True
    )
    application = models.ForeignKey(
        Application, on_delete=models.PROTECT, related_name="reports", null=True, blank=True
    )
    applications = models.ManyToManyField(
        Application,
        through="ReportApplication",
        related_name="covering_reports",
        blank=True,
        help_text="The applications whose data it holds, recorded when it was generated: "
        "an owner sees it only if they own every one.",
    )
    format = models.CharField(max_length=8, choices=ReportFormat)
    paper = models.CharField(max_length=8, choices=Paper, blank=True)
    file = models.FileField(upload_to=report_upload_to, max_length=300)
    size_bytes = models.PositiveBigIntegerField(default=0)
    pages = models.PositiveIntegerField(null=True, blank=True)
    summary = models.JSONField(
        default=dict, blank=True, help_text="The headline figures, for lists and mail."
    )
    generated_at = models.DateTimeField(default=timezone.now)
    generated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        related_name="+",
        null=True,
        blank=True,
        help_text="Empty when the monthly run made it.",
    )
    emailed_to = models.CharField(max_length=254, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    objects = ReportQuerySet.as_manager()

    class Meta:
        ordering = ["-month", "kind", "cost_center__code", "application__slug", "format"]
        constraints = [
            models.CheckConstraint(
                condition=Q(cost_center__isnull=True) | Q(application__isnull=True),
                name="report_one_scope",
            ),
            # One row per (kind, month, scope, format): the three scopes, as NULLs are distinct.
            models.UniqueConstraint(
                fields=["kind", "month", "format"],
                condition=Q(cost_center__isnull=True, application__isnull=True),
                name="report_unique_company",
            ),
            models.UniqueConstraint(
                fields=["kind", "month", "cost_center", "format"],
                condition=Q(cost_center__isnull=False),
                name="report_unique_cost_center",
            ),
            models.UniqueConstraint(
                fields=["kind", "month", "application", "format"],
                condition=Q(application__isnull=False),
                name="report_unique_application",
            ),
        ]
        indexes = [
            # The reports page: newest month first.
            models.Index(fields=["-month", "kind"], name="report_month_idx"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.get_kind_display()} {self.month:%Y-%m} · {self.scope_label} ({self.get_format_display()})"
        )

    def get_absolute_url(self) -> str:
        return reverse("reports:download", args=[self.pk])

    @property
    def period(self) -> Month:
        return Month(self.month.year, self.month.month)

    @property
    def scope_label(self) -> str:
        if self.cost_center_id:
            return f"{self.cost_center.code} — {self.cost_center.name}"
        if self.application_id:
            return self.application.name
        return "Company-wide"

    @property
    def download_name(self) -> str:
        if self.cost_center_id:
            scope = self.cost_center.code
        elif self.application_id:
            scope = self.application.slug
        else:
            scope = "company"
        return f"{self.kind}-{self.month:%Y-%m}-{scope}.{self.format}"


class ReportApplication(models.Model):
    """One application a report covers, as it was when the report was generated.

    PROTECT, like ``Report.application``: an application that vanished from the list
    would let owners of the others read its figures.
    """

    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="coverage")
    application = models.ForeignKey(Application, on_delete=models.PROTECT, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["report", "application"], name="reportapplication_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.report_id} covers {self.application_id}"


class PolicyPriceQuerySet(TenantQuerySet):
    """Prices are the backup team's to set; owners read them on the policies themselves."""


class PolicyPrice(models.Model):
    """A policy's price per GB-month from a day on; chargeback bills each day at the price in effect.

    Before a policy's first row, its ``price_per_gb_month`` applies. Changing that
    field records the change here (``reports.receivers``); a change announced for
    a later date is a row added here in advance.
    """

    policy = models.ForeignKey(ProtectionPolicy, on_delete=models.PROTECT, related_name="price_history")
    effective_from = models.DateField(help_text="The price applies from 00:00 on this day.")
    price_per_gb_month = models.DecimalField(max_digits=10, decimal_places=4)
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = PolicyPriceQuerySet.as_manager()

    class Meta:
        ordering = ["policy__name", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "effective_from"], name="policyprice_one_per_day"),
            models.CheckConstraint(condition=Q(price_per_gb_month__gte=0), name="policyprice_price_gte_0"),
        ]

    def __str__(self) -> str:
        return f"{self.policy}: {self.price_per_gb_month} from {self.effective_from}"
