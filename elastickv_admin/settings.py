"""Django settings, read from the environment only (see env.py and README).

The command line (`elastickv-admin serve --nodes ...`) turns its flags into the
same environment variables before Django starts, so there is one path in.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from elastickv_admin.lib.config import (
    DEFAULT_KEYVIZ_RETENTION_1H_MS,
    DEFAULT_KEYVIZ_RETENTION_15M_MS,
    DEFAULT_KEYVIZ_RETENTION_FINE_MS,
    DEFAULT_KEYVIZ_STEP,
    DEFAULT_PAGE_BUDGET_S,
    DEFAULT_SLOW_NODE_S,
    WRITES_MERGE_ALIASES,
    WRITES_MERGE_POLICIES,
    PortalConfig,
)
from elastickv_admin.lib.env import (
    env_bool,
    env_duration,
    env_int,
    env_list,
    env_old_keys,
    env_parsed,
    env_secret,
    env_str,
)
from keyviz.align import parse_step

# grpc's C core logs connection chatter (GOAWAY, reconnects) at INFO to stderr;
# node failures reach the operator through the pages and our own log instead.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

# ./var of the working directory (README), never a directory inside an installed package.
DATA_DIR = Path(env_str("ELASTICKV_ADMIN_DATA_DIR") or "var").resolve()
DEMO = env_bool("ELASTICKV_ADMIN_DEMO")
# Set by `elastickv-admin demo` for its banner: which devcluster profile runs and when
# the synthetic KeyViz history ends (Unix ms; 0 = none written).
DEMO_PROFILE = env_str("ELASTICKV_ADMIN_DEMO_PROFILE", "design")
DEMO_HISTORY_BEFORE_MS = env_int("ELASTICKV_ADMIN_DEMO_HISTORY_BEFORE_MS", 0, minimum=0)
DEBUG = env_bool("DEBUG")


def _required_secret(name: str, demo_file: str, what: str) -> str:
    """A secret from NAME or NAME_FILE; missing is a startup error, except in the demo,
    which generates one into its data directory (0600) and reuses it on restart."""
    value = env_secret(name)
    if value:
        return value
    if not DEMO:
        raise ImproperlyConfigured(
            f"{name} is not set: set {name} or {name}_FILE ({what}; "
            "only `elastickv-admin demo` generates one for itself)"
        )
    path = DATA_DIR / demo_file
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


SECRET_KEY = _required_secret("SECRET_KEY", "demo-secret-key", "Django's signing key")
# Keys kept outside the database (DESIGN.md "Access, tokens, audit"): the audit chain's
# HMAC key, the API tokens' hash key, and the key that encrypts secrets at rest.
# Repeated identical failures (bogus tokens, wrong passwords, denials) from one source are
# folded into one summary event per window (audit/failures.py); 0 records every one.
AUDIT_FAILURE_WINDOW = env_duration("ELASTICKV_ADMIN_AUDIT_FAILURE_WINDOW", 60.0)
AUDIT_KEY = _required_secret(
    "ELASTICKV_ADMIN_AUDIT_KEY", "demo-audit-key", "the audit log's HMAC chain key"
)
# Previous audit keys: events (and the anchor) MAC'd under them still verify; each event
# names its key by id (README "Rotating the keys").
AUDIT_OLD_KEYS = env_old_keys("ELASTICKV_ADMIN_AUDIT_OLD_KEYS")
# The chain's tail, outside the database: highest committed seq and its MAC, signed with
# AUDIT_KEY (audit/anchor.py). Processes sharing a data directory share it.
AUDIT_ANCHOR_FILE = Path(
    env_str("ELASTICKV_ADMIN_AUDIT_ANCHOR_FILE") or DATA_DIR / "audit-anchor"
).resolve()
TOKEN_HASH_KEY = _required_secret(
    "ELASTICKV_ADMIN_TOKEN_HASH_KEY", "demo-token-hash-key", "the API tokens' hash key"
)
# Previous token hash keys: tokens hashed under them keep working (each row names its key).
TOKEN_HASH_OLD_KEYS = env_old_keys("ELASTICKV_ADMIN_TOKEN_HASH_OLD_KEYS")
SECRETS_KEY = _required_secret(
    "ELASTICKV_ADMIN_SECRETS_KEY",
    "demo-secrets-key",
    "encrypts TOTP seeds and the node token at rest",
)
# Previous secrets keys, still accepted for reading while `manage.py reencrypt_secrets`
# moves every stored secret to SECRETS_KEY (comma- or newline-separated).
SECRETS_OLD_KEYS = env_old_keys("ELASTICKV_ADMIN_SECRETS_OLD_KEYS")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS") or ["127.0.0.1", "localhost", "[::1]"]
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    # Before django.contrib.auth: its createsuperuser writes the audit event too.
    "accounts",
    "audit",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Registers ServeStatic's system checks (its settings, middleware order).
    "servestatic",
    "channels",
    "django_htmx",
    "axes",
    "django_otp",
    "elastickv_admin",
    "cluster",
    "keyviz",
]

MIDDLEWARE = [
    # X-Forwarded-Proto only as far as ELASTICKV_ADMIN_TRUSTED_PROXY_HOPS reaches (net.py).
    "elastickv_admin.lib.net.TrustedProxyMiddleware",
    "elastickv_admin.lib.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    # Request id, audit context, one event per mutating request, 503 on audit failure.
    "audit.middleware.AuditMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # API tokens on /api/*, then the one access policy (accounts/policy.py) for every URL.
    "accounts.middleware.AccessMiddleware",
    "axes.middleware.AxesMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "elastickv_admin.urls"
ASGI_APPLICATION = "elastickv_admin.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # templates/ is found as elastickv_admin/templates (a symlink in the checkout, so
        # the wheel ships it as package data): the app loader, no path of the checkout.
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "elastickv_admin.context.portal",
                "demo.context.demo_banner",
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
            "CONFIG": {
                # A viewer waits in BZPOPMIN for up to 5 s (channels_redis' brpop_timeout);
                # redis-py 8 reads with a 5 s socket timeout by default, so an idle viewer
                # (no column for 5 s: a long step, a collector starting) would crash.
                "hosts": [{"address": redis_url, "socket_timeout": 30}],
                "capacity": 1000,
                "expiry": 30,
            },
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
# static/ is found as elastickv_admin/static by the app finder (as templates/ above).
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
# Secure cookies unless told otherwise (plain-HTTP development); the demo serves plain HTTP.
SECURE_COOKIES = env_bool("ELASTICKV_ADMIN_SECURE_COOKIES", not DEMO)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_NAME = "ekv_session"
SESSION_ENGINE = "django.contrib.sessions.backends.db"
SESSION_COOKIE_AGE = int(env_duration("ELASTICKV_ADMIN_SESSION_AGE", 8 * 3600.0))
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Served over HTTPS (directly or by a TLS-terminating proxy): HSTS and a redirect to HTTPS.
TLS = env_bool("ELASTICKV_ADMIN_TLS")
SECURE_HSTS_SECONDS = env_int("ELASTICKV_ADMIN_HSTS_SECONDS", 31_536_000 if TLS else 0, minimum=0)
# HSTS from portal.example.com covers only its own subdomains, not its siblings.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("ELASTICKV_ADMIN_HSTS_INCLUDE_SUBDOMAINS", TLS)
SECURE_HSTS_PRELOAD = env_bool("ELASTICKV_ADMIN_HSTS_PRELOAD", TLS)
SECURE_SSL_REDIRECT = TLS and env_bool("ELASTICKV_ADMIN_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

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


def _keyviz_retention() -> tuple[int, int, int]:
    """(fine, 15 min, 1 h) retention in ms; each at least 24 h and the previous tier's."""
    out: list[int] = []
    floor, floor_name = 24 * 3_600_000, "24h"
    for suffix, default_ms in (
        ("FINE", DEFAULT_KEYVIZ_RETENTION_FINE_MS),
        ("15M", DEFAULT_KEYVIZ_RETENTION_15M_MS),
        ("1H", DEFAULT_KEYVIZ_RETENTION_1H_MS),
    ):
        name = f"ELASTICKV_ADMIN_KEYVIZ_RETENTION_{suffix}"
        value = round(env_duration(name, default_ms / 1000) * 1000)
        if value < floor:
            raise ImproperlyConfigured(
                f"{name} must be at least {floor_name}, got {env_str(name)!r}"
            )
        out.append(value)
        floor, floor_name = value, f"{name} ({value // 1000} s)"
    return out[0], out[1], out[2]


