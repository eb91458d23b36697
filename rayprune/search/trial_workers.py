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

**No prestarted workers on a local instance** (:func:`local_instance_system_config`).  When the
first driver connects, Ray's raylet prestarts one Python worker per CPU for tasks of the default
runtime environment.  Tune gives every trial actor its own runtime environment (Ray 2.60 sets
``PL_DISABLE_FORK`` on each), so no trial ever runs on one of them (measured, RESULTS.md session
13): on a 2-core machine they only compete with the driver and the first trial's worker for the
cores while they start.  A search that starts its own local instance turns the prestart off; a
cluster started with ``ray start`` keeps its own setting.

Tried and not kept (RESULTS.md): prestarted workers preloading torch and transformers
(``preload_python_modules``) so the first trial skips its imports.  On 2 cores the preloading
competed with the driver's own start and the first trial began later, not earlier.
"""

from __future__ import annotations

import os

__all__ = ["TRIAL_WORKER_ENV", "PASSED_FROM_DRIVER", "trial_worker_env", "local_instance_system_config"]

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


#: Ray's own variable for the prestart (read by the raylet); when the user set it, it is kept.
PRESTART_VARIABLE = "RAY_prestart_worker_first_driver"


def local_instance_system_config() -> dict:
    """``_system_config`` of the local Ray instance a search starts itself: no prestarted
    workers (module docstring), unless the user set :data:`PRESTART_VARIABLE`."""
    return {} if PRESTART_VARIABLE in os.environ else {"prestart_worker_first_driver": False}
