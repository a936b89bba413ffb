"""The data-quality gate: great-expectations suites over benchmark sample rows.

`check_quality(table, policy, required)` returns a `QualityReport`; a failed check names the
benchmarks it concerns so only their thresholds become undetermined. It never raises and
never passes on doubt. Importing this package is cheap: pandas and great-expectations load
on the first call.
"""

from tasks.quality.gate import check_quality, check_quality_frame, failed_closed
from tasks.quality.report import QualityCheck, QualityReport, QualityStatistics

__all__ = [
    "QualityCheck",
    "QualityReport",
    "QualityStatistics",
    "check_quality",
    "check_quality_frame",
    "failed_closed",
]
