"""Signing in with OpenID Connect (Entra ID, Okta, Keycloak, Google Workspace), and re-checking.

mozilla-django-oidc runs the authorization-code flow: ``state`` and ``nonce`` kept in the
session and checked at the callback, PKCE (S256) always on. What this module adds:

- Configuration from ``OIDC_*`` settings (portal/settings.py): the endpoints come from the
  issuer's discovery document, fetched at the first sign-in and kept ``DISCOVERY_TTL``
  seconds per process, unless set one by one. Nothing is fetched at start-up or for a local
  sign-in, so a provider that is down never stops the break-glass accounts.
- ID tokens verified here, not by the library: signature against the provider's JWKS with
  an asymmetric algorithm (``OIDC_SIGN_ALGORITHMS``), ``iss``, ``aud`` = our client id,
  ``exp`` (a minute of leeway), and the ``nonce`` of this sign-in.
- The account: the provider's ``iss`` and ``sub`` are who it is (``DirectoryAccount``);
  the user name comes from ``OIDC_USERNAME_CLAIM``. A user name that is already another
  account (a local break-glass one, an LDAP one, another subject's) is refused: a directory
  user never takes over a break-glass admin. E-mail addresses are never used to match.
- Groups mirrored by ``identity.groups.mirror`` from ``OIDC_GROUPS_CLAIM``, at every sign-in
  and every re-check.
- MFA: when the ID token's ``amr`` holds one of ``OIDC_MFA_AMR`` (or its ``acr`` is one of
  ``OIDC_MFA_ACR``) the session gets ``identity_mfa = "oidc-amr"`` (identity/mfa.py reads it).
- The refresh token and the ID token (for the logout hint) are kept in the session, which
  lives server-side in the database, and never logged.

Re-check (``recheck``, called by identity.middleware every PORTAL_DIRECTORY_RECHECK_SECONDS):
the session's refresh token is exchanged at the token endpoint; the new claims re-mirror the
groups. A refused refresh (``invalid_grant``: the user was disabled or removed, or their
provider session ended) deactivates the user and signs them out. The provider decides an OIDC
account's state: a later successful sign-in through it makes the account active again.
Limit: the refresh token lives in the session only, so a user who never comes back is not
re-checked; see docs/operations.md ("Identity providers") for what covers their API keys.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlencode

import jwt
import requests
from django.conf import settings
from django.contrib import auth, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from identity import groups, mfa
from identity.models import DirectoryAccount, Source

logger = logging.getLogger(__name__)

DISCOVERY_TTL = 3600
#: Session keys; MFA's are identity/mfa.py's (named here for the tests that read them).
MFA_SESSION_KEY = mfa.SESSION_KEY
MFA_BY_PROVIDER = mfa.OIDC_AMR
REFRESH_TOKEN_KEY = "oidc_refresh_token"  # noqa: S105 - a session key, not a secret
ID_TOKEN_KEY = "oidc_id_token"  # noqa: S105 - a session key, not a secret
#: Claims only the ID token may carry: the provider's userinfo answer never overrides them.
ID_TOKEN_ONLY = {"iss", "aud", "exp", "iat", "nbf", "nonce", "amr", "acr", "auth_time", "azp", "sid"}

_discovery: dict[str, tuple[float, dict]] = {}


class ProviderUnavailable(Exception):
    """The identity provider could not be asked (down, or its discovery document is wrong)."""


class SignInRefused(SuspiciousOperation):
    """The provider vouched for someone the portal will not sign in; the message is for them."""


def enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


def discovery() -> dict:
    """The issuer's ``.well-known/openid-configuration``, fetched once per ``DISCOVERY_TTL``."""
    issuer = settings.OIDC_ISSUER
    cached = _discovery.get(issuer)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    url = f"{issuer}/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(f"The provider's discovery document {url} cannot be read: {exc}") from exc
    if not isinstance(document, dict) or str(document.get("issuer", "")).rstrip("/") != issuer:
        raise ProviderUnavailable(f"{url} names another issuer than OIDC_ISSUER={issuer!r}.")
    _discovery[issuer] = (time.monotonic() + DISCOVERY_TTL, document)
    return document


