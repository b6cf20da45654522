"""The application as each of several web worker processes loads it (`manage.py serve` with more than one worker).

A worker ends with the process that started it: if that process is killed outright, its supervisor starts a new
one, which must find the port free rather than held by orphaned workers.
"""

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h

ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
if os.getppid() != int(os.environ["CLOUDPANEL_WEB_PARENT"]):  # it died before the line above took effect
    os.kill(os.getpid(), signal.SIGTERM)

from cloudpanel.asgi import application  # noqa: E402

__all__ = ["application"]
