"""What a user looks at: summaries, comparisons, pictures (PNG), a self-contained HTML page
with a 3-D view, and ParaView files of a result."""

from cdi_plugins.report.summary import compare, format_summary, report, summarize

__all__ = ["summarize", "report", "compare", "format_summary"]
