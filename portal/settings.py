"""Settings for Backup Portal, read from the environment (see README, "Configuration").

Defaults suit the embedded single-machine set-up (SQLite + django-q2). With
``DEBUG`` off the process refuses to start without a real ``SECRET_KEY`` and
turns on every protection ``manage.py check --deploy`` asks for.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from portal import env
from portal.env import ConfigError

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.get_str("PORTAL_VAR_DIR") or BASE_DIR / "var")

DEBUG = env.get_bool("DEBUG", False)

_DEV_SECRET_KEY = "django-insecure-dev-only-key-never-use-this-in-production-0123456789"  # noqa: S105 - refused unless DEBUG
SECRET_KEY = env.get_str("SECRET_KEY") or ""
if not DEBUG and SECRET_KEY in ("", _DEV_SECRET_KEY):
    # Every entry point (gunicorn, manage.py, celery) reads these settings: none of them
    # falls back to the public development key unless DEBUG=true says so.
    raise ConfigError(
        ("SECRET_KEY is not set." if not SECRET_KEY else "SECRET_KEY is the public development key.")
        + " For production set SECRET_KEY (or SECRET_KEY_FILE) to 50+ random characters;"
        " for development set DEBUG=true."
    )
SECRET_KEY = SECRET_KEY or _DEV_SECRET_KEY

ALLOWED_HOSTS = env.get_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.get_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "rest_framework",
    "django_filters",
    "django_tables2",
    "django_q",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "core",
    "identity",
    "catalog",
    "requests_app",
    "reports",
    "demo",
]

MIDDLEWARE = [
    # First, so it ticks after every other middleware has answered: the portal's own CPU time
    # (core.usage), one clock read per request and one UPDATE per process at most once a minute.
    "core.middleware.UsageMeterMiddleware",
    # Second, so it times everything below it: the request latency histogram of /metrics (portal.metrics).
    "portal.metrics.latency.LatencyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # A directory user's groups and account read again every PORTAL_DIRECTORY_RECHECK_SECONDS.
    "identity.middleware.DirectoryRecheckMiddleware",
    # request.user.is_verified(): the TOTP device this session verified (identity.mfa).
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into portal.auth.lockout_response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
DATABASE_URL = env.get_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"
DATABASES = {"default": env.parse_database_url(DATABASE_URL, base_dir=BASE_DIR)}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    if DATABASES["default"]["NAME"] != ":memory:":
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The web server, the worker and agents reporting all write at once. WAL
    # lets readers run beside the writer; IMMEDIATE takes the write lock at
    # BEGIN, so a transaction waits (busy timeout) instead of failing with
    # "database is locked" when it upgrades from read to write half-way.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": env.get_int("SQLITE_BUSY_TIMEOUT", 20, minimum=1),
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.get_int("DB_CONN_MAX_AGE", 60, minimum=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# PostgreSQL: the agents' token lookup is prepared once per connection (catalog/compiled.py).
# false behind a pooler in transaction mode (PgBouncer), where a session's statements do not follow it.
DB_PREPARED_STATEMENTS = env.get_bool("DB_PREPARED_STATEMENTS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth -------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out (user name, address) before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    # ModelBackend, refusing every password when PORTAL_LOCAL_LOGIN=false.
    "portal.auth.LocalPasswordBackend",
    # The OpenID Connect callback only (identity/oidc.py); off while OIDC_ISSUER is empty.
    "identity.oidc.OIDCBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

# How many proxies (nginx, a load balancer) stand between clients and gunicorn. Each
# appends the address it saw to X-Forwarded-For, so the client is the NUM_PROXIES-th
# entry from the right. 0: X-Forwarded-For is ignored and REMOTE_ADDR is the client.
# One number for every place that needs the client's address: sign-in lockout (below)
# and the REST framework's throttles (REST_FRAMEWORK["NUM_PROXIES"]).
NUM_PROXIES = env.get_int("NUM_PROXIES", 0, minimum=0)

# Sign-in lockout (django-axes, see portal/auth.py). Failures are counted per pair of
# user name and client address: guessing at one account from one address locks that
# pair only, so neither many names tried from a shared address (everyone behind one
# proxy) nor one name tried from elsewhere locks anybody else out.
AXES_ENABLED = True
# --- The company directory (identity/; docs/operations.md, "Identity providers") ----------
# Directory group name → portal group name (e.g. "backup-ops=backup-admins"): everything else
# is mirrored under its own name, limited to PORTAL_DIRECTORY_GROUPS (glob patterns) if set.
PORTAL_DIRECTORY_GROUP_MAP = env.get_map("PORTAL_DIRECTORY_GROUP_MAP")
PORTAL_DIRECTORY_GROUPS = env.get_list("PORTAL_DIRECTORY_GROUPS", [])
# A directory user's groups and account state are read again at their first request this
# long after the last read: a user removed from a group loses its access within it.
PORTAL_DIRECTORY_RECHECK_SECONDS = env.get_int("PORTAL_DIRECTORY_RECHECK_SECONDS", 300, minimum=0)
# --- LDAP / Active Directory sign-in (identity/ldap.py; docs/operations.md, "Identity providers") -----
# LDAP_SERVER_URI empty: LDAP sign-in off. Set: the sign-in form checks a name that is not a local
# break-glass account against the directory (ldap:// with LDAP_START_TLS=true, or ldaps://).
LDAP_SERVER_URI = (env.get_str("LDAP_SERVER_URI") or "").strip()
# The portal's read-only service account, which finds users and reads their groups.
LDAP_BIND_DN = env.get_str("LDAP_BIND_DN") or ""
LDAP_BIND_PASSWORD = env.get_str("LDAP_BIND_PASSWORD") or ""
LDAP_USER_SEARCH_BASE = env.get_str("LDAP_USER_SEARCH_BASE") or ""
# %(user)s is the name typed on the sign-in form (escaped). Active Directory: (sAMAccountName=%(user)s).
LDAP_USER_FILTER = env.get_str("LDAP_USER_FILTER") or "(uid=%(user)s)"
# Empty: no groups are read (and the directory's groups are taken away at sign-in).
LDAP_GROUP_SEARCH_BASE = env.get_str("LDAP_GROUP_SEARCH_BASE") or ""
LDAP_GROUP_TYPE = env.get_choice(
    "LDAP_GROUP_TYPE",
    "groupOfNames",
    ("groupOfNames", "nestedGroupOfNames", "posixGroup", "activeDirectory", "nestedActiveDirectory"),
)
LDAP_START_TLS = env.get_bool("LDAP_START_TLS", False)
LDAP_CA_FILE = env.get_str("LDAP_CA_FILE") or ""  # PEM; empty: the system's trusted CAs
# A filter that matches disabled accounts: they cannot sign in and are deactivated at the next
# re-check. Unset: Active Directory's "account disabled" bit for the AD group types, else OpenLDAP
# ppolicy's administrative lock. Set to empty: no account is ever treated as disabled.
_AD_DISABLED = "(userAccountControl:1.2.840.113556.1.4.803:=2)"
LDAP_DISABLED_FILTER = env.get_str(
    "LDAP_DISABLED_FILTER",
    _AD_DISABLED if LDAP_GROUP_TYPE.endswith("ctiveDirectory") else "(pwdAccountLockedTime=000001010000Z)",
).strip()
LDAP_ATTR_FIRST_NAME = env.get_str("LDAP_ATTR_FIRST_NAME") or "givenName"
LDAP_ATTR_LAST_NAME = env.get_str("LDAP_ATTR_LAST_NAME") or "sn"
LDAP_ATTR_EMAIL = env.get_str("LDAP_ATTR_EMAIL") or "mail"
# Seconds to connect, and for each operation: a directory that does not answer must not hold a
# sign-in (or, at a re-check, a page) for long.
LDAP_NETWORK_TIMEOUT = env.get_int("LDAP_NETWORK_TIMEOUT", 3, minimum=1)
LDAP_TIMEOUT = env.get_int("LDAP_TIMEOUT", 10, minimum=1)
if LDAP_SERVER_URI:
    if not all(re.match(r"^ldaps?://", uri) for uri in LDAP_SERVER_URI.split()):
        raise ConfigError(f"LDAP_SERVER_URI={LDAP_SERVER_URI!r}: each must start with ldap:// or ldaps://")
    if not LDAP_USER_SEARCH_BASE:
        raise ConfigError("LDAP_SERVER_URI is set: set LDAP_USER_SEARCH_BASE (where users are found) too.")
    if "%(user)s" not in LDAP_USER_FILTER:
        raise ConfigError(f"LDAP_USER_FILTER={LDAP_USER_FILTER!r} must contain %(user)s")
    # After the local accounts: a break-glass account never depends on the directory.
    AUTHENTICATION_BACKENDS.append("identity.ldap.LDAPBackend")
# --- OpenID Connect sign-in (identity/oidc.py; docs/operations.md, "Identity providers") ----------
# OIDC_ISSUER empty: no "Sign in with …" button. The endpoints come from the issuer's discovery
# document (read at the first sign-in, kept an hour) unless set here one by one.
OIDC_ISSUER = (env.get_str("OIDC_ISSUER") or "").rstrip("/")
OIDC_CLIENT_ID = env.get_str("OIDC_CLIENT_ID") or ""
OIDC_CLIENT_SECRET = env.get_str("OIDC_CLIENT_SECRET") or ""
if OIDC_ISSUER and not (OIDC_CLIENT_ID and OIDC_CLIENT_SECRET):
    raise ConfigError("OIDC_ISSUER is set: set OIDC_CLIENT_ID and OIDC_CLIENT_SECRET (or *_FILE) too.")
OIDC_AUTHORIZATION_ENDPOINT = env.get_str("OIDC_AUTHORIZATION_ENDPOINT") or ""
OIDC_TOKEN_ENDPOINT = env.get_str("OIDC_TOKEN_ENDPOINT") or ""
OIDC_USERINFO_ENDPOINT = env.get_str("OIDC_USERINFO_ENDPOINT") or ""
OIDC_JWKS_URI = env.get_str("OIDC_JWKS_URI") or ""
OIDC_END_SESSION_ENDPOINT = env.get_str("OIDC_END_SESSION_ENDPOINT") or ""
OIDC_SCOPES = env.get_str("OIDC_SCOPES") or "openid email profile"
if OIDC_ISSUER and "openid" not in OIDC_SCOPES.split():
    raise ConfigError(f"OIDC_SCOPES={OIDC_SCOPES!r} must include 'openid'.")
OIDC_GROUPS_CLAIM = env.get_str("OIDC_GROUPS_CLAIM") or "groups"
OIDC_USERNAME_CLAIM = env.get_str("OIDC_USERNAME_CLAIM") or "preferred_username"
OIDC_PROVIDER_NAME = env.get_str("OIDC_PROVIDER_NAME") or "your company account"
# ID token signatures accepted (asymmetric only: the key comes from the provider's JWKS).
OIDC_SIGN_ALGORITHMS = env.get_list("OIDC_SIGN_ALGORITHMS", ["RS256", "ES256"])
if not set(OIDC_SIGN_ALGORITHMS) <= {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"}:
    raise ConfigError(f"OIDC_SIGN_ALGORITHMS={OIDC_SIGN_ALGORITHMS!r}: RS*, PS* or ES* only.")
# The ID token's amr values, or acr values, that mean the person passed MFA at the provider.
OIDC_MFA_AMR = env.get_list("OIDC_MFA_AMR", ["mfa", "otp", "hwk", "swk", "fpt", "sc"])
OIDC_MFA_ACR = env.get_list("OIDC_MFA_ACR", [])
OIDC_TIMEOUT = env.get_int("OIDC_TIMEOUT", 10, minimum=1)
# The local sign-in form (break-glass and demo accounts). false: no password sign-in through the
# web at all, the admin's included; break glass by setting it back to true (docs/operations.md).
PORTAL_LOCAL_LOGIN = env.get_bool("PORTAL_LOCAL_LOGIN", True)
# --- Multi-factor authentication for four-eyes actions (identity/mfa.py; docs/security.md) --------
# Approving, rejecting and giving a host to an application need a session that passed MFA (the
# IdP's amr/acr, or a TOTP code at /account/mfa/), or an integration API key. false: as before MFA.
PORTAL_MFA_FOR_APPROVALS = env.get_bool("PORTAL_MFA_FOR_APPROVALS", True)
# The issuer shown in authenticator apps next to the account name.
OTP_TOTP_ISSUER = env.get_str("PORTAL_MFA_ISSUER", "Backup Portal")
# django-otp's own admin would show every device's secret and QR code: requests_app/admin.py replaces it.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

AXES_FAILURE_LIMIT = env.get_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env.get_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# The address as the REST framework's throttles see it (NUM_PROXIES), not django-ipware's
# guess: see portal.auth.client_ip.
AXES_CLIENT_IP_CALLABLE = "portal.auth.client_ip"
AXES_LOCKOUT_CALLABLE = "portal.auth.lockout_response"
# The sign-in page says "wait N minutes": each attempt during the lock starts the N again.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = True
AXES_RESET_ON_SUCCESS = True  # a typo or two before the right password is forgotten
AXES_DISABLE_ACCESS_LOG = True  # failures only: no ever-growing table of every sign-in
AXES_VERBOSE = False  # no banner on every manage.py command; failures are still logged

# --- I18n / time ------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env.get_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files (served by whitenoise, never from a CDN) -------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env.get_str("STATIC_ROOT") or VAR_DIR / "static")
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
MEDIA_ROOT = Path(env.get_str("MEDIA_ROOT") or VAR_DIR / "media")
MEDIA_URL = "media/"

# --- Backup Portal ----------------------------------------------------------
# Where the demo's filesystem storage target lives; real targets are mounted on the agents.
PORTAL_STORAGE_ROOT = Path(env.get_str("PORTAL_STORAGE_ROOT") or VAR_DIR / "storage")
# The agent's packages the portal serves at /agent/, built from its own backup_agent/ (docs/agent.md).
PORTAL_AGENT_DIST_DIR = Path(env.get_str("PORTAL_AGENT_DIST_DIR") or VAR_DIR / "agent")
# Recovery points' file lists (one compressed file each, uploaded by the agents).
PORTAL_INDEX_ROOT = Path(env.get_str("PORTAL_INDEX_ROOT") or VAR_DIR / "indexes")
# The largest file list an agent may upload (a million entries take about 15 MB).
PORTAL_INDEX_MAX_MB = env.get_int("PORTAL_INDEX_MAX_MB", 1024, minimum=1)
PORTAL_BACKUP_TEAM_GROUP = "backup-admins"
# How the portal is reached from outside, for links in e-mails.
PORTAL_BASE_URL = (env.get_str("PORTAL_BASE_URL") or "http://127.0.0.1:8000").rstrip("/")
PORTAL_BACKUP_TEAM_EMAIL = env.get_str("PORTAL_BACKUP_TEAM_EMAIL", "backup-team@localhost")
# /metrics (Prometheus): a scraper presents this bearer token, or comes from one of these
# addresses/networks (CIDR). Neither set: /metrics answers 404 to everyone (closed by default).
PORTAL_METRICS_TOKEN = env.get_str("PORTAL_METRICS_TOKEN") or ""
PORTAL_METRICS_ALLOW = env.get_list("PORTAL_METRICS_ALLOW", [])
# A storage target forecast to fill within this many days raises an alert (order capacity in time).
PORTAL_CAPACITY_ALERT_DAYS = env.get_int("PORTAL_CAPACITY_ALERT_DAYS", 60, minimum=1)
# Lets notification channels (Slack, Teams) call loopback/private addresses: development, a local receiver.
PORTAL_WEBHOOK_ALLOW_PRIVATE = env.get_bool("PORTAL_WEBHOOK_ALLOW_PRIVATE", False)
# An agent that has not polled for this long is "silent" (6 poll intervals at the default 30 s).
PORTAL_AGENT_SILENT_AFTER = env.get_int("PORTAL_AGENT_SILENT_AFTER", 180, minimum=30)
# How often agents poll, and how long a claimed job stays theirs without a progress report.
PORTAL_AGENT_POLL_SECONDS = env.get_int("PORTAL_AGENT_POLL_SECONDS", 30, minimum=1)
# A poll that changes nothing records the agent's last poll only when the recorded one is this
# old, so an idle poll writes nothing. Unset: derived (catalog.models.agent_heartbeat_period,
# 75 s with the defaults). At most SILENT_AFTER − POLL_SECONDS, or agents polling on time
# would be flagged silent.
PORTAL_AGENT_HEARTBEAT_SECONDS = env.get_int("PORTAL_AGENT_HEARTBEAT_SECONDS", None, minimum=0)
if PORTAL_AGENT_HEARTBEAT_SECONDS is not None and (
    PORTAL_AGENT_HEARTBEAT_SECONDS > PORTAL_AGENT_SILENT_AFTER - PORTAL_AGENT_POLL_SECONDS
):
    raise ConfigError(
        f"PORTAL_AGENT_HEARTBEAT_SECONDS={PORTAL_AGENT_HEARTBEAT_SECONDS} must be at most "
        f"PORTAL_AGENT_SILENT_AFTER − PORTAL_AGENT_POLL_SECONDS "
        f"({PORTAL_AGENT_SILENT_AFTER} − {PORTAL_AGENT_POLL_SECONDS}), or agents polling on time "
        "would be flagged silent."
    )
PORTAL_JOB_LEASE_SECONDS = env.get_int("PORTAL_JOB_LEASE_SECONDS", 120, minimum=10)
# First retry of a failed backup after this long, doubling each attempt (5, 10, 20 min…).
PORTAL_RETRY_BASE_SECONDS = env.get_int("PORTAL_RETRY_BASE_SECONDS", 300, minimum=0)
PORTAL_ENROLMENT_TOKEN_DAYS = env.get_int("PORTAL_ENROLMENT_TOKEN_DAYS", 7, minimum=1)
# An archive on storage that no backup explains is removed by its agent after this long:
# time for the team to look (and for a late report to claim it) first.
PORTAL_ORPHAN_GRACE_HOURS = env.get_int("PORTAL_ORPHAN_GRACE_HOURS", 72, minimum=1)
# The portal's own cost for the Automation page (core.usage): each web process and worker adds
# its CPU time to the hour at most once per PORTAL_USAGE_FLUSH_SECONDS; on PostgreSQL a periodic
# task samples the database's commits. PORTAL_USAGE_METER=false turns the CPU meter off.
PORTAL_USAGE_METER = env.get_bool("PORTAL_USAGE_METER", True)
PORTAL_USAGE_FLUSH_SECONDS = env.get_int("PORTAL_USAGE_FLUSH_SECONDS", 60, minimum=1)

# --- Task queue ---------------------------------------------------------------
PORTAL_TASK_BACKEND = env.get_choice("PORTAL_TASK_BACKEND", "django_q", ("django_q", "celery"))
Q_CLUSTER = {
    "name": "backup-portal",
    "orm": "default",  # the database is the broker: nothing else to run on one machine
    "workers": env.get_int("Q_WORKERS", 2, minimum=1),
    "timeout": 300,
    "retry": 360,  # must exceed timeout, or a slow task runs twice
    "max_attempts": 1,
    "catch_up": False,
    "save_limit": 1000,
    "poll": 1,
}
CELERY_BROKER_URL = env.get_str("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = env.get_str("CELERY_TASK_DEFAULT_QUEUE", "backup-portal")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = TIME_ZONE

# --- E-mail -------------------------------------------------------------------
EMAIL_BACKEND = env.get_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env.get_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env.get_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env.get_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env.get_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env.get_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env.get_str("DEFAULT_FROM_EMAIL", "backup-portal@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- REST framework -------------------------------------------------------------
_THROTTLE_RATE = re.compile(r"^[1-9][0-9]*/(second|minute|hour|day)$")


def _throttle_rate(name: str, default: str) -> str:
    value = (env.get_str(name) or default).strip()
    if not _THROTTLE_RATE.match(value):
        raise ConfigError(f"{name}={value!r} is not a rate such as 120/minute (second, minute, hour or day)")
    return value


REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "requests_app.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "core.api.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.PagePagination",
    "PAGE_SIZE": 50,
    # AnonRateThrottle (agent enrolment) keys on the client's address: with NUM_PROXIES=0 a
    # client-supplied X-Forwarded-For is ignored; unset, DRF would trust it.
    "NUM_PROXIES": NUM_PROXIES,
    # Per API key, or per person signed in; agents and anonymous callers are not counted here.
    "DEFAULT_THROTTLE_CLASSES": [
        "requests_app.api.throttling.BurstRateThrottle",
        "requests_app.api.throttling.SustainedRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        # A runaway loop is stopped within the minute; a busy ticketing system stays well inside both.
        "api_burst": _throttle_rate("API_THROTTLE_BURST", "120/minute"),
        "api_sustained": _throttle_rate("API_THROTTLE_SUSTAINED", "2000/hour"),
        # Per address: agent enrolments (catalog.agent_api.views.EnrolThrottle).
        "agent_enrol": _throttle_rate("PORTAL_AGENT_ENROL_RATE", "30/minute"),
    },
}


# --- Security (production) --------------------------------------------------------
if not DEBUG:
    # TLS is terminated by the load balancer or reverse proxy in front of gunicorn.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.get_bool("SECURE_SSL_REDIRECT", True)
    # Load balancers probe over plain HTTP, without X-Forwarded-Proto.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_HSTS_SECONDS = env.get_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.get_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env.get_bool("SECURE_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

SPECTACULAR_SETTINGS = {
    "TITLE": "Backup Portal API",
    "DESCRIPTION": "Ticketing integration: restore and client requests, the catalog, webhooks (docs/api.md).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the installed sidecar package: the docs work with no internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The public API only: the agent API is a private protocol (see portal/api_urls.py).
    "PREPROCESSING_HOOKS": ["portal.api_urls.public_endpoints_only"],
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Several models have a "status"; each set of states gets its own, stable, name.
    "ENUM_NAME_OVERRIDES": {
        "RequestStatusEnum": "requests_app.choices.RequestStatus",
        "ClientStatusEnum": "catalog.choices.ClientStatus",
        "BackupStatusEnum": "catalog.choices.BackupStatus",
        "JobStateEnum": "catalog.choices.JobState",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.get_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
