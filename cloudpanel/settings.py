"""CloudPanel settings: one file, driven by the environment.

With no DATABASE_URL and no REDIS_URL it runs embedded: SQLite, an in-memory
Celery broker with a worker thread and an in-memory channel layer, all inside the
web process. Set DATABASE_URL and REDIS_URL for PostgreSQL and Redis with separate
worker and listener processes.
"""

import ipaddress
import os
import socket
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).lower() in ("1", "true", "yes", "on")


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


PRODUCTION = _env_bool("CLOUDPANEL_PRODUCTION", False)
DEBUG = _env_bool("CLOUDPANEL_DEBUG", False) and not PRODUCTION
SECRET_KEY = os.environ.get("CLOUDPANEL_SECRET_KEY", "")
if not SECRET_KEY:
    if PRODUCTION:
        raise RuntimeError("CLOUDPANEL_SECRET_KEY must be set in production")
    SECRET_KEY = "insecure-development-key-set-CLOUDPANEL_SECRET_KEY-in-production"
ALLOWED_HOSTS = _env_list("CLOUDPANEL_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = _env_list("CLOUDPANEL_CSRF_TRUSTED_ORIGINS", "")
# Only behind a proxy that sets X-Forwarded-For itself: otherwise clients could pick their address.
CLOUDPANEL_BEHIND_PROXY = _env_bool("CLOUDPANEL_BEHIND_PROXY", False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "channels",
    "axes",
    "cloudpanel",
    "tenants",
    "notifications",
    "hosts",
    "instances",
    "images",
    "networks",
    "billing",
    "metrics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "cloudpanel.telemetry.RequestMetrics",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    "tenants.audit.AuditMiddleware",
]

# Failed sign-ins are throttled per user name and address: after AXES_FAILURE_LIMIT failures
# the pair is locked out for the cool-off time, with the same answer whether the user exists.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = int(os.environ.get("CLOUDPANEL_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("CLOUDPANEL_LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

ROOT_URLCONF = "cloudpanel.urls"
ASGI_APPLICATION = "cloudpanel.asgi.application"
WSGI_APPLICATION = "cloudpanel.wsgi.application"

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
                "tenants.context_processors.tenancy",
            ],
        },
    },
]

