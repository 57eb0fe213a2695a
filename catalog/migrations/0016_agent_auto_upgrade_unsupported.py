"""Agents stay current (issue #18): the team's per-agent automatic upgrade switch, its audit entry, the
agent_unsupported alert (catalog/agent_versions.py, docs/agent.md "Upgrading")."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0015_backup_anomaly'),
    ]

    operations = [
        migrations.AddField(
            model_name='agent',
            name='auto_upgrade',
            field=models.BooleanField(default=False, help_text='Upgrade this agent to the portal\'s version between jobs, without asking its server\'s administrator (the backup team decides; docs/agent.md, "Upgrading").'),
        ),
        migrations.AlterField(
            model_name='agentevent',
            name='action',
            field=models.CharField(choices=[('registered', 'Host registered for an application'), ('shared', 'Host shared with another application'), ('unregistered', 'Host released (its request was withdrawn)'), ('token_issued', 'Enrolment token issued'), ('rekey_issued', 'Re-key token issued'), ('enrolled', 'Enrolled'), ('rekeyed', 'Re-keyed'), ('revoked', 'Revoked'), ('auto_upgrade', 'Automatic upgrade switched on or off')], max_length=16),
        ),
        migrations.AlterField(
            model_name='alert',
            name='kind',
            field=models.CharField(choices=[('job_failed', 'Job failed'), ('rpo_breached', 'RPO breached'), ('agent_silent', 'Agent silent'), ('storage_nearly_full', 'Storage nearly full'), ('restore_test_failed', 'Restore test failed'), ('restore_test_overdue', 'Restore test overdue'), ('agent_cloned', 'Agent token used by a second host'), ('anomaly_detected', 'Backup unlike its history (possible ransomware or mass deletion)'), ('storage_full_soon', 'Storage forecast to fill'), ('agent_unsupported', 'Agent too old for this portal')], max_length=24),
        ),
    ]
