"""Settings for the test suite: the real settings with a throwaway key and fast hashing."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-" + "x" * 40)

from portal.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
# The test client speaks plain HTTP; production redirects to HTTPS.
SECURE_SSL_REDIRECT = False

# A file, not Django's in-memory default: the concurrency tests run real
# threads with their own connections against it, in WAL mode, as production does.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}  # noqa: F405

# Tasks run in-line, so tests see their effects (mail, webhooks) without a worker.
Q_CLUSTER = {**Q_CLUSTER, "sync": True}  # noqa: F405

# django-axes refuses authenticate() without a request (client.login, seed_demo's password
# checks). The lockout tests (tests/web/test_login_throttle.py) turn it back on and sign in
# through the real forms; production always has it on (portal/settings.py).
AXES_ENABLED = False

# The usage meter (core.usage) writes once a minute from whichever request or task is running: off, so no
# test's query count depends on the clock. tests/core/test_usage.py turns it on where it tests it.
PORTAL_USAGE_METER = False

# Approvals need MFA in production (portal/settings.py). The workflow's tests are about the
# workflow, so it is off here; tests/identity/test_mfa*.py turn it on wherever they test it.
PORTAL_MFA_FOR_APPROVALS = False
