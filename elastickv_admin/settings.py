"""Django settings, read from the environment only (see env.py and README).

The command line (`elastickv-admin serve --nodes ...`) turns its flags into the
same environment variables before Django starts, so there is one path in.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from elastickv_admin.config import WRITES_MERGE_POLICIES, PortalConfig
from elastickv_admin.env import (
    env_bool,
    env_duration,
    env_int,
    env_list,
    env_secret,
    env_str,
)

# grpc's C core logs connection chatter (GOAWAY, reconnects) at INFO to stderr;
# node failures reach the operator through the pages and our own log instead.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("ELASTICKV_ADMIN_DATA_DIR") or BASE_DIR / "var").resolve()
DEMO = env_bool("ELASTICKV_ADMIN_DEMO")
DEBUG = env_bool("DEBUG")


def _secret_key() -> str:
    key = env_secret("SECRET_KEY")
    if key:
        return key
    if not DEMO:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: set SECRET_KEY or SECRET_KEY_FILE "
            "(only `elastickv-admin demo` generates one for itself)"
        )
    # The demo keeps a generated key in its data directory so sessions survive restarts.
    path = DATA_DIR / "demo-secret-key"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS") or ["127.0.0.1", "localhost", "[::1]"]
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "elastickv_admin",
    "cluster",
    "keyviz",
]

MIDDLEWARE = [
    "elastickv_admin.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "elastickv_admin.urls"
ASGI_APPLICATION = "elastickv_admin.asgi.application"

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
                "elastickv_admin.context.portal",
            ],
        },
    },
]


def _database() -> dict[str, object]:
    url = env_str("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'portal.sqlite3'}"
    try:
        db: dict[str, object] = dict(dj_database_url.parse(url))
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from None
    if db["ENGINE"] == "django.db.backends.sqlite3":
        if str(db["NAME"]) != ":memory:":
            Path(str(db["NAME"])).parent.mkdir(parents=True, exist_ok=True)
        # WAL lets the dashboards read while the audit log writes; IMMEDIATE takes
        # the write lock at BEGIN so concurrent writers wait instead of failing.
        db["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    # Persistent connections are per thread; under ASGI threads come and go.
    db["CONN_MAX_AGE"] = 0
    return db


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _channel_layers() -> dict[str, object]:
    redis_url = env_str("REDIS_URL")
    if not redis_url:
        # In-memory: one process only (DESIGN.md "Configuration").
        return {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "capacity": 1000, "expiry": 30},
        }
    }


CHANNEL_LAYERS = _channel_layers()
REDIS_URL = env_str("REDIS_URL")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Collected with hashed names at `serve`; the tests and DEBUG read from the finders.
SERVESTATIC_USE_FINDERS = DEBUG or env_bool("ELASTICKV_ADMIN_STATIC_FINDERS")
SERVESTATIC_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if SERVESTATIC_USE_FINDERS
            else "servestatic.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Served over HTTPS (directly or by a TLS-terminating proxy): secure cookies and HSTS.
TLS = env_bool("ELASTICKV_ADMIN_TLS")
SESSION_COOKIE_SECURE = TLS
CSRF_COOKIE_SECURE = TLS
SECURE_HSTS_SECONDS = env_int("ELASTICKV_ADMIN_HSTS_SECONDS", 31_536_000 if TLS else 0, minimum=0)
# HSTS from portal.example.com covers only its own subdomains, not its siblings.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("ELASTICKV_ADMIN_HSTS_INCLUDE_SUBDOMAINS", TLS)
SECURE_HSTS_PRELOAD = env_bool("ELASTICKV_ADMIN_HSTS_PRELOAD", TLS)
SECURE_SSL_REDIRECT = TLS and env_bool("ELASTICKV_ADMIN_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# Trust X-Forwarded-Proto only when a proxy in front sets it (and strips the client's).
if env_bool("ELASTICKV_ADMIN_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# No inline script anywhere: htmx is configured by a <meta> tag and the heatmap is a
# module file. Styles may be inline (bar widths); scripts may not.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}


def _portal_config() -> PortalConfig:
    writes_merge = env_str("ELASTICKV_ADMIN_WRITES_MERGE", "design")
    if writes_merge not in WRITES_MERGE_POLICIES:
        raise ImproperlyConfigured(
            f"ELASTICKV_ADMIN_WRITES_MERGE must be one of {', '.join(WRITES_MERGE_POLICIES)}, "
            f"got {writes_merge!r}"
        )
    return PortalConfig(
        seeds=tuple(env_list("ELASTICKV_ADMIN_NODES")),
        node_token_file=env_str("ELASTICKV_ADMIN_NODE_TOKEN_FILE") or None,
        insecure_no_auth=env_bool("ELASTICKV_ADMIN_INSECURE_NO_AUTH"),
        refresh_interval_s=env_duration("ELASTICKV_ADMIN_NODES_REFRESH_INTERVAL", 15.0),
        max_discovered_nodes=env_int("ELASTICKV_ADMIN_MAX_DISCOVERED_NODES", 512, minimum=1),
        tls_ca_cert_file=env_str("ELASTICKV_ADMIN_NODE_TLS_CA_CERT_FILE") or None,
        tls_server_name=env_str("ELASTICKV_ADMIN_NODE_TLS_SERVER_NAME") or None,
        tls_insecure_skip_verify=env_bool("ELASTICKV_ADMIN_NODE_TLS_INSECURE_SKIP_VERIFY"),
        rpc_timeout_s=env_duration("ELASTICKV_ADMIN_RPC_TIMEOUT", 5.0),
        max_receive_bytes=env_int(
            "ELASTICKV_ADMIN_MAX_RECEIVE_BYTES", 64 * 1024 * 1024, minimum=1024
        ),
        writes_merge=writes_merge,
    )


ELASTICKV_ADMIN = _portal_config()

LOG_FORMAT = env_str("LOG_FORMAT", "plain").lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        # One JSON object per line for a log shipper; extra= fields become keys.
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
