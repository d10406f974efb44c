"""Figures, one module per topic; this module re-exports every one of them.

Every function returns a matplotlib ``Figure`` (save it with ``xtcdr.report.save_figure``); none
calls ``plt.show``. ``from xtcdr import plots; plots.plot_method_boxplots(...)`` works for all.

Where each figure is drawn:

- `xtcdr.plots_data` (notebook 01, the data): ``plot_synthetic_truth``, ``plot_deg_example``,
  ``plot_pairing``, ``plot_effect_ranking``.
- `xtcdr.plots_training` (notebooks 02, 03 and 08, training): ``plot_loss_trace``,
  ``plot_cosine_shift``, ``plot_tiny_run_summary``, ``plot_pair_codes``,
  ``plot_training_history``, ``plot_validation_signals``, ``plot_probes``, ``plot_embedding_pca``.
- `xtcdr.plots_results` (notebooks 04 to 08, results): ``plot_method_boxplots``,
  ``plot_embedding_panels``, ``plot_centroids_pca``, ``plot_mean_scatter``, ``plot_per_drug`` (04),
  ``plot_knockdown_profile``, ``plot_advantage`` (05), ``plot_double_degs``,
  ``plot_interaction_residuals`` (06), ``plot_seed_dots`` (07, 08).
- `xtcdr.plots_common`: what they share (``finish_figure``, ``hide_unused_axes``).

Figures tied to one analysis live in its module: `xtcdr.genetic` (notebook 05: the target
readout, per-knockdown scores and top knockdowns); `xtcdr.widgets` (notebook 02's explorers) draws
with ``plot_tiny_run_summary`` and ``plot_pair_codes``.
"""
from __future__ import annotations

from . import plots_data, plots_results, plots_training
from .plots_data import plot_deg_example, plot_effect_ranking, plot_pairing, plot_synthetic_truth
from .plots_results import (plot_advantage, plot_centroids_pca, plot_double_degs, plot_embedding_panels, plot_interaction_residuals,
                            plot_knockdown_profile, plot_mean_scatter, plot_method_boxplots, plot_per_drug,
                            plot_seed_dots)
from .plots_training import (plot_cosine_shift, plot_embedding_pca, plot_loss_trace, plot_pair_codes, plot_probes,
                             plot_tiny_run_summary, plot_training_history, plot_validation_signals)

__all__ = [*plots_data.__all__, *plots_training.__all__, *plots_results.__all__]
