"""Claims from the people file (`groups`, `amr` beside the standard ones); no refresh once inactive."""

from oauth2_provider.oauth2_validators import OAuth2Validator
from provider.people import person


class Validator(OAuth2Validator):
    oidc_claim_scope = None  # every claim below, whatever the scopes

    def get_additional_claims(self, request):
        found = person(request.user.username) or {}
        return {
            "preferred_username": request.user.username,
            "email": found.get("email", f"{request.user.username}@example.com"),
            "given_name": found.get("given_name", request.user.username.title()),
            "family_name": found.get("family_name", "Tester"),
            "groups": found.get("groups", []),
            "amr": found.get("amr", ["pwd"]),
        }

    def validate_refresh_token(self, refresh_token, client, request, *args, **kwargs):
        if not super().validate_refresh_token(refresh_token, client, request, *args, **kwargs):
            return False
        found = person(request.user.username)
        return bool(found and found.get("active", True))