#: Our setting that overrides a discovered endpoint → the discovery document's key.
ENDPOINTS = {
    "OIDC_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_USERINFO_ENDPOINT": "userinfo_endpoint",
    "OIDC_JWKS_URI": "jwks_uri",
    "OIDC_END_SESSION_ENDPOINT": "end_session_endpoint",
}
REQUIRED_ENDPOINTS = ("OIDC_AUTHORIZATION_ENDPOINT", "OIDC_TOKEN_ENDPOINT", "OIDC_JWKS_URI")


def endpoint(name: str) -> str:
    """An endpoint's URL: our explicit setting, else the discovery document's ('' if it has none)."""
    explicit = getattr(settings, name, "")
    if explicit:
        return explicit
    url = str(discovery().get(ENDPOINTS[name]) or "")
    if not url and name in REQUIRED_ENDPOINTS:
        raise ProviderUnavailable(f"The provider's discovery document has no {ENDPOINTS[name]}: set {name}.")
    return url


def expected_issuer() -> str:
    """The ``iss`` ID tokens must carry: the discovery document's, to the letter (a trailing slash counts)."""
    if all(getattr(settings, name) for name in REQUIRED_ENDPOINTS):
        return settings.OIDC_ISSUER  # configured by hand: maybe no discovery document at all
    return str(discovery()["issuer"])


#: mozilla-django-oidc's setting names, answered from ours.
_LIBRARY_SETTINGS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": lambda: endpoint("OIDC_AUTHORIZATION_ENDPOINT"),
    "OIDC_OP_TOKEN_ENDPOINT": lambda: endpoint("OIDC_TOKEN_ENDPOINT"),
    "OIDC_OP_USER_ENDPOINT": lambda: endpoint("OIDC_USERINFO_ENDPOINT"),
    "OIDC_OP_JWKS_ENDPOINT": lambda: endpoint("OIDC_JWKS_URI"),
    "OIDC_RP_CLIENT_ID": lambda: settings.OIDC_CLIENT_ID,
    "OIDC_RP_CLIENT_SECRET": lambda: settings.OIDC_CLIENT_SECRET,
    "OIDC_RP_SCOPES": lambda: settings.OIDC_SCOPES,
    "OIDC_RP_SIGN_ALGO": lambda: "RS256",  # unused: verify_token below accepts OIDC_SIGN_ALGORITHMS
    "OIDC_RP_IDP_SIGN_KEY": lambda: None,
    "OIDC_USE_PKCE": lambda: True,
    "OIDC_PKCE_CODE_CHALLENGE_METHOD": lambda: "S256",
    "OIDC_USE_NONCE": lambda: True,
    "OIDC_CREATE_USER": lambda: True,
    "OIDC_STORE_ACCESS_TOKEN": lambda: False,
    "OIDC_STORE_ID_TOKEN": lambda: False,
    "OIDC_TIMEOUT": lambda: settings.OIDC_TIMEOUT,
    "OIDC_VERIFY_SSL": lambda: True,
    "OIDC_ALLOW_UNSECURED_JWT": lambda: False,
    "OIDC_AUTHENTICATION_CALLBACK_URL": lambda: "oidc_authentication_callback",
    "LOGIN_REDIRECT_URL_FAILURE": lambda: reverse("login"),
}


def library_setting(attr: str, *default):
    if attr in _LIBRARY_SETTINGS:
        return _LIBRARY_SETTINGS[attr]()
    return import_from_settings(attr, *default)


def subject_of(claims: dict) -> str:
    """Who the provider says this is, for ``DirectoryAccount.subject``: issuer and subject."""
    return f"{claims['iss']}#{claims['sub']}"


def group_names(claims: dict) -> list[str]:
    raw = claims.get(settings.OIDC_GROUPS_CLAIM)
    names = claims.get("_claim_names") or {}
    if raw is None and settings.OIDC_GROUPS_CLAIM in names:
        # Entra ID leaves the groups out when a user is in more than 200 ("overage").
        raise SignInRefused(
            "Your account is in too many groups for the identity provider to list them. Ask the "
            "directory team to send only the groups assigned to the Backup Portal application."
        )
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    return [str(name) for name in raw]


def passed_mfa(claims: dict) -> bool:
    amr = claims.get("amr") or []
    if isinstance(amr, str):
        amr = [amr]
    if set(map(str, amr)) & set(settings.OIDC_MFA_AMR):
        return True
    return bool(settings.OIDC_MFA_ACR) and str(claims.get("acr", "")) in settings.OIDC_MFA_ACR


