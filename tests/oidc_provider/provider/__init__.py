"""A small OpenID Connect provider for the portal's tests (tests/identity/test_oidc*.py).

django-oauth-toolkit with OIDC on, PKCE required, RS256 ID tokens signed with the key the
test fixture generated. Its people are a JSON file the tests write and rewrite
(``OIDC_TEST_USERS``): ``{"alice": {"password": "…", "groups": [...], "amr": ["pwd", "mfa"],
"active": true, "email": "…"}}``, read again at every sign-in and every token, so a test
changes someone's groups, or disables them, by rewriting the file.
"""
