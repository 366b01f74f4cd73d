"""A local stand-in for HiAPI's task API, for demos, tests and benchmarks.

It is a real HTTP server that answers like HiAPI on the documented surface
(see the contract notes): `POST /v1/tasks`, `GET /v1/tasks/{taskId}`,
`GET /v1/tasks?page=&size=`, enveloped answers, bearer auth partitioned by
key, idempotency keys, a lazily computed `queued -> handling -> archiving ->
success|fail` lifecycle, temporary PNG output URLs and signed callbacks
redelivered on HiAPI's schedule (+1, +5, +20 minutes; `callback_backoff`
compresses it). Creates are checked by the one validation function, so exactly
HiAPI's ratio/resolution limits answer 400 INVALID_REQUEST; a body that is not
`application/json` answers 415; the list answers `{page, size, total, tasks}`
with page and size normalised. Everything extra lives under `/_sim/` and needs no auth:

- `GET /_sim/faults`, `POST /_sim/faults` (JSON object, merged): fault injection
- `GET /_sim/stats`, `POST /_sim/reset` (clears the counters, not the tasks)
- `GET /_sim/health`

`GET /_sim/stats` (and `Simulator.stats()`) counts: `requests` ("METHOD /route
STATUS" -> n, routes templated like `GET /v1/tasks/{id} 200`; a create whose
answer was dropped counts as `POST /v1/tasks dropped`; `/_sim/` calls are not
counted), `creates` (creates answered 200, replays included, plus dropped
answers), `tasks_created`, `idempotent_replays`, `create_answers_dropped`,
`gets_by_task` (taskId -> GETs), `downloads` (file requests answered 200),
`callbacks_sent` (attempts), `callbacks_acked` (2xx), `callbacks_failed`,
`callbacks_dropped`, `callbacks_abandoned` (gave up after the last retry),
`connections` (TCP connections accepted) and, for the trickle faults,
`trickles_started`, `trickles_cut` (the client hung up first) and
`trickles_finished`.

Python use::

    with Simulator(min_duration=0.05, max_duration=0.2, seed=1) as sim:
        sim.base_url                 # "http://127.0.0.1:PORT"
        sim.set_faults(fail_rate=0.5)
        sim.advance(1.0)             # every task is a second older; due callbacks go
        sim.stats()

The parts: `engine.py` (`Engine`: the task model, faults, stats and callbacks,
with the public API its docstring lists), `validation.py` (what a request may
say, through the studio's one validation function), `http.py` (the routes),
`signing.py` (the callback signature) and `server.py` (`Simulator`: the engine
served on a port).

Prompt markers: `[sim:fail]` makes a task fail with TASK_FAILED, and
`[sim:misspell]` (or the `misspell_rate` fault) draws the quoted headline misspelled. This package never
imports streamlit.
"""

from .render import MISSPELL_MARKER, misspell, quoted_parts, render_image, render_png
from .server import (
    DEFAULT_MODELS,
    FAIL_MARKER,
    Engine,
    Faults,
    Simulator,
    new_task_id,
    realistic_duration,
    sign,
)

__all__ = [
    "DEFAULT_MODELS",
    "Engine",
    "FAIL_MARKER",
    "MISSPELL_MARKER",
    "Faults",
    "Simulator",
    "misspell",
    "new_task_id",
    "quoted_parts",
    "realistic_duration",
    "render_image",
    "render_png",
    "sign",
]
