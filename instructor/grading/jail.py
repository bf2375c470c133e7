"""Run a command with the whole file system read-only except one folder, no network, and its own
process tree: `python -m instructor.grading.jail SANDBOX -- COMMAND...`.

instructor/grading/sandbox.py and execute.py start this inside fresh Linux namespaces (`unshare --user --map-root-user --pid
--fork --mount-proc --net --mount`), so what is changed here is seen by this process tree alone. A
notebook graded in it can write only into its own sandbox, cannot reach the network, and cannot see
or signal the processes grading other submissions. It can still read the course's files: it must
import the graders to be graded.
"""
import fcntl
import os
import socket
import struct
import subprocess
import sys

KEEP_WRITABLE = ("/proc", "/sys", "/dev")  # kernel file systems: remounting them is refused or pointless


def loopback_up() -> None:
    """A new network namespace has a loopback device that is down; the kernel talks to nbgrader over it."""
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def mount_points() -> list:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = {line.split()[4].encode().decode("unicode_escape") for line in f}
    return sorted(points)


def lock_down(sandbox: str) -> list:
    """Everything read-only but `sandbox`; a private /dev/shm. Returns the mount points left writable."""
    run = lambda *args: subprocess.run(["mount", *args], capture_output=True).returncode == 0  # noqa: E731
    run("-t", "tmpfs", "-o", "size=1g", "tmpfs", "/dev/shm")
    if not run("--bind", sandbox, sandbox):
        raise SystemExit(f"jail: could not bind {sandbox}")
    left = []
    for point in mount_points():
        if point == sandbox or point.startswith(KEEP_WRITABLE):
            continue
        if not run("-o", "remount,bind,ro", point):
            left.append(point)
    return left


def main(argv) -> None:
    sandbox, command = argv[0], argv[argv.index("--") + 1:]
    loopback_up()
    left = lock_down(os.path.realpath(sandbox))
    if left:
        print(f"jail: could not make read-only: {', '.join(left)}", file=sys.stderr)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
