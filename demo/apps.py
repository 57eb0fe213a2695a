from django.apps import AppConfig


class DemoConfig(AppConfig):
    """``make demo``'s commands and data: above every domain app, which none of them imports."""

    name = "demo"
    verbose_name = "Demo"
