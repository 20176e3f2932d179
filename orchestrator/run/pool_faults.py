"""Whose fault a failure in the replica pool is: a replica's, the learner's, or the version's.

Only a replica's own fault (its server gone, hung or answering 5xx; its actor lost) takes it
out and restarts it. The learner's fault (it died or hung while the adapter's files were read
through Ray) must reach the run's learner recovery instead: restarting replicas would not
bring the files, and the generator recovery would then restore through a dead learner. A 4xx
to loading a version (a path this node cannot see, an adapter vLLM refuses) is about the
version or the configuration: every replica would refuse it again after a restart.
"""

from __future__ import annotations

import json

import httpx
import ray

from services.adapter_files import AdapterPathError


class LearnerLost(RuntimeError):
    """The learner did not deliver a version's files (it died, or hung past the bound): the run
    recovers the learner (orchestrator/run/recovery.py classifies this as `learner`)."""


class AdapterRefused(RuntimeError):
    """A replica refused to load a version (4xx): the version or the configuration is at fault.
    Not a process fault: the run fails with the reason, no replica is restarted."""


def cause_of(err: BaseException) -> BaseException:
    """The actor's own exception when Ray wraps it (RayTaskError keeps it as `cause`)."""
    return getattr(err, "cause", None) or err


def replica_fault(err: BaseException) -> bool:
    """A failure of the replica itself (not of the request): it is restarted."""
    err = cause_of(err)
    if isinstance(err, httpx.TransportError | json.JSONDecodeError | UnicodeDecodeError):
        return True  # gone, hung, or a garbled body from a server dying mid-answer
    return isinstance(err, httpx.HTTPStatusError) and err.response.status_code >= 500


def refused(err: BaseException) -> bool:
    """A load failure that is the version's or the configuration's, not the replica's."""
    err = cause_of(err)
    if isinstance(err, httpx.HTTPStatusError):
        return 400 <= err.response.status_code < 500
    # write_adapter refuses files that would land outside the node's folder. Only that error:
    # a dying server's garbled body raises ValueError too (JSONDecodeError), a replica fault.
    return isinstance(err, AdapterPathError)


def files_fault(calls, files, version: int) -> BaseException | None:
    """Why the learner's files of `version` (an object ref) are not to be had, or None when they
    are. Asked only after a load failed, so the success path never copies them here."""
    ready, _ = calls.wait([files], timeout=0, fetch_local=False)
    if not ready:
        return LearnerLost(f"the learner has not produced the files of version {version}")
    try:
        calls.get(files, timeout=60)
    except ray.exceptions.RayTaskError:
        raise  # the learner raised (a bug or a missing folder): the run fails with it
    except Exception as e:  # noqa: BLE001 - the learner (or its node) is gone with them
        return LearnerLost(f"the files of version {version} were lost with the learner "
                           f"({type(e).__name__}: {str(e)[:200]})")
    return None