class OIDCBackend(OIDCAuthenticationBackend):
    """Signs in whoever the provider vouches for at the callback; nothing else.

    Django builds a backend for every ``authenticate()`` and every request's ``get_user()``:
    nothing here reads the provider until a callback needs it.
    """

    get_settings = staticmethod(library_setting)
    OIDC_RP_SIGN_ALGO = "RS256"
    OIDC_RP_IDP_SIGN_KEY = None

    def __init__(self, *args, **kwargs):
        self.UserModel = get_user_model()

    @property
    def OIDC_OP_TOKEN_ENDPOINT(self):  # noqa: N802 - the library's name
        return endpoint("OIDC_TOKEN_ENDPOINT")

    @property
    def OIDC_OP_USER_ENDPOINT(self):  # noqa: N802
        return endpoint("OIDC_USERINFO_ENDPOINT")

    @property
    def OIDC_OP_JWKS_ENDPOINT(self):  # noqa: N802
        return endpoint("OIDC_JWKS_URI")

    @property
    def OIDC_RP_CLIENT_ID(self):  # noqa: N802
        return settings.OIDC_CLIENT_ID

    @property
    def OIDC_RP_CLIENT_SECRET(self):  # noqa: N802
        return settings.OIDC_CLIENT_SECRET

    def get_user(self, user_id):
        # Django's, not the library's: a deactivated user's open sessions end at their next request.
        return ModelBackend.get_user(self, user_id)

    def authenticate(self, request, **kwargs):
        # Only our callback passes a nonce: a password sign-in never reaches the provider.
        if not enabled() or request is None or "nonce" not in kwargs:
            return None
        return super().authenticate(request, **kwargs)

    def verify_token(self, token, **kwargs):
        """The ID token's claims, or SuspiciousOperation: signature, issuer, audience, expiry, nonce."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise SuspiciousOperation(f"The ID token is not a signed JWT: {exc}") from exc
        algorithm = header.get("alg")
        if algorithm not in settings.OIDC_SIGN_ALGORITHMS:
            raise SuspiciousOperation(
                f"The ID token is signed with {algorithm!r}, not one of OIDC_SIGN_ALGORITHMS "
                f"{settings.OIDC_SIGN_ALGORITHMS}."
            )
        key = self.retrieve_matching_jwk(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=settings.OIDC_CLIENT_ID,
                issuer=expected_issuer(),
                leeway=60,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise SuspiciousOperation("The ID token has expired.") from exc
        except jwt.PyJWTError as exc:
            raise SuspiciousOperation(f"The ID token was refused: {exc}") from exc
        if "nonce" in kwargs and claims.get("nonce") != kwargs["nonce"]:
            raise SuspiciousOperation("The ID token's nonce is not this sign-in's.")
        return claims

    def claims(self, access_token: str | None, id_token: str, payload: dict) -> dict:
        """The ID token's claims with the userinfo endpoint's on top (never the ID-token-only ones)."""
        claims = dict(payload)
        if access_token and self.OIDC_OP_USER_ENDPOINT:
            info = self.get_userinfo(access_token, id_token, payload)
            if str(info.get("sub")) != str(payload["sub"]):
                raise SuspiciousOperation("The userinfo endpoint answered about another subject.")
            claims.update({key: value for key, value in info.items() if key not in ID_TOKEN_ONLY})
        return claims

    def get_token(self, payload):
        token_info = super().get_token(payload)
        self._token_info = token_info
        return token_info

    def get_or_create_user(self, access_token, id_token, payload):
        claims = self.claims(access_token, id_token, payload)
        try:
            user = self.user_for(claims)
            names = group_names(claims)
        except SignInRefused as exc:
            self.request.identity_oidc_refused = str(exc)
            raise
        groups.mirror(user, names, source=Source.OIDC, subject=subject_of(claims))
        # For the callback view to keep in the session once the user is signed in (login() may
        # start a new session): whether the provider did MFA, and what the re-check and logout need.
        token_info = getattr(self, "_token_info", {})
        self.request.identity_oidc = {
            "mfa": passed_mfa(payload),
            "refresh_token": token_info.get("refresh_token"),
            "id_token": token_info.get("id_token"),
        }
        return user

    def user_for(self, claims: dict):
        """The portal user the provider's claims stand for: found by subject, else created."""
        username = str(claims.get(settings.OIDC_USERNAME_CLAIM) or "").strip()
        if not username or len(username) > 150:
            raise SignInRefused(
                f"The identity provider sent no usable '{settings.OIDC_USERNAME_CLAIM}' claim "
                "(OIDC_USERNAME_CLAIM): ask the portal's administrators."
            )
        subject = subject_of(claims)
        User = self.UserModel  # noqa: N806
        with transaction.atomic():
            account = DirectoryAccount.objects.select_related("user").filter(
                source=Source.OIDC, subject=subject[:512]
            ).first()
            clash = User.objects.filter(username__iexact=username)
            if account is not None:
                user = account.user
                if user.username != username and not clash.exclude(pk=user.pk).exists():
                    user.username = username  # renamed in the directory
            else:
                if clash.exists():
                    # A local (break-glass) account, an LDAP one, or another person of the provider
                    # under a reused name: never handed to whoever the provider vouches for.
                    logger.warning("OIDC sign-in refused: user name %r is already another account", username)
                    raise SignInRefused(
                        f"The user name {username!r} belongs to another portal account. "
                        "Ask the portal's administrators."
                    )
                user = User.objects.create_user(username)  # no usable password
            user.email = str(claims.get("email") or user.email)[:254]
            user.first_name = str(claims.get("given_name") or user.first_name)[:150]
            user.last_name = str(claims.get("family_name") or user.last_name)[:150]
            # The provider decides whether a directory account may sign in (see the module's docstring).
            user.is_active = True
            user.save()
        return user


