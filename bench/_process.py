"""Measurements of the running benchmark process shared by the bench scripts."""

import resource


def peak_rss_mb() -> float:
    """This process's own peak resident memory in MB."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child would report at
    # least its parent's RSS at the fork instead of its own peak.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
