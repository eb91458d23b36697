"""The environment of the processes that run trials, given to them through the job's runtime
environment (every worker Ray starts for the search, on a local or a remote cluster).

**The driver's Hugging Face settings** (:data:`PASSED_FROM_DRIVER`): offline mode and the cache
directory, so that a trial on another node loads models the way the driver does.

**One malloc arena** (:data:`TRIAL_WORKER_ENV`).  Tune runs a function trainable in a thread of
its worker, and glibc gives a thread other than the main one its own malloc arena (that its heap
is trimmed and grown again around large temporary tensors is our reading; page faults were not
counted).  The same 30-step MiniLM training (``bench_overhead.py``'s configuration, 3 trials in
one reused worker): 14.2 s in a plain process (main thread or a thread alike), 13.4-17.9 s (mean
15.5 s of the warm trials) in Tune's thread, 13.0-14.2 s (mean 13.7 s) with
``MALLOC_ARENA_MAX=1``; at issue 10's size see ``benchmarks/RESULTS.md``.  glibc reads the
variable when a process starts, hence the runtime environment.  A value the user set is kept.

Tried and not kept (RESULTS.md): prestarted workers preloading torch and transformers
(``preload_python_modules``) so the first trial skips its imports.  On 2 cores the preloading
competed with the driver's own start and the first trial began later, not earlier.
"""

from __future__ import annotations

import os

__all__ = ["TRIAL_WORKER_ENV", "PASSED_FROM_DRIVER", "trial_worker_env"]

#: Set in the trial workers' environment unless the user set them (see the module docstring).
TRIAL_WORKER_ENV = {"MALLOC_ARENA_MAX": "1"}

#: The driver's variables that trial workers get as they are, when the driver has them.
PASSED_FROM_DRIVER = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME")


def trial_worker_env() -> dict[str, str]:
    """The ``env_vars`` of the search's runtime environment: :data:`TRIAL_WORKER_ENV` (the
    driver's own value of any of them kept) and the :data:`PASSED_FROM_DRIVER` variables the
    driver has."""
    env = {name: os.environ.get(name, value) for name, value in TRIAL_WORKER_ENV.items()}
    env.update({name: os.environ[name] for name in PASSED_FROM_DRIVER if name in os.environ})
    return env
