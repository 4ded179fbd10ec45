"""Settings for pytest: the production settings module with test defaults.

Only defaults are set here, so the services tier can point DATABASE_URL and
REDIS_URL at real PostgreSQL and Redis and still use the same settings code.
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-0123456789")
os.environ.setdefault("ELASTICKV_ADMIN_DATA_DIR", tempfile.mkdtemp(prefix="ekv-admin-test-"))
os.environ.setdefault("ELASTICKV_ADMIN_STATIC_FINDERS", "true")
os.environ.setdefault("ELASTICKV_ADMIN_INSECURE_NO_AUTH", "true")
os.environ.setdefault("ELASTICKV_ADMIN_AUDIT_KEY", "test-only-audit-key-0123456789abcdef")
os.environ.setdefault("ELASTICKV_ADMIN_TOKEN_HASH_KEY", "test-only-token-hash-key-0123456789")
os.environ.setdefault("ELASTICKV_ADMIN_SECRETS_KEY", "test-only-secrets-key-0123456789abc")

from elastickv_admin.settings import *  # noqa: F403

# Password hashing at production cost makes every sign-in test slow; the portal processes
# the browser tests start use the real hashers.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# An SQLite test database in a file, not Django's shared-cache :memory: one: concurrent
# writers then wait on the lock (WAL, busy timeout) exactly as in production instead of
# failing at once with "database table is locked".
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(os.environ["ELASTICKV_ADMIN_DATA_DIR"], "test-portal.sqlite3")
    }
