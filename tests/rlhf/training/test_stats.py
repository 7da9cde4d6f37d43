"""The win rate, the one rule behind the held-out evaluation and the compare page, by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rlhf.training.stats import win_rate


def test_a_win_counts_one_a_tie_half_a_loss_nothing():
    assert win_rate([(0.9, 0.1), (0.5, 0.5), (0.2, 0.3), (1.0, 0.0)]) == (1 + 0.5 + 0 + 1) / 4
    assert win_rate(iter([(0.0, 1.0)])) == 0.0
    assert win_rate([]) is None


def test_the_pages_get_it_without_the_training_stack():
    """The selectors import it in the web process, which does not load torch."""
    code = "import sys, rlhf.training.stats; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout == "False\n"