def _portal_config() -> PortalConfig:
    raw_merge = env_str("ELASTICKV_ADMIN_WRITES_MERGE", "sum") or "sum"
    writes_merge = WRITES_MERGE_ALIASES.get(raw_merge.lower(), raw_merge.lower())
    if writes_merge not in WRITES_MERGE_POLICIES:
        raise ImproperlyConfigured(
            f"ELASTICKV_ADMIN_WRITES_MERGE must be one of {', '.join(WRITES_MERGE_POLICIES)} "
            f"(design is an alias of dedupe), got {raw_merge!r}"
        )
    retention = _keyviz_retention()
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
        page_budget_s=env_duration("ELASTICKV_ADMIN_PAGE_BUDGET", DEFAULT_PAGE_BUDGET_S),
        slow_node_s=env_duration("ELASTICKV_ADMIN_SLOW_NODE", DEFAULT_SLOW_NODE_S),
        max_receive_bytes=env_int(
            "ELASTICKV_ADMIN_MAX_RECEIVE_BYTES", 64 * 1024 * 1024, minimum=1024
        ),
        writes_merge=writes_merge,
        keyviz_step_ms=env_parsed("ELASTICKV_ADMIN_KEYVIZ_STEP", DEFAULT_KEYVIZ_STEP, parse_step),
        keyviz_retention_fine_ms=retention[0],
        keyviz_retention_15m_ms=retention[1],
        keyviz_retention_1h_ms=retention[2],
    )


