"""The environment of the processes that run trials.

**One malloc arena** (:data:`TRIAL_WORKER_ENV`).  Tune runs a function trainable in a thread of
its worker, and glibc gives a thread other than the main one its own malloc arena (that its heap
is trimmed and grown again around large temporary tensors is our reading; page faults were not
counted).  The same 30-step MiniLM training (``bench_overhead.py``'s configuration, 3 trials in
one reused worker): 14.2 s in a plain process (main thread or a thread alike), 13.4-17.9 s (mean
15.5 s of the warm trials) in Tune's thread, 13.0-14.2 s (mean 13.7 s) with
``MALLOC_ARENA_MAX=1``; at issue 10's size see ``benchmarks/RESULTS.md``.  glibc reads the
variable when a process starts, so it goes into the job's runtime environment, which Ray applies
to every worker it starts for the search's trials.  A value the user set is kept.

Tried and not kept (RESULTS.md): prestarted workers preloading torch and transformers
(``preload_python_modules``) so the first trial skips its imports.  On 2 cores the preloading
competed with the driver's own start and the first trial began later, not earlier.
"""

from __future__ import annotations

import os

__all__ = ["TRIAL_WORKER_ENV", "trial_worker_env"]

#: Set in the trial workers' environment unless the user set them (see the module docstring).
TRIAL_WORKER_ENV = {"MALLOC_ARENA_MAX": "1"}


def trial_worker_env() -> dict[str, str]:
    """:data:`TRIAL_WORKER_ENV`, with the driver's own value of any of them kept."""
    return {name: os.environ.get(name, value) for name, value in TRIAL_WORKER_ENV.items()}