class AuthenticationRequestView(OIDCAuthenticationRequestView):
    """``/oidc/authenticate/``: off to the provider, with state, nonce and a PKCE challenge."""

    get_settings = staticmethod(library_setting)

    def __init__(self, *args, **kwargs):
        # Not the library's __init__: it would read the endpoint (and so the provider) for every view built.
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_CLIENT_ID

    def get(self, request):
        if not enabled():
            raise Http404("OpenID Connect sign-in is not configured.")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = endpoint("OIDC_AUTHORIZATION_ENDPOINT")
        except ProviderUnavailable as exc:
            logger.error("OIDC sign-in cannot start: %s", exc)
            return refused(request, "The identity provider cannot be reached. Try again in a few minutes.")
        return super().get(request)


def refused(request, message: str) -> HttpResponseRedirect:
    messages.error(request, f"Sign-in with {settings.OIDC_PROVIDER_NAME} failed: {message}")
    return redirect("login")


class AuthenticationCallbackView(OIDCAuthenticationCallbackView):
    """``/oidc/callback/``: the provider's answer; signed in, or back at the sign-in page saying why."""

    get_settings = staticmethod(library_setting)

    def get(self, request):
        if not enabled():
            raise Http404("OpenID Connect sign-in is not configured.")
        try:
            return super().get(request)
        except SuspiciousOperation as exc:  # a wrong state, a bad ID token
            logger.warning("OIDC sign-in refused: %s", exc)
            message = getattr(request, "identity_oidc_refused", None) or (
                "the answer from the identity provider could not be verified. Try again."
            )
            return self.refuse(message)
        except (requests.RequestException, ProviderUnavailable) as exc:
            # The token endpoint's refusal (a reused code, a PKCE mismatch) or the provider is down.
            logger.warning("OIDC sign-in failed at the provider: %s", exc)
            return self.refuse("the identity provider did not complete the sign-in. Try again.")

    def refuse(self, message: str):
        if self.request.user.is_authenticated:
            auth.logout(self.request)
        return refused(self.request, message)

    def login_failure(self):
        request = self.request
        if request.GET.get("error"):
            description = request.GET.get("error_description") or request.GET["error"]
            return self.refuse(f"the identity provider said: {description[:200]}")
        message = getattr(request, "identity_oidc_refused", None)
        if message is None and getattr(self, "user", None) is not None and not self.user.is_active:
            message = "your portal account is disabled."
        return self.refuse(message or "the sign-in was not completed. Try again.")

    def login_success(self):
        response = super().login_success()
        found = getattr(self.request, "identity_oidc", {})
        session = self.request.session
        if found.get("mfa"):
            mfa.mark_session(self.request, mfa.OIDC_AMR)
        else:
            # A fresh sign-in without MFA: whatever an earlier one in this session said no longer holds.
            mfa.clear_session(self.request)
        kept = {REFRESH_TOKEN_KEY: found.get("refresh_token"), ID_TOKEN_KEY: found.get("id_token")}
        for key, value in kept.items():
            if value:
                session[key] = value
            else:
                session.pop(key, None)
        return response