ELASTICKV_ADMIN = _portal_config()

# --- access: login, lockout, roles, tokens, WebSockets ---------------------------------------
AUTHENTICATION_BACKENDS = [
    # First: refuses locked-out credentials on both authenticate() and aauthenticate().
    "accounts.backends.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "accounts:login"
CSRF_FAILURE_VIEW = "elastickv_admin.views.csrf_failure"  # the portal's page, not a bare 403
LOGIN_REDIRECT_URL = "cluster:overview"
# Reverse proxies in front of the portal whose X-Forwarded-For / -Proto entries are trusted;
# the client address is the entry that many hops from the right (0: the TCP peer,
# REMOTE_ADDR). The only proxy setting: `serve --proxyHeaders` is an alias of 1 (cli.py).
TRUSTED_PROXY_HOPS = env_int("ELASTICKV_ADMIN_TRUSTED_PROXY_HOPS", 0, minimum=0)
if TRUSTED_PROXY_HOPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
AXES_ENABLED = True
AXES_FAILURE_LIMIT = env_int("ELASTICKV_ADMIN_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env_duration("ELASTICKV_ADMIN_LOGIN_COOLOFF", 15 * 60.0))
# Three scopes, each with its own limit (accounts/lockout.py): one username from one address
# (the limit above), one username from anywhere, one address for any username. The wider
# scopes need more failures, so an attacker locking an account out on purpose has to work
# for it and the lock still ends after the cool-off (or when an admin unlocks it).
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "username", "ip_address"]
AXES_HANDLER = "accounts.lockout.PortalAxesHandler"
LOGIN_FAILURE_LIMIT_PER_USERNAME = env_int(
    "ELASTICKV_ADMIN_LOGIN_FAILURE_LIMIT_PER_USERNAME",
    max(20, AXES_FAILURE_LIMIT),
    minimum=AXES_FAILURE_LIMIT,
)
LOGIN_FAILURE_LIMIT_PER_ADDRESS = env_int(
    "ELASTICKV_ADMIN_LOGIN_FAILURE_LIMIT_PER_ADDRESS",
    max(30, AXES_FAILURE_LIMIT),
    minimum=AXES_FAILURE_LIMIT,
)
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "elastickv_admin.lib.net.client_ip"
AXES_LOCKOUT_CALLABLE = "accounts.views.locked_out"
AXES_VERBOSE = False
AXES_SENSITIVE_PARAMETERS = ["password", "token", "otp_token"]
# A WebSocket whose session ended or whose role was removed is closed within this time.
WS_RECHECK_INTERVAL_S = env_duration("ELASTICKV_ADMIN_WS_RECHECK_INTERVAL", 30.0)
OTP_TOTP_ISSUER = "elastickv admin"

LOG_FORMAT = env_str("LOG_FORMAT", "plain").lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "elastickv_admin.logfilters.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        # One JSON object per line for a log shipper; extra= fields become keys.
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
        "json_line": {"format": "%(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        },
        # Audit events: one bare JSON object per line, for a SIEM.
        "audit": {"class": "logging.StreamHandler", "formatter": "json_line"},
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        # axes logs every reset of zero failures at INFO; lockouts come through the audit log.
        "axes": {"level": "WARNING"},
        "elastickv_admin.audit": {"handlers": ["audit"], "level": "INFO", "propagate": False},
    },
}
