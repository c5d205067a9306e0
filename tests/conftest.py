"""Shared test settings: no test reaches the network unless it says so, and none writes outside its temporary
folders.

``LORSP_OFFLINE=1`` for every test here, so that a test which builds the smoke setup on an empty data root
falls back at once instead of fetching CIFAR-10 and MobileNetV2's weights on a connected machine
(:mod:`lorsp.data.fetch`). The tests of the fetch itself (``tests/test_fetch.py``) lift it and talk to a local
HTTP server only. The decoded-image cache of the CPU loader (``LORSP_DECODE_CACHE``,
:mod:`lorsp.data.gpu_pipeline`) goes to one temporary folder of the test session instead of ``~/.cache``.
"""
import pytest


@pytest.fixture(scope="session")
def _decode_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("decode-cache")


@pytest.fixture(autouse=True)
def _no_network_by_default(monkeypatch, _decode_cache):
    monkeypatch.setenv("LORSP_OFFLINE", "1")
    monkeypatch.setenv("LORSP_DECODE_CACHE", str(_decode_cache))
