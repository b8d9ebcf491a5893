"""The audit report (Art. 36, 49(5)): the ledger's evidence per article, verified, as one HTML page.

.. versionadded:: 0.2.0
"""

from .build import CheckpointInfo, Report, build_report

__all__ = ["CheckpointInfo", "Report", "build_report"]
