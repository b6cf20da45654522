from django.db import models


class Status(models.TextChoices):
    """What the instance is, as last observed on its host."""

    PENDING = "pending", "Pending"
    STOPPED = "stopped", "Stopped"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    SUSPENDED = "suspended", "Suspended to RAM"
    CRASHED = "crashed", "Crashed"
    ERROR = "error", "Error"
    MISSING = "missing", "Missing on its host"  # its domain was removed outside CloudPanel: only delete applies
    UNKNOWN = "unknown", "Unknown (its host does not answer)"  # neither running nor stopped, as far as anyone knows
    DELETED = "deleted", "Deleted"


class TaskState(models.TextChoices):
    """The operation in flight, if any."""

    CREATING = "creating", "Creating"
    STARTING = "starting", "Starting"
    SHUTTING_DOWN = "shutting_down", "Shutting down"
    POWERING_OFF = "powering_off", "Powering off"
    REBOOTING = "rebooting", "Rebooting"
    SUSPENDING = "suspending", "Suspending"
    RESUMING = "resuming", "Resuming"
    CHANGING_MEDIA = "changing_media", "Changing CD-ROM"
    PLUGGING = "plugging", "Plugging a NIC"
    UNPLUGGING = "unplugging", "Unplugging a NIC"
    SNAPSHOTTING = "snapshotting", "Taking a snapshot"
    REVERTING = "reverting", "Reverting to a snapshot"
    UNSNAPSHOTTING = "unsnapshotting", "Deleting a snapshot"
    RESIZING = "resizing", "Resizing"
    REBUILDING = "rebuilding", "Rebuilding"
    RENAMING = "renaming", "Renaming"
    CAPTURING = "capturing", "Saving as an image"
    CLONING = "cloning", "Cloning"
    BACKING_UP = "backing_up", "Backing up"
    RESTORING = "restoring", "Restoring a backup"
    ATTACHING_VOLUME = "attaching_vol", "Attaching a volume"
    DETACHING_VOLUME = "detaching_vol", "Detaching a volume"
    EXTENDING_VOLUME = "extending_vol", "Extending a volume"
    MIGRATING = "migrating", "Migrating"
    DELETING = "deleting", "Deleting"


class Operation(models.TextChoices):
    CREATE = "create", "Create"
    START = "start", "Start"
    SHUTDOWN = "shutdown", "Shut down"
    POWEROFF = "poweroff", "Force off"
    REBOOT = "reboot", "Reboot"
    SUSPEND = "suspend", "Suspend"
    RESUME = "resume", "Resume"
    MEDIA = "media", "Change CD-ROM"
    ATTACH_NIC = "attach_nic", "Plug a NIC"
    DETACH_NIC = "detach_nic", "Unplug a NIC"
    SNAPSHOT = "snapshot", "Take a snapshot"
    REVERT = "revert", "Revert to a snapshot"
    UNSNAPSHOT = "unsnapshot", "Delete a snapshot"
    RESIZE = "resize", "Resize"
    REBUILD = "rebuild", "Rebuild"
    RENAME = "rename", "Rename"
    CAPTURE = "capture", "Save as image"
    CLONE = "clone", "Clone"
    BACKUP = "backup", "Back up"
    RESTORE = "restore", "Restore a backup"
    ATTACH_VOLUME = "attach_vol", "Attach a volume"
    DETACH_VOLUME = "detach_vol", "Detach a volume"
    EXTEND_VOLUME = "extend_vol", "Extend a volume"
    MIGRATE = "migrate", "Migrate"
    DELETE = "delete", "Delete"


class GroupPolicy(models.TextChoices):
    """How a server group's instances are placed relative to each other."""

    AFFINITY = "affinity", "Together (one host)"
    ANTI_AFFINITY = "anti-affinity", "Apart (each on another host)"


class MaintenancePolicy(models.TextChoices):
    """What becomes of an instance when its host goes into maintenance."""

    MIGRATE = "migrate", "Migrate it"
    STOP = "stop", "Shut it down"


class ActionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Cause(models.TextChoices):
    """Why an instance's status changed."""

    ACTION = "action", "Operation"
    EVENT = "event", "Hypervisor event"
    RECONCILE = "reconcile", "Reconciliation"
    TIMEOUT = "timeout", "Timed out"
    ADOPTED = "adopted", "Adopted from its host"


class BootSource(models.TextChoices):
    """What an instance boots. Tenants boot only library objects; paths on a host are platform admins'."""

    KERNEL = "kernel", "Boot kernel"
    IMAGE = "image", "Image from the library"
    CONTAINER = "container", "Container image"
    VOLUME = "volume", "Volume"
    DISK = "disk", "Disk on the host (platform admins)"
    ADOPTED = "adopted", "Adopted (made outside CloudPanel)"


# What a create may ask for: an adopted instance was made outside the panel (instances.services.adopt_domain).
CREATABLE = [choice for choice in BootSource.choices if choice[0] != BootSource.ADOPTED]


class SnapshotStatus(models.TextChoices):
    CREATING = "creating", "Being taken"
    AVAILABLE = "available", "Available"
    ERROR = "error", "Failed"
    DELETED = "deleted", "Deleted"


class VolumeStatus(models.TextChoices):
    CREATING = "creating", "Being created"
    AVAILABLE = "available", "Available"
    ERROR = "error", "Failed"
    DELETED = "deleted", "Deleted"


class VolumeTask(models.TextChoices):
    """A volume's own operation in flight (one not of an instance: those are the instance's actions)."""

    CREATING = "creating", "Creating"
    EXTENDING = "extending", "Extending"
    DELETING = "deleting", "Deleting"
    ATTACHING = "attaching", "Attaching"
    DETACHING = "detaching", "Detaching"


class BackupStatus(models.TextChoices):
    CREATING = "creating", "Being made"
    AVAILABLE = "available", "Available"
    ERROR = "error", "Failed"
    DELETED = "deleted", "Deleted"
