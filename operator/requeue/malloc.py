"""Fewer glibc malloc arenas for the operator process: the same work in less resident memory.

glibc gives every thread that allocates while another holds an arena an arena of its own,
up to 8 per core, and memory freed in one arena is reused only by the threads that use it.
The operator's threads (the ``/metrics`` server's, asyncio's workers for DNS lookups and
file reads; status writes and Secret reads ran there too until requeue's own async client
replaced the ``kubernetes`` package) each fill and fragment an arena of their own with what
they parse and throw away: resident memory that the event loop's thread can never reuse
(bench/README.md, "policy_scale"). Two arenas is what ``MALLOC_ARENA_MAX=2``,
the usual setting for threaded Python servers, gives; set before the first worker thread
starts, it applies to the whole run.

A user's own ``MALLOC_ARENA_MAX`` wins (glibc reads it at start, and this leaves it alone);
on a C library without ``mallopt`` (musl) nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["ARENAS", "limit_arenas"]

logger = logging.getLogger(__name__)

#: ``M_ARENA_MAX`` of glibc's malloc.h.
_M_ARENA_MAX = -8
#: Arenas the operator runs with.
ARENAS = 2


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most ``arenas`` malloc arenas from now on; True when glibc took the setting."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_ARENA_MAX, arenas))
    logger.debug("malloc arenas limited to %d: %s", arenas, done)
    return done
