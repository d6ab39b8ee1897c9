import pytest

from iree_glm.runtime.speculative import AdaptiveK


@pytest.fixture
def every_round_timed_alike(monkeypatch):
    """Every speculative round measured at the same time, so that this machine's load cannot
    pause a draft (the cost rule has its own tests, test_speculative_cost.py)."""
    timed = AdaptiveK.timed
    monkeypatch.setattr(AdaptiveK, "timed", lambda self, proposed, seconds: timed(self, proposed, 1.0))
