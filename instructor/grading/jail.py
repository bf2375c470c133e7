"""Run a command with the whole file system read-only except one folder, some folders hidden, no network,
and its own process tree:

    python -m instructor.grading.jail SANDBOX [--hide PATH]... [--keep PATH]... -- COMMAND...

instructor/grading/sandbox.py and execute.py start this inside fresh Linux namespaces (`unshare --user --map-root-user --pid
--fork --mount-proc --net --mount`), so what is changed here is seen by this process tree alone. A
notebook graded in it can write only into its own sandbox, cannot reach the network, and cannot see
or signal the processes grading other submissions. A hidden folder (the course, with its judges, source
notebooks and submissions; /tmp, with other gradings' scratch courses) is covered by an empty file system,
except the paths kept: the collectors, the helpers and the Python the notebook runs on.
"""
import fcntl
import itertools
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
    """Everything read-only but `sandbox` (only its `job` folder where it has one: a fork server's own files stay
    out of a notebook's reach, and `job`, a mount point, cannot be renamed or replaced from inside); a private
    /dev/shm. Returns the mount points left writable."""
    run = lambda *args: subprocess.run(["mount", *args], capture_output=True).returncode == 0  # noqa: E731
    run("-t", "tmpfs", "-o", "size=1g", "tmpfs", "/dev/shm")
    writable = os.path.join(sandbox, "job") if os.path.isdir(os.path.join(sandbox, "job")) else sandbox
    if not run("--bind", sandbox, sandbox) or not run("--bind", writable, writable):
        raise SystemExit(f"jail: could not bind {writable}")
    left = []
    for point in mount_points():
        if point == writable or point.startswith(KEEP_WRITABLE):
            continue
        if not run("-o", "remount,bind,ro", point):
            left.append(point)
    return left


def _run(*args) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def hide(hidden: list, keep: list) -> None:
    """Cover each of `hidden` with an empty tmpfs, then put each of `keep` that lay under one back in place.

    Kept paths are first bound to a staging folder (in the private /dev/shm), since covering their parent
    hides them too; they are bound back from there, and the staging folder is let go."""
    hidden = [h for h in map(os.path.realpath, hidden) if os.path.isdir(h)]
    hidden = [h for h in hidden if not any(h != o and h.startswith(o + os.sep) for o in hidden)]
    under = lambda path: any(path == h or path.startswith(h + os.sep) for h in hidden)  # noqa: E731
    keep = sorted({os.path.realpath(k) for k in keep if os.path.exists(k) and under(os.path.realpath(k))})
    keep = [k for k in keep if not any(k != o and k.startswith(o + os.sep) for o in keep)]
    staging = "/dev/shm/.jail-keep"
    os.makedirs(staging, exist_ok=True)
    staged = []
    for number, path in zip(itertools.count(), keep):
        spot = os.path.join(staging, str(number))
        if os.path.isdir(path):
            os.makedirs(spot, exist_ok=True)
        else:
            open(spot, "a").close()
        if _run("--rbind", path, spot):
            staged.append((path, spot))
    for path in hidden:
        if not _run("-t", "tmpfs", "-o", "size=1m,mode=755", "tmpfs", path):
            raise SystemExit(f"jail: could not hide {path}")
    for path, spot in staged:
        if os.path.isdir(spot):
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "a").close()
        if not _run("--rbind", spot, path):
            raise SystemExit(f"jail: could not keep {path}")
        _run("--make-private", spot)
        subprocess.run(["umount", "-l", spot], capture_output=True)


def main(argv) -> None:
    sandbox, command, options = argv[0], argv[argv.index("--") + 1:], argv[1:argv.index("--")]
    hidden = [path for flag, path in zip(options, options[1:]) if flag == "--hide"]
    keep = [path for flag, path in zip(options, options[1:]) if flag == "--keep"]
    loopback_up()
    if hidden:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", "/dev/shm"], capture_output=True)
        hide(hidden, [*keep, sandbox])
    left = lock_down(os.path.realpath(sandbox))
    if left:
        print(f"jail: could not make read-only: {', '.join(left)}", file=sys.stderr)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