def end_session_url(request) -> str | None:
    """Where to send the browser so the provider signs them out too (None: no such endpoint)."""
    if not enabled() or ID_TOKEN_KEY not in request.session:
        return None
    try:
        url = endpoint("OIDC_END_SESSION_ENDPOINT")
    except ProviderUnavailable:
        return None
    if not url:
        return None
    query = urlencode(
        {
            "id_token_hint": request.session[ID_TOKEN_KEY],
            "client_id": settings.OIDC_CLIENT_ID,
            "post_logout_redirect_uri": request.build_absolute_uri(reverse("login")),
        }
    )
    return f"{url}{'&' if '?' in url else '?'}{query}"


def recheck(user, request=None) -> bool:
    """Read an OIDC user's groups again with their session's refresh token (identity.middleware.RECHECKS).

    True: the provider still vouches for them; their groups are mirrored again. False: the
    provider refused the refresh (``invalid_grant``: disabled, removed, or their provider session
    revoked); the middleware deactivates and signs them out. Raises ``DirectoryUnavailable`` when
    the provider cannot say (down, or an answer that does not verify): the middleware's grace.
    The provider issued no refresh token (``offline_access`` not granted): signed out here, not
    deactivated, so the next page goes through the provider again.
    """
    from identity.middleware import DirectoryUnavailable

    if request is None:
        raise DirectoryUnavailable("an OIDC user is re-checked with their session's refresh token only")
    session = request.session
    refresh_token = session.get(REFRESH_TOKEN_KEY)
    if not refresh_token:
        logger.info("OIDC re-check of %s: no refresh token in the session; signed out", user)
        auth.logout(request)
        return True
    account = DirectoryAccount.objects.get(user=user)
    backend = OIDCBackend()
    backend.request = request
    try:
        response = requests.post(
            endpoint("OIDC_TOKEN_ENDPOINT"),
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": settings.OIDC_CLIENT_ID,
                "client_secret": settings.OIDC_CLIENT_SECRET,
            },
            timeout=settings.OIDC_TIMEOUT,
        )
    except (requests.RequestException, ProviderUnavailable) as exc:
        raise DirectoryUnavailable(f"the provider's token endpoint cannot be reached: {exc}") from exc
    if response.status_code in (400, 401):
        logger.warning("OIDC re-check of %s: refresh refused (%s)", user, _error_code(response))
        return False
    if response.status_code != 200:
        raise DirectoryUnavailable(f"the provider's token endpoint answered {response.status_code}")
    try:
        token_info = response.json()
        id_token = token_info.get("id_token")
        payload = backend.verify_token(id_token) if id_token else _unverified_session_claims(session)
        if subject_of(payload) != account.subject:
            raise SuspiciousOperation("the refreshed ID token is about another subject")
        names = group_names(backend.claims(token_info.get("access_token"), id_token, payload))
    except (SuspiciousOperation, requests.RequestException, ProviderUnavailable, ValueError) as exc:
        raise DirectoryUnavailable(f"the provider's answer to the refresh was refused: {exc}") from exc
    groups.mirror(user, names, source=Source.OIDC, subject=account.subject)
    if token_info.get("refresh_token"):
        session[REFRESH_TOKEN_KEY] = token_info["refresh_token"]  # rotated: the old one is spent
    if id_token:
        session[ID_TOKEN_KEY] = id_token
    return True


def _error_code(response) -> str:
    try:
        return str(response.json().get("error", response.status_code))
    except ValueError:
        return str(response.status_code)


def _unverified_session_claims(session) -> dict:
    """The sign-in's ID token claims (verified then), when a refresh brings no new ID token."""
    return jwt.decode(session[ID_TOKEN_KEY], options={"verify_signature": False})
