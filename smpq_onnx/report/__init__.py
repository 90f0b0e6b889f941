"""The report room: report JSON/Markdown and plots of a finished search."""
