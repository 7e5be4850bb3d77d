"""Measurements of the running benchmark process shared by the bench scripts."""

import os
import resource
import socket


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's own peak resident memory in MB (this one by default)."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child would report at
    # least its parent's RSS at the fork instead of its own peak.
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resident_mb(pid: int | str = "self") -> float:
    """A process's resident memory now in MB (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a live process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        # Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
