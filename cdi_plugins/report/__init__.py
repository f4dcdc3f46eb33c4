"""What a user looks at: summaries, comparisons, pictures (PNG) and ParaView files of a result."""

from cdi_plugins.report.summary import compare, format_summary, report, summarize

__all__ = ["summarize", "report", "compare", "format_summary"]
