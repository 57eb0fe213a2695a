"""What a report covers: the whole company, one cost centre, or one application."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q

from catalog.models import Application, CostCenter


@dataclass(frozen=True)
class Scope:
    """At most one of ``cost_center`` and ``application``; neither means company-wide."""

    cost_center: CostCenter | None = None
    application: Application | None = None

    def __post_init__(self) -> None:
        if self.cost_center is not None and self.application is not None:
            raise ValueError("a report covers a cost centre or an application, not both")

    @classmethod
    def of(cls, *, cost_center=None, application=None) -> Scope:
        """Accepts model instances, a cost centre code or an application slug."""
        if isinstance(cost_center, str):
            cost_center = CostCenter.objects.get(code=cost_center)
        if isinstance(application, str):
            application = Application.objects.select_related("cost_center").get(slug=application)
        return cls(cost_center=cost_center, application=application)

    @property
    def is_company(self) -> bool:
        return self.cost_center is None and self.application is None

    @property
    def label(self) -> str:
        if self.cost_center is not None:
            return f"Cost centre {self.cost_center.code} — {self.cost_center.name}"
        if self.application is not None:
            return f"Application {self.application.name}"
        return "Company-wide"

    @property
    def slug(self) -> str:
        """For file names: ``company``, ``cc-CC-100``, ``app-orders``."""
        if self.cost_center is not None:
            return f"cc-{self.cost_center.code}"
        if self.application is not None:
            return f"app-{self.application.slug}"
        return "company"

    def application_ids(self) -> set[int]:
        """The applications a report of this scope holds the data of, as the catalog stands now.

        Empty for company-wide: those reports are the backup team's whatever they cover.
        """
        if self.cost_center is not None:
            return set(Application.objects.filter(cost_center=self.cost_center).values_list("pk", flat=True))
        if self.application is not None:
            return {self.application.pk}
        return set()

    def q(self, application_path: str) -> Q:
        """A filter for rows whose application is at ``application_path`` (e.g. ``client__application``)."""
        if self.cost_center is not None:
            return Q(**{f"{application_path}__cost_center": self.cost_center})
        if self.application is not None:
            return Q(**{application_path: self.application})
        return Q()
