"""Stops a vLLM server's whole process group once the process that started it is gone.

    python -m services.generator.watchdog OWNER_PID SERVER_PGID GRACE_S

Started beside every server (launcher.VLLMServer.start), in a session of its own. The server
itself gets SIGTERM from PR_SET_PDEATHSIG when its parent dies, but its engine processes do not,
and they outlive a server that dies or hangs (measured: 2.7 GB left behind); so when this
process's parent changes (the owner died: a replica's Ray actor killed, a crashed orchestrator),
it sends SIGTERM to the group, then SIGKILL after GRACE_S. It exits once the group is empty,
and the owner kills it when it stops the server itself.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` (0: only look) to the group; False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def watch(owner: int, pgid: int, grace_s: float, poll_s: float = 1.0) -> None:
    while signal_group(pgid, 0):
        if os.getppid() != owner:
            signal_group(pgid, signal.SIGTERM)
            end = time.monotonic() + grace_s
            while signal_group(pgid, 0) and time.monotonic() < end:
                time.sleep(0.2)
            signal_group(pgid, signal.SIGKILL)
            return
        time.sleep(poll_s)


if __name__ == "__main__":
    watch(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
