from tests import factories


def test_backup_factory_builds_a_consistent_recovery_point(db):
    backup = factories.BackupFactory()
    assert backup.job.client == backup.client
    assert backup.job.agent == backup.client.agent
    assert backup.client.agent.applications.filter(pk=backup.client.application_id).exists()
