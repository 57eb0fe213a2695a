"""Anomaly check fields on backups (catalog/anomaly.py, docs/anomalies.md).

Adding columns with a default makes SQLite rebuild ``catalog_backup``, which drops its chain
triggers (0013): they are created again after the rebuild, and on the way back too.
"""

import importlib

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

_triggers = importlib.import_module("catalog.migrations.0013_backup_chain_triggers")


def _sqlite_triggers_again(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return  # PostgreSQL adds and drops columns in place: its triggers stay
    for statement in _triggers.SQLITE_DROP + _triggers.SQLITE_CREATE:
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0014_alert_kinds_anomaly_capacity'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, _sqlite_triggers_again, elidable=False),
        migrations.AddField(
            model_name='backup',
            name='anomaly',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name='backup',
            name='anomaly_acknowledged_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='backup',
            name='anomaly_acknowledged_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='backup',
            name='anomaly_acknowledged_note',
            field=models.CharField(blank=True, max_length=500),
        ),
        migrations.AddField(
            model_name='backup',
            name='anomaly_checked_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='backup',
            name='files_changed',
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='backup',
            name='files_deleted',
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='backup',
            name='files_new',
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name='backup',
            index=models.Index(condition=models.Q(('anomaly_checked_at__isnull', True)), fields=['taken_at'], name='backup_anomaly_unchecked_idx'),
        ),
        migrations.AddIndex(
            model_name='backup',
            index=models.Index(condition=models.Q(('anomaly__has_key', 'rules'), ('anomaly_acknowledged_at__isnull', True)), fields=['client', '-taken_at'], name='backup_suspicious_idx'),
        ),
        migrations.RunPython(_sqlite_triggers_again, migrations.RunPython.noop, elidable=False),
    ]
