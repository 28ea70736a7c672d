"""Analysis of finished runs: tables, the `ticketlab report` rows, aggregation and plots.

Matplotlib is imported only inside the plotting functions, so importing this package stays cheap.
"""

from ticketlab.analysis.plots import plot_accuracy_vs_density, plot_training_curves
from ticketlab.analysis.aggregate import AggRow, aggregate
from ticketlab.analysis.report import default_out_dir, render, report_main
from ticketlab.analysis.rows import Row, collect
from ticketlab.analysis.table import render_table

__all__ = ["Row", "AggRow", "collect", "aggregate", "render", "report_main", "default_out_dir", "render_table",
           "plot_accuracy_vs_density", "plot_training_curves"]
