"""Django settings. Everything comes from the environment, with safe development defaults.

With no environment at all the product runs on SQLite and a filesystem Celery broker, so one
command starts it on a fresh machine. ``DATABASE_URL`` and ``REDIS_URL`` (or
``CELERY_BROKER_URL``) switch to PostgreSQL and Redis.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Off unless asked for: debug pages show settings and code.
DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
KNOWN_KEYS = {"", "change-me-in-production", "dev-only-insecure-key-change-me"}
if SECRET_KEY in KNOWN_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY: set it to a long random string (python -c 'import secrets; "
            "print(secrets.token_urlsafe(50))'); with DJANGO_DEBUG off the server does not start on a "
            "missing or published key. scripts/run.sh keeps one in var/secret_key."
        )
    SECRET_KEY = "dev-only-insecure-key-change-me"
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# Served over HTTPS (on unless debug): HTTP is redirected, cookies are Secure, browsers are told to
# keep to HTTPS (HSTS). DJANGO_HTTPS=0 serves plain HTTP (scripts/run.sh on this machine, the tests).
HTTPS = env.bool("DJANGO_HTTPS", default=not DEBUG)
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=HTTPS)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=HTTPS)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=HTTPS)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
# Behind a proxy that terminates TLS and sets X-Forwarded-Proto.
BEHIND_PROXY = env.bool("DJANGO_BEHIND_TLS_PROXY", default=False)
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

VAR_DIR = Path(env("VAR_DIR", default=str(BASE_DIR / "var")))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the API docs' assets, served from here (no CDN)
    "axes",
    "django_htmx",
    "labelers",
    "annotation",
    "quality",
    "rlhf",
    "audit",
    "frontend",
]

MIDDLEWARE = [
    "config.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "config.middleware.DatabaseUnavailableMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last: it sees the outcome of every login (AxesStandaloneBackend below).
    "axes.middleware.AxesMiddleware",
]

# Content-Security-Policy: scripts and styles from this server only (inline style attributes are
# allowed; no inline script), no framing, no plug-ins.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# API tokens (labelers.tokens): stored hashed, valid this many days, ended by a password change.
API_TOKEN_TTL_DAYS = env.int("API_TOKEN_TTL_DAYS", default=30)
if API_TOKEN_TTL_DAYS < 1:
    raise ImproperlyConfigured(f"API_TOKEN_TTL_DAYS: must be at least 1, got {API_TOKEN_TTL_DAYS}")

# Brute-force protection (django-axes) for every password login: the API token endpoint, the
# login pages and the Django admin. AXES_FAILURE_LIMIT wrong passwords for one username from one
# address lock that pair for AXES_COOLOFF_MINUTES; the answer is 429.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_CALLABLE = "labelers.lockout.locked_out"
AXES_VERBOSE = False
if BEHIND_PROXY:
    # The client's address is the one the proxy appends to X-Forwarded-For (not REMOTE_ADDR, which is
    # the proxy's for everyone: one lockout would then lock every client out).
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]
    AXES_IPWARE_PROXY_COUNT = env.int("DJANGO_PROXY_COUNT", default=1)

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes SQLite's write lock at BEGIN: concurrent leases serialise instead of
    # failing with "database is locked" halfway through a transaction.
    # WAL lets readers run beside the writer; a writer waits up to 20 s for the lock (busy timeout).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"]["ENGINE"] = "config.postgresql"  # the same, with a local health check
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    # Prepared statements for the fixed SQL of token auth, lease and submit (config.db): PostgreSQL
    # plans each once per connection. DATABASE_PREPARED_STATEMENTS=0 behind a pooler that cannot
    # keep them (PgBouncer in transaction mode before 1.21, or without max_prepared_statements).
    # The ORM never prepares.
    if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 2)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request without it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Static files straight from the apps too, so the embedded default needs no collectstatic.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=True)
MEDIA_ROOT = VAR_DIR / "media"

# Email (password resets): EMAIL_URL such as smtp+tls://user:password@smtp.example.com:587, or
# consolemail:// to print them. Unset: the server sends no email and the reset page says so.
EMAIL_URL = env("EMAIL_URL", default="")
EMAIL_ENABLED = bool(EMAIL_URL)
if EMAIL_ENABLED:
    vars().update(env.email_url("EMAIL_URL"))
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="no-reply@localhost")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)

# Largest request body accepted (JSON, form or upload), and the deepest JSON nesting.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=50 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
JSON_MAX_DEPTH = env.int("JSON_MAX_DEPTH", default=32)
# Imports: rows per file and characters per stored text (prompt, message, response); a file over
# DATA_UPLOAD_MAX_MEMORY_SIZE is refused before it is read.
IMPORT_MAX_ROWS = env.int("IMPORT_MAX_ROWS", default=100_000)
IMPORT_MAX_TEXT_CHARS = env.int("IMPORT_MAX_TEXT_CHARS", default=100_000)
# A file larger than this is imported by a worker (202 and a job to poll), not in the request.
IMPORT_SYNC_MAX_BYTES = env.int("IMPORT_SYNC_MAX_BYTES", default=2 * 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an anonymous request then gets 401 with WWW-Authenticate, not a bare 403.
        "labelers.authentication.TokenWithProfileAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "config.schema.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "config.exceptions.exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "config.jsonsafe.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # ?format= is the import's own parameter (jsonl, csv), not a renderer choice.
    "URL_FORMAT_OVERRIDE": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Preference platform API",
    "DESCRIPTION": "Projects, guidelines, prompts, response sets, assignments, rankings, "
    "comparisons and preference exports.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "config.schema.add_error_responses"],
    "ENUM_NAME_OVERRIDES": {"ModelKindEnum": "rlhf.models.ModelKind", "RunKindEnum": "rlhf.models.RunKind"},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery. Redis when REDIS_URL / CELERY_BROKER_URL is set, else a filesystem broker that needs
# no server (web and worker on one machine share var/celery).
REDIS_URL = env("REDIS_URL", default="")
CELERY_DATA_DIR = VAR_DIR / "celery"
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
CELERY_RESULT_BACKEND = env(
    "CELERY_RESULT_BACKEND", default=REDIS_URL or f"file://{(CELERY_DATA_DIR / 'results').as_posix()}"
)
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_DATA_DIR / "queue"),
        "data_folder_out": str(CELERY_DATA_DIR / "queue"),
        "processed_folder": str(CELERY_DATA_DIR / "processed"),
        "control_folder": str(CELERY_DATA_DIR / "control"),
        "store_processed": False,
    }
    for _folder in ("queue", "processed", "results", "control"):
        (CELERY_DATA_DIR / _folder).mkdir(parents=True, exist_ok=True)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"rlhf.tasks.train_*": {"queue": "gpu"}}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_ACKS_LATE = env.bool("CELERY_TASK_ACKS_LATE", default=False)
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=1)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# A broker outage is waited out, at start and while running: the worker reconnects for ever
# rather than exiting, and loses no acknowledged work (training is acknowledged late).
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_HEARTBEAT = 10
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BEAT_SCHEDULE = {
    "expire-stale-leases": {"task": "annotation.tasks.leases_expire", "schedule": 60.0},
    "refresh-agreement-reports": {"task": "annotation.tasks.agreement_refresh_all", "schedule": 300.0},
    "refresh-agreement-after-submits": {
        "task": "annotation.tasks.agreement_refresh_sweep",
        "schedule": float(env.int("QUALITY_REFRESH_DELAY_S", default=30)),
    },
    "loop-check": {"task": "rlhf.tasks.loop_check_all", "schedule": env.float("LOOP_CHECK_SECONDS", default=60.0)},
}

# Annotation defaults.
ANNOTATION_DEFAULT_OVERLAP = env.int("ANNOTATION_DEFAULT_OVERLAP", default=3)
ANNOTATION_DEFAULT_LEASE_MINUTES = env.int("ANNOTATION_DEFAULT_LEASE_MINUTES", default=30)
# Quality: the agreement report is refreshed by a worker shortly after rankings arrive (a beat
# sweep every QUALITY_REFRESH_DELAY_S finds the projects with new rankings).
QUALITY_REFRESH_ON_SUBMIT = env.bool("QUALITY_REFRESH_ON_SUBMIT", default=True)
QUALITY_REFRESH_DELAY_S = env.int("QUALITY_REFRESH_DELAY_S", default=30)
QUALITY_BOOTSTRAP_RESAMPLES = env.int("QUALITY_BOOTSTRAP_RESAMPLES", default=1000)
# A running training run that has not reported for this long is failed by the beat reaper.
TRAINING_HEARTBEAT_TIMEOUT_S = env.int("TRAINING_HEARTBEAT_TIMEOUT_S", default=600)
# A thread of the training worker beats this often, whatever the run is doing (loading, saving).
TRAINING_HEARTBEAT_EVERY_S = env.float("TRAINING_HEARTBEAT_EVERY_S", default=30.0)
# A run whose worker died is queued again (resuming from its checkpoint) up to this many attempts.
TRAINING_MAX_ATTEMPTS = env.int("TRAINING_MAX_ATTEMPTS", default=3)
# A queued run that could not be handed to the broker is sent again by beat after this long.
TRAINING_RESEND_AFTER_S = env.int("TRAINING_RESEND_AFTER_S", default=30)
ARTIFACTS_ROOT = Path(env("ARTIFACTS_ROOT", default=str(VAR_DIR / "artifacts")))
# Where models and SFT data files may be read from: a registered local path must resolve (links
# followed) under ARTIFACTS_ROOT or one of these directories (colon-separated).
MODEL_ROOTS = [str(ARTIFACTS_ROOT), *[r for r in env("MODEL_ROOTS", default="").split(":") if r]]
# Hub ids that may be registered (comma-separated fnmatch patterns, e.g. "meta-llama/*,Qwen/Qwen2.5-*");
# empty: none. Whether a model may run its own code is set per model version by an admin.
MODEL_HUB_ALLOWLIST = env.list("MODEL_HUB_ALLOWLIST", default=[])
# How the gpu worker starts reward and PPO training (rlhf.training.launch.Launcher): "inprocess",
# "torchrun" (TRAINING_NUM_PROCESSES ranks, DDP) or "accelerate" (accelerate launch with
# TRAINING_ACCELERATE_CONFIG: DDP, DeepSpeed, FSDP; examples in config/accelerate/). The process
# count is over all machines; several machines need ARTIFACTS_ROOT on a shared filesystem.
TRAINING_LAUNCHER = env("TRAINING_LAUNCHER", default="inprocess")
TRAINING_NUM_PROCESSES = env.int("TRAINING_NUM_PROCESSES", default=1)
TRAINING_ACCELERATE_CONFIG = env("TRAINING_ACCELERATE_CONFIG", default="")
TRAINING_NUM_MACHINES = env.int("TRAINING_NUM_MACHINES", default=1)
TRAINING_MACHINE_RANK = env.int("TRAINING_MACHINE_RANK", default=0)
TRAINING_MAIN_PROCESS_IP = env("TRAINING_MAIN_PROCESS_IP", default="")
TRAINING_MAIN_PROCESS_PORT = env.int("TRAINING_MAIN_PROCESS_PORT", default=29500)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
