#!/usr/bin/python3
"""Run a command as a child subreaper and reap every descendant at once.

Usage: libvirt-subreaper.py PIDFILE CMD [ARGS...]

Used by scripts/libvirtd.sh: PID 1 on the dev machine reaps orphans ~1.8 s
late, which makes `virsh destroy` of a QEMU guest slow. With
PR_SET_CHILD_SUBREAPER set here, daemons started by CMD (virtlogd, libvirtd,
and the QEMU/LXC processes libvirtd double-forks) are re-parented to this
process instead of PID 1, and reaped immediately. Exits when it has no
children left (ECHILD).
"""
import ctypes
import os
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def log(msg):
    print(f"{time.strftime('%F %T')} subreaper[{os.getpid()}]: {msg}", flush=True)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    pidfile, cmd = sys.argv[1], sys.argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(ctypes.get_errno())}")
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    log(f"started {cmd!r} as pid {pid}")
    try:
        while True:
            try:
                child, status = os.wait()
            except InterruptedError:
                continue
            except ChildProcessError:
                break
            if child == pid or os.waitstatus_to_exitcode(status) != 0:
                log(f"reaped pid {child}, exit code {os.waitstatus_to_exitcode(status)}")
    finally:
        try:
            with open(pidfile) as f:
                if f.read().strip() == str(os.getpid()):
                    os.unlink(pidfile)
        except OSError:
            pass
    log("no children left, exiting")


if __name__ == "__main__":
    main()
