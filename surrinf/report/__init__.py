"""Common result types for every surrinf analysis: tables, figures, Markdown and HTML reports and run provenance.

Everything written goes through :mod:`surrinf._atomic`, so a crash never leaves a half-written output behind.
"""

from surrinf.report.document import Report
from surrinf.report.figure import (
    HistComparison,
    compare_histograms,
    hep_style,
    hist_with_ratio,
    new_figure,
    save_figure,
)
from surrinf.report.html import markdown_to_html
from surrinf.report.measurement import Measurement
from surrinf.report.provenance import provenance, write_provenance
from surrinf.report.table import Table

__all__ = [
    "HistComparison",
    "Measurement",
    "Report",
    "Table",
    "compare_histograms",
    "hep_style",
    "hist_with_ratio",
    "markdown_to_html",
    "new_figure",
    "provenance",
    "save_figure",
    "write_provenance",
]
