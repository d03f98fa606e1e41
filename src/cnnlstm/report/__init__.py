"""Reports of a run: learning curves, confusion matrices and the end-of-run summary."""

from cnnlstm.report.plots import plot_confusion_matrix, plot_learning_curves
from cnnlstm.report.summary import format_summary

__all__ = ["plot_learning_curves", "plot_confusion_matrix", "format_summary"]
