"""Figures. Every function returns a matplotlib ``Figure`` (save it with
``xtcdr.report.save_figure``); none calls ``plt.show``.
"""
from __future__ import annotations

import matplotlib

if matplotlib.get_backend().lower() == "agg" or not matplotlib.get_backend():
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__: list[str] = []