VAR_DIR = Path(os.environ.get("CLOUDPANEL_VAR_DIR", BASE_DIR / "var"))
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'cloudpanel.sqlite3'}"),
        # Reusing connections saves a connect (several ms) on every request and task.
        conn_max_age=int(os.environ.get("CLOUDPANEL_DB_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default shares SQLite between web, worker and listener threads.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
else:
    # PostgreSQL: each process holds at most CLOUDPANEL_DB_POOL_SIZE connections (psycopg's pool), however many
    # requests or task threads it runs; one more waits for a free connection up to CLOUDPANEL_DB_POOL_TIMEOUT s.
    # The pool checks a connection as it hands it out (health checks on): one the server dropped is replaced. A
    # connection it cannot open ("too many clients", a restarting server) it tries again, while the caller waits.
    DATABASES["default"].update(CONN_MAX_AGE=0, CONN_HEALTH_CHECKS=True)
    DATABASES["default"]["OPTIONS"] = {
        "pool": {"min_size": 1, "max_size": int(os.environ.get("CLOUDPANEL_DB_POOL_SIZE", "10")),
                 "timeout": float(os.environ.get("CLOUDPANEL_DB_POOL_TIMEOUT", "30")), "max_idle": 300},
        "application_name": os.environ.get("CLOUDPANEL_DB_APPLICATION_NAME", "cloudpanel"),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
# Only the built files of the npm packages are published (not their sources, icons' SVGs or docs):
# fewer files to collect and for WhiteNoise to index at start-up.
_VENDOR = ["bootstrap/dist", "bootstrap-icons/font", "@xterm/xterm/lib", "@xterm/xterm/css", "@xterm/addon-fit/lib",
           "chart.js/dist", "swagger-ui-dist", "@novnc/novnc/core", "@novnc/novnc/vendor"]
STATICFILES_DIRS = [
    BASE_DIR / "static",
    *[(f"vendor/{path}", BASE_DIR / "node_modules" / path) for path in _VENDOR],
]
WHITENOISE_USE_FINDERS = True

# /metrics sums the request and websocket figures of every web process one `manage.py serve` starts: they write
# them to files in a directory of its own (cloudpanel/telemetry.py), which the processes it starts inherit.
CLOUDPANEL_PROMETHEUS_ROOT = VAR_DIR / "prometheus"
CLOUDPANEL_PROMETHEUS_OWN = "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # (made here, not inherited or given)
if CLOUDPANEL_PROMETHEUS_OWN:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(CLOUDPANEL_PROMETHEUS_ROOT / f"{socket.gethostname()}-{os.getpid()}")

REDIS_URL = os.environ.get("REDIS_URL", "")
EMBEDDED = not REDIS_URL
# Web processes `manage.py serve` runs with REDIS_URL set (embedded: one, which runs everything); by default one per
# CPU, at most 4: each holds a database pool of its own.
_workers = os.environ.get("CLOUDPANEL_WEB_WORKERS", "")
if _workers and not (_workers.isascii() and _workers.isdigit() and 1 <= int(_workers) <= 64):
    raise ImproperlyConfigured("CLOUDPANEL_WEB_WORKERS is a number of processes from 1 to 64")
CLOUDPANEL_WEB_WORKERS = int(_workers) if _workers else min(len(os.sched_getaffinity(0)), 4)

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": os.environ.get("CLOUDPANEL_CHANNEL_PREFIX", "asgi")},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    # Longer than any task (a multi-GiB import or copy): Redis would otherwise hand a task still
    # running after an hour to a second worker.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 24 * 3600}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = "memory://localhost/"
    CELERY_BROKER_TRANSPORT_OPTIONS = {"polling_interval": 0.02}
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CLOUDPANEL_TASK_QUEUE", "cloudpanel")
# Per-host workers (the nova-compute shape): operations on host N go to queue host.N, and
# a worker next to that host runs `celery -A cloudpanel worker -Q host.N`.
CLOUDPANEL_HOST_QUEUES = _env_bool("CLOUDPANEL_HOST_QUEUES", False)
# On a host's own machine, its worker and listener reach it through its local socket: "registered=>local" pairs,
# e.g. "qemu+tls://node1/system=>qemu:///system" (libvirt passes display descriptors over a local socket only).
CLOUDPANEL_LOCAL_URIS: dict[str, str] = {}
for _pair in os.environ.get("CLOUDPANEL_LOCAL_URIS", "").split():
    _registered, _arrow, _local_uri = _pair.partition("=>")
    if not (_arrow and "://" in _registered and "://" in _local_uri):
        raise ImproperlyConfigured(f"CLOUDPANEL_LOCAL_URIS: {_pair!r} is not a 'registered-uri=>local-uri' pair")
    CLOUDPANEL_LOCAL_URIS[_registered] = _local_uri
CELERY_TASK_ALWAYS_EAGER = _env_bool("CLOUDPANEL_TASKS_EAGER", False)
# Acknowledged once done; a task whose pool process died is queued again (prefork pools: the threads pool loses
# the whole worker, and the lease sweep resumes or fails its operations).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup closes the database connection around every task unless this is
# set; cloudpanel/celery.py recycles connections the way Django does around requests instead
# (on PostgreSQL a close hands the connection back to the process's pool).
CELERY_DB_REUSE_MAX = 1_000_000_000

# How long an operation may stay in flight before reconcile marks the instance as error.
CLOUDPANEL_TASK_TIMEOUT_SECONDS = int(os.environ.get("CLOUDPANEL_TASK_TIMEOUT_SECONDS", "300"))
# A running operation's worker renews its lease every third of this; a lease this old means the worker died: the
# operation is run again (a delete) or failed with the reason "worker lost", checked every third of it too.
CLOUDPANEL_LEASE_SECONDS = float(os.environ.get("CLOUDPANEL_LEASE_SECONDS", "15"))
CLOUDPANEL_SHUTDOWN_TIMEOUT_SECONDS = int(os.environ.get("CLOUDPANEL_SHUTDOWN_TIMEOUT_SECONDS", "120"))
# Who may scrape /metrics: whoever sends this bearer token, or comes from one of these networks (CIDRs, space- or
# comma-separated); nobody while neither is set. Per-instance use, labelled by tenant, only when asked for.
CLOUDPANEL_METRICS_TOKEN = os.environ.get("CLOUDPANEL_METRICS_TOKEN", "")
try:
    CLOUDPANEL_METRICS_NETWORKS = [ipaddress.ip_network(net, strict=False) for net in
                                   os.environ.get("CLOUDPANEL_METRICS_NETWORKS", "").replace(",", " ").split()]
except ValueError as _exc:
    raise ImproperlyConfigured(f"CLOUDPANEL_METRICS_NETWORKS: {_exc}") from None
CLOUDPANEL_METRICS_INSTANCES = _env_bool("CLOUDPANEL_METRICS_INSTANCES", False)
# How often every online host's and instance's resource use is sampled (the raw resolution of charts).
CLOUDPANEL_METRICS_SECONDS = float(os.environ.get("CLOUDPANEL_METRICS_SECONDS", "10"))
CLOUDPANEL_RECONCILE_SECONDS = float(os.environ.get("CLOUDPANEL_RECONCILE_SECONDS", "30"))
# A host not heard from for this long (its libvirt or its worker silent) is offline, its instances unknown.
CLOUDPANEL_HOST_DOWN_SECONDS = float(os.environ.get("CLOUDPANEL_HOST_DOWN_SECONDS", "90"))
# Allocation ratios, as in OpenStack's placement: vCPUs and RAM may be overcommitted.
CLOUDPANEL_CPU_ALLOCATION_RATIO = float(os.environ.get("CLOUDPANEL_CPU_ALLOCATION_RATIO", "4.0"))
CLOUDPANEL_RAM_ALLOCATION_RATIO = float(os.environ.get("CLOUDPANEL_RAM_ALLOCATION_RATIO", "1.0"))
# Where placement puts a new instance: "spread" (the emptiest host that fits) or "pack" (the fullest that fits).
CLOUDPANEL_PLACEMENT_STRATEGY = os.environ.get("CLOUDPANEL_PLACEMENT_STRATEGY", "spread")
if CLOUDPANEL_PLACEMENT_STRATEGY not in ("spread", "pack"):
    raise ImproperlyConfigured("CLOUDPANEL_PLACEMENT_STRATEGY is spread or pack")
# What holds a host's vCPUs and RAM: "running" (instances that run, are paused or suspended, or have an operation
# in flight; a start checks the host again) or "defined" (every instance not deleted). Disks are held either way.
CLOUDPANEL_CAPACITY_POLICY = os.environ.get("CLOUDPANEL_CAPACITY_POLICY", "running")
if CLOUDPANEL_CAPACITY_POLICY not in ("running", "defined"):
    raise ImproperlyConfigured("CLOUDPANEL_CAPACITY_POLICY is 'running' or 'defined'")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.APITokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON only: the browsable API's filter forms would list rows from outside the caller's scope.
    # /api/docs/ is the interactive view.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "cloudpanel.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "cloudpanel.parsers.BoundedPagination",
    "DEFAULT_METADATA_CLASS": "cloudpanel.parsers.Metadata",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "cloudpanel.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CloudPanel API",
    "DESCRIPTION": "Hosts, instances and their operations. Authenticate with `Authorization: Token <key>`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "ENUM_NAME_OVERRIDES": {
        "InstanceStatusEnum": "instances.choices.Status",
        "MaintenancePolicyEnum": "instances.choices.MaintenancePolicy",
        "GroupPolicyEnum": "instances.choices.GroupPolicy",
        "ActionStatusEnum": "instances.choices.ActionStatus",
        "HostStateEnum": "hosts.choices.HostState",
        "ImageStatusEnum": "images.choices.ImageStatus",
        "CopyStatusEnum": "images.choices.CopyStatus",
        "SourceFormatEnum": "images.choices.SourceFormat",
        "DiskFormatEnum": "images.choices.DiskFormat",
        "VisibilityEnum": "images.choices.Visibility",
        "NotificationKindEnum": "notifications.choices.Kind",
        "NetworkKindEnum": "networks.choices.NetworkKind",
        "InvoiceKindEnum": "billing.choices.InvoiceKind",
        "SubscriptionChannelEnum": "notifications.choices.Channel",
    },
    "SWAGGER_UI_DIST": "/static/vendor/swagger-ui-dist",
    "SWAGGER_UI_FAVICON_HREF": "/static/vendor/swagger-ui-dist/favicon-32x32.png",
}

# Production is served over HTTPS (directly or behind a TLS proxy that sets X-Forwarded-Proto).
SESSION_COOKIE_SECURE = _env_bool("CLOUDPANEL_SECURE_COOKIES", PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
if PRODUCTION:
    SECURE_SSL_REDIRECT = _env_bool("CLOUDPANEL_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = int(os.environ.get("CLOUDPANEL_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("CLOUDPANEL_HSTS_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = _env_bool("CLOUDPANEL_HSTS_PRELOAD", True)
    SESSION_COOKIE_HTTPONLY = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("CLOUDPANEL_LOG_LEVEL", "INFO")},
    # fontTools logs a dozen lines for each invoice PDF's fonts
    "loggers": {"celery": {"level": "WARNING"}, "axes": {"level": "WARNING"}, "fontTools": {"level": "WARNING"}},
}

# Billing: a month is invoiced this long after it ends (late events still land in it); a tenant without usage
# gets no invoice unless zero invoices are wanted.
CLOUDPANEL_BILLING_GRACE_HOURS = int(os.environ.get("CLOUDPANEL_BILLING_GRACE_HOURS", "48"))
CLOUDPANEL_BILLING_ZERO_INVOICES = _env_bool("CLOUDPANEL_BILLING_ZERO_INVOICES", False)
# Closed months are invoiced and their invoices issued (numbered, immutable) without an admin's click.
CLOUDPANEL_BILLING_AUTO_ISSUE = _env_bool("CLOUDPANEL_BILLING_AUTO_ISSUE", True)
# How often the listener has usage metered and closed months invoiced.
CLOUDPANEL_BILLING_SECONDS = int(os.environ.get("CLOUDPANEL_BILLING_SECONDS", "600"))
# The name invoices are issued under.
CLOUDPANEL_BILLING_ISSUER = os.environ.get("CLOUDPANEL_BILLING_ISSUER", "CloudPanel")
# Limits of a new tenant; an absent or null limit is unlimited. Admins change them per tenant.
CLOUDPANEL_DEFAULT_QUOTA = {
    "instances": int(os.environ.get("CLOUDPANEL_QUOTA_INSTANCES", "20")),
    "vcpus": int(os.environ.get("CLOUDPANEL_QUOTA_VCPUS", "40")),
    "memory_mib": int(os.environ.get("CLOUDPANEL_QUOTA_MEMORY_MIB", str(64 * 1024))),
    "disk_gib": int(os.environ.get("CLOUDPANEL_QUOTA_DISK_GIB", "1000")),
    "snapshots": int(os.environ.get("CLOUDPANEL_QUOTA_SNAPSHOTS", "50")),
    "volumes": int(os.environ.get("CLOUDPANEL_QUOTA_VOLUMES", "20")),
    "volume_gib": int(os.environ.get("CLOUDPANEL_QUOTA_VOLUME_GIB", "1000")),
    "image_gib": int(os.environ.get("CLOUDPANEL_QUOTA_IMAGE_GIB", "200")),
    "networks": int(os.environ.get("CLOUDPANEL_QUOTA_NETWORKS", "10")),
    "public_addresses": int(os.environ.get("CLOUDPANEL_QUOTA_PUBLIC_ADDRESSES", "5")),
}

# The image library. The store is the web tier's directory; workers reach image bytes over HTTP
# at CLOUDPANEL_PANEL_URL with signed URLs valid for CLOUDPANEL_TRANSFER_MAX_AGE seconds.
CLOUDPANEL_IMAGE_DIR = Path(os.environ.get("CLOUDPANEL_IMAGE_DIR", VAR_DIR / "images"))
CLOUDPANEL_PANEL_URL = os.environ.get("CLOUDPANEL_PANEL_URL", "http://127.0.0.1:8000")
CLOUDPANEL_TRANSFER_MAX_AGE = int(os.environ.get("CLOUDPANEL_TRANSFER_MAX_AGE", str(12 * 3600)))
# Workers' scratch space for inspection, conversion and imports (the system's temporary directory if empty).
CLOUDPANEL_SCRATCH_DIR = os.environ.get("CLOUDPANEL_SCRATCH_DIR", "")
# The backup store: a directory the web tier and every host's worker share (one machine's disk, or a mount).
CLOUDPANEL_BACKUP_DIR = Path(os.environ.get("CLOUDPANEL_BACKUP_DIR", VAR_DIR / "backups"))
# Incremental backups in a row before the next one is full again.
CLOUDPANEL_BACKUP_CHAIN = int(os.environ.get("CLOUDPANEL_BACKUP_CHAIN", "6"))
# A live migration's bandwidth, in MiB/s (0: as fast as the hosts' link goes), so that it leaves room for the rest.
CLOUDPANEL_MIGRATION_BANDWIDTH_MIB = int(os.environ.get("CLOUDPANEL_MIGRATION_BANDWIDTH_MIB", "0"))
# Refused: images whose virtual disk is larger, and downloads larger than this.
CLOUDPANEL_IMAGE_MAX_VIRTUAL_GIB = int(os.environ.get("CLOUDPANEL_IMAGE_MAX_VIRTUAL_GIB", "2048"))
CLOUDPANEL_IMAGE_MAX_DOWNLOAD_GIB = int(os.environ.get("CLOUDPANEL_IMAGE_MAX_DOWNLOAD_GIB", "64"))
# URL imports reach only public addresses, plus these (CIDRs or host:port, comma-separated): internal mirrors.
CLOUDPANEL_IMPORT_ALLOW = _env_list("CLOUDPANEL_IMPORT_ALLOW", "")

# Notifications. Webhooks reach public addresses only, like URL imports, unless an admin allows internal receivers
# here (the same forms); each attempt is bounded, then retried after these delays (seconds), then given up.
CLOUDPANEL_WEBHOOK_ALLOW = _env_list("CLOUDPANEL_WEBHOOK_ALLOW", "")
CLOUDPANEL_WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("CLOUDPANEL_WEBHOOK_TIMEOUT_SECONDS", "5"))
CLOUDPANEL_NOTIFY_RETRY_SECONDS = [float(s) for s in _env_list("CLOUDPANEL_NOTIFY_RETRY_SECONDS",
                                                               "30,120,600,1800,7200")]
# Notifications (with their delivery logs) are kept this many days.
CLOUDPANEL_NOTIFY_KEEP_DAYS = int(os.environ.get("CLOUDPANEL_NOTIFY_KEEP_DAYS", "90"))
# E-mail goes through Django's mail backend: printed to the console when embedded, else SMTP (EMAIL_HOST, ...).
EMAIL_BACKEND = os.environ.get("CLOUDPANEL_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend"
                               if EMBEDDED else "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = os.environ.get("CLOUDPANEL_MAIL_FROM", "CloudPanel <cloudpanel@localhost>")
# An upload with no chunk for this long is abandoned (its partial bytes freed); an import or an
# inspection that has not moved for this long is failed (its worker went away).
CLOUDPANEL_UPLOAD_IDLE_HOURS = int(os.environ.get("CLOUDPANEL_UPLOAD_IDLE_HOURS", "24"))
CLOUDPANEL_IMAGE_TASK_TIMEOUT = int(os.environ.get("CLOUDPANEL_IMAGE_TASK_TIMEOUT", str(6 * 3600)))
# The hosts' own (management) networks: no tenant or shared network may overlap them.
CLOUDPANEL_MANAGEMENT_CIDRS = _env_list("CLOUDPANEL_MANAGEMENT_CIDRS", "")
# The largest request body outside image data (forms, JSON); larger ones get 413 before they are read.
CLOUDPANEL_MAX_REQUEST_BYTES = int(os.environ.get("CLOUDPANEL_MAX_REQUEST_MIB", "16")) << 20
# How long a copy of an image to a host may take before another worker may start it over.
CLOUDPANEL_IMAGE_COPY_TIMEOUT = int(os.environ.get("CLOUDPANEL_IMAGE_COPY_TIMEOUT", "3600"))
# Workers on LXC hosts unpack each container's own root filesystem into a directory of this one on the host.
CLOUDPANEL_CONTAINER_DIR = Path(os.environ.get("CLOUDPANEL_CONTAINER_DIR", "/var/lib/cloudpanel/containers"))
# The largest unpacked root filesystem of a container image.
CLOUDPANEL_ROOTFS_MAX_GIB = int(os.environ.get("CLOUDPANEL_ROOTFS_MAX_GIB", "32"))
# Container root of a tenant's containers is host uid (and gid) BASE + tenant id * 65536, a range of its own.
CLOUDPANEL_CONTAINER_ID_BASE = int(os.environ.get("CLOUDPANEL_CONTAINER_ID_BASE", str(1 << 20)))
# The browser uploads in chunks of this size, each resumable.
CLOUDPANEL_UPLOAD_CHUNK_MIB = int(os.environ.get("CLOUDPANEL_UPLOAD_CHUNK_MIB", "16"))
