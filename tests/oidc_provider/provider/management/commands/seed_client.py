"""Register the portal as a confidential client: ``seed_client <client_id> <secret> <portal base URL>``."""

from django.core.management.base import BaseCommand
from oauth2_provider.models import Application


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("client_id")
        parser.add_argument("client_secret")
        parser.add_argument("portal_url")

    def handle(self, *args, client_id, client_secret, portal_url, **options):
        portal_url = portal_url.rstrip("/")
        Application.objects.filter(client_id=client_id).delete()
        Application.objects.create(
            name="Backup Portal",
            client_id=client_id,
            client_secret=client_secret,
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
            redirect_uris=f"{portal_url}/oidc/callback/",
            post_logout_redirect_uris=f"{portal_url}/accounts/login/",
            algorithm=Application.RS256_ALGORITHM,
            skip_authorization=True,
        )
