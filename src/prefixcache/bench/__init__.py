"""The live benchmark: scenarios and arms (typed), the runner, results, the report and
plots. Needs the ``bench`` extra (matplotlib, rich) and the ``llm`` extra."""

from .._extras import require

require("bench", "prefixcache.bench (the live benchmark)")

from .results import ArmRun, RequestResult  # noqa: E402
from .runner import Benchmark, BenchmarkAborted, BenchSettings  # noqa: E402
from .scenarios import SCENARIOS, Arm, Kind, Layout, Scenario, Step  # noqa: E402

__all__ = [
    "SCENARIOS",
    "Arm",
    "ArmRun",
    "BenchSettings",
    "Benchmark",
    "BenchmarkAborted",
    "Kind",
    "Layout",
    "RequestResult",
    "Scenario",
    "Step",
]
