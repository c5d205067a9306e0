"""Shared test settings: no test reaches the network unless it says so.

``LORSP_OFFLINE=1`` for every test here, so that a test which builds the smoke setup on an empty data root
falls back at once instead of fetching CIFAR-10 and MobileNetV2's weights on a connected machine
(:mod:`lorsp.data.fetch`). The tests of the fetch itself (``tests/test_fetch.py``) lift it and talk to a local
HTTP server only.
"""
import pytest


@pytest.fixture(autouse=True)
def _no_network_by_default(monkeypatch):
    monkeypatch.setenv("LORSP_OFFLINE", "1")
