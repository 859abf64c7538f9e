"""`lit-transfer report DIR`: does transfer beat scratch, by how much, and can you trust it?

Aggregates every result.json under DIR into per-(experiment, strategy, target_shots) rows: target accuracy with
a t-interval over seeds, the gain over the baseline paired on (seed, shots, split_hash), a paired t-test, a
negative-transfer flag (gain CI entirely below zero), forgetting on the source, wall time and trainable
parameters. Writes report.md, a self-contained report.html, summary.csv/summary.json and PNG plots.

Aggregation: :mod:`.inputs` (collect, what identifies a row), :mod:`.tuning` (selection on validation),
:mod:`.gains` (paired gain, claims, Holm), :mod:`.summary` (the rows). Rendering: :mod:`.tables` (cells,
markdown), :mod:`.charts` (PNG figures), :mod:`.render` (the files, extra :class:`Section` s),
:mod:`.wandb_log`. The command line: :mod:`.command`.
"""

from lit_transfer.report.charts import curve_plots, plots
from lit_transfer.report.command import main
from lit_transfer.report.inputs import (PROG, ReportError, collect, input_size, model_key, parse_baseline,
                                        selection_label, weights_origin)
from lit_transfer.report.render import Section, html_report, write_report
from lit_transfer.report.summary import mean_curve, summarise
from lit_transfer.report.tables import markdown, stage_table, table
from lit_transfer.report.tuning import select_tuned
from lit_transfer.report.wandb_log import log_to_wandb

__all__ = ["main", "PROG", "ReportError", "collect", "input_size", "model_key", "parse_baseline", "selection_label",
           "weights_origin", "Section", "html_report", "write_report", "mean_curve", "summarise", "markdown",
           "stage_table", "table", "curve_plots", "plots", "select_tuned", "log_to_wandb"]
