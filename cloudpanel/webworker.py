"""The application as each of several web worker processes loads it (`manage.py serve` with more than one worker).

A worker ends with the process that started it: if that process is killed outright, its supervisor starts a new
one, which must find the port free rather than held by orphaned workers.
"""

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h

_parent = os.environ.get("CLOUDPANEL_WEB_PARENT")  # set by `manage.py serve` for the workers it starts
if _parent:
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(_parent):  # it died before the line above took effect: serve nothing
        os._exit(1)

from cloudpanel.asgi import application  # noqa: E402

__all__ = ["application"]
