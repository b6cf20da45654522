from cloudpanel.exceptions import Conflict, DomainError, Forbidden


class UnsafeImage(DomainError):
    """The file is refused before any tool opens it; the message says why."""


class UploadIncomplete(DomainError):
    """A chunk or transfer did not arrive whole; nothing of it was kept."""


class TransferFailed(UploadIncomplete):
    """The panel could not be reached, or failed, while a worker moved an image's bytes: worth retrying."""


class UploadBusy(Conflict):
    """Another request is writing the same upload."""


class UploadOutOfOrder(Conflict):
    """A chunk does not start where the upload stands."""


class ImageNotReady(Conflict):
    """The image is not in a state that allows this (say, still uploading)."""


class ImageInUse(Conflict):
    """Instances or templates still use the image."""


class ReadOnly(Forbidden):
    """The user may see the image (or tenant) but not change it."""


class UnpackStopped(DomainError):
    """A container's root filesystem stopped being unpacked: the operation it was for is no longer in flight."""
