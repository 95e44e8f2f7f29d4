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


@pytest.fixture(autouse=True, scope="session")
def _private_kernel_plan_cache(tmp_path_factory):
    """Kernel plans chosen by the tests go to a cache of their own, never the user's ~/.cache."""
    import os

    from captum_smocam.kernel_choice import PLAN_CACHE_ENV

    before = os.environ.get(PLAN_CACHE_ENV)
    os.environ[PLAN_CACHE_ENV] = str(tmp_path_factory.mktemp("kernel_plans") / "kernel_plans.json")
    yield
    if before is None:
        os.environ.pop(PLAN_CACHE_ENV, None)
    else:
        os.environ[PLAN_CACHE_ENV] = before
