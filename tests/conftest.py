"""Shared test fixtures: a non-interactive matplotlib backend and no leaked figures."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    """Close every matplotlib figure a test opened, pass or fail."""
    yield
    plt.close("all")
