from django.db import models


class Role(models.TextChoices):
    ADMIN = "admin", "Tenant admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class Channel(models.TextChoices):
    WEB = "web", "Web"
    API = "api", "API"
    CONSOLE = "console", "Console"
    WORKER = "worker", "Worker"


class AuditResult(models.TextChoices):
    OK = "ok", "Succeeded"
    REFUSED = "refused", "Refused"
    FAILED = "failed", "Failed"
