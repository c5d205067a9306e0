"""Fetching the smoke chapters' inputs (:mod:`lorsp.data.fetch`), against a local HTTP server.

The server (``http.server`` in a thread on 127.0.0.1) serves what the real hosts serve, in their real formats:
a tiny ``cifar-10-python.tar.gz`` (pickled batches ``data_batch_1..5``, ``test_batch``, ``batches.meta``, 2
images per class and batch) that torchvision's own download fetches and md5-checks, and a random-init
``mobilenetv2_100`` as ``model.safetensors`` behind the Hugging Face hub's ``resolve`` endpoint (with the
``X-Repo-Commit``/``ETag`` headers huggingface_hub reads) that timm's ``pretrained=True`` fetches. The offline
paths: a refused connection (a port nobody listens on), a host that never answers, a download that stalls,
and ``LORSP_OFFLINE=1``/``HF_HUB_OFFLINE=1``, where no socket may be opened at all.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import pickle
import socket
import tarfile
import threading
import time

import numpy as np
import pytest
import torch

from lorsp.data import describe_data
from lorsp.data import fetch

CIFAR_PER_BATCH = 20   # 2 images per class in each of the 5 train batches and the test batch
REPO_COMMIT = "0123456789abcdef0123456789abcdef01234567"


# ---------------------------------------------------------------------------------------------------------
# what the hosts serve
# ---------------------------------------------------------------------------------------------------------
def _cifar_archive() -> tuple[bytes, dict[str, str]]:
    """A cifar-10-python.tar.gz in the real format, and the md5 of each of its files."""
    rng = np.random.default_rng(0)
    files = {}
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        labels = [i % 10 for i in range(CIFAR_PER_BATCH)]
        files[name] = pickle.dumps({"batch_label": f"tiny {name}", "labels": labels,
                                    "data": rng.integers(0, 256, (CIFAR_PER_BATCH, 3072), dtype=np.uint8),
                                    "filenames": [f"img_{i}.png" for i in range(CIFAR_PER_BATCH)]})
    files["batches.meta"] = pickle.dumps({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                                          "frog", "horse", "ship", "truck"],
                                          "num_cases_per_batch": CIFAR_PER_BATCH, "num_vis": 3072})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, payload in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue(), {name: hashlib.md5(payload).hexdigest() for name, payload in files.items()}


def _weights_file() -> tuple[bytes, dict]:
    import timm
    from safetensors.torch import save

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in timm.create_model("mobilenetv2_100", pretrained=False).state_dict().items()}
    return save(state), state


class _Hosts(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    requests: list[str] = []
    stall: set[str] = set()

    def log_message(self, *args):
        pass

    def _headers(self) -> bytes | None:
        self.requests.append(f"{self.command} {self.path}")
        payload = self.files.get(self.path)
        if payload is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Type", "application/octet-stream")
        if "/resolve/" in self.path:  # the hub's resolve endpoint
            self.send_header("X-Repo-Commit", REPO_COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(payload).hexdigest()}"')
        self.end_headers()
        return payload

    def do_HEAD(self):
        self._headers()

    def do_GET(self):
        payload = self._headers()
        if payload is None:
            return
        if self.path in self.stall:  # half the file, then silence
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            time.sleep(6)
            return
        self.wfile.write(payload)


@pytest.fixture(scope="module")
def served():
    archive, md5s = _cifar_archive()
    weights, state = _weights_file()
    _Hosts.files = {"/cifar/cifar-10-python.tar.gz": archive,
                    "/timm/mobilenetv2_100.ra_in1k/resolve/main/model.safetensors": weights}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hosts)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield dict(port=server.server_address[1], archive=archive, md5s=md5s, state=state)
    server.shutdown()
    server.server_close()


def _online(monkeypatch):
    """No offline switch, whatever the caller's environment says: ``LORSP_OFFLINE`` and ``HF_HUB_OFFLINE`` unset,
    and the hub's own flag (read once, when huggingface_hub is imported) off."""
    from huggingface_hub import constants

    monkeypatch.delenv("LORSP_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def _point_at(monkeypatch, tmp_path, port: int, md5s: dict | None = None, archive: bytes | None = None):
    """torchvision's CIFAR10 and the Hugging Face hub (timm's source) pointed at 127.0.0.1:port."""
    from huggingface_hub import constants
    from torchvision.datasets import CIFAR10

    base = f"http://127.0.0.1:{port}"
    _online(monkeypatch)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(constants, "ENDPOINT", base)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", base + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(CIFAR10, "url", f"{base}/cifar/cifar-10-python.tar.gz")
    if md5s is not None:
        monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(archive).hexdigest())
        monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5s[f"data_batch_{i}"]] for i in range(1, 6)])
        monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5s["test_batch"]]])
        monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5s["batches.meta"]})
    monkeypatch.setattr(fetch, "_UNREACHABLE", {})


def _leftovers(root):
    """Anything half-done in the data root: temporary folders, partial or archive files."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.name.startswith(".") or p.name.endswith((".part", ".incomplete", ".tar.gz")))


# ---------------------------------------------------------------------------------------------------------
# online: fetched into the data root, seen by `lorsp data list`, no fallback
# ---------------------------------------------------------------------------------------------------------
def test_fetch_fills_the_data_root_and_the_smoke_setup_has_no_fallback(tmp_path, monkeypatch, served, capsys):
    from lorsp import experiments as ex
    from lorsp.backbones import create_backbone
    from lorsp.cli import main

    _point_at(monkeypatch, tmp_path, served["port"], served["md5s"], served["archive"])
    root = tmp_path / "data"
    _Hosts.requests.clear()
    inputs = fetch.ensure_smoke_inputs(root)
    assert [(r.name, r.status) for r in inputs.results] == [
        ("cifar10", "fetched"), ("tiny-imagenet", "unavailable"), ("mobilenetv2 weights", "fetched")]
    assert inputs.cifar10.location == "cifar-10-batches-py"
    assert inputs.weights.location == "weights/mobilenetv2_100.ra_in1k.safetensors"
    assert any("cifar-10-python.tar.gz" in r for r in _Hosts.requests)
    assert any("/resolve/main/model.safetensors" in r for r in _Hosts.requests)
    assert _leftovers(root) == []  # no temporary folder, no archive, no partial file
    shown = capsys.readouterr().err
    assert "fetching CIFAR-10" in shown and "100%" in shown   # lorsp's line and torchvision's progress bar

    rows = {row["name"]: row for row in describe_data(root)}   # what `lorsp data list` shows
    assert rows["cifar10"]["available"] and rows["cifar10"]["train"] == 5 * CIFAR_PER_BATCH
    assert rows["cifar10"]["test"] == CIFAR_PER_BATCH
    assert rows["mobilenetv2_100.ra_in1k.safetensors"]["kind"] == "weights"
    assert main(["data", "list", "--root", str(root)]) == 0
    assert "mobilenetv2_100.ra_in1k.safetensors" in capsys.readouterr().out

    model, info = create_backbone("mobilenetv2", data_root=root)   # found in the data root, exactly as served
    assert info.weights_source == "file:mobilenetv2_100.ra_in1k.safetensors"
    assert info.mean == pytest.approx((0.485, 0.456, 0.406))
    served_state = served["state"]
    assert all(torch.equal(value, served_state[key]) for key, value in model.state_dict().items())

    setup = ex.scale_setup("smoke", data_root=root)
    assert setup.fallbacks == [] and not setup.random_init and setup.real_data
    assert list(setup.datasets) == ["cifar10"]
    assert "mobilenetv2_100.ra_in1k.safetensors" in setup.weights_note

    _Hosts.requests.clear()   # a second build: a no-op, not one request
    again = fetch.ensure_smoke_inputs(root)
    assert [r.status for r in again.results] == ["present", "unavailable", "present"] and _Hosts.requests == []


def test_a_stalled_download_fails_over_and_leaves_nothing(tmp_path, monkeypatch, served):
    _point_at(monkeypatch, tmp_path, served["port"], served["md5s"], served["archive"])
    monkeypatch.setenv(fetch.READ_TIMEOUT_VAR, "1")
    monkeypatch.setattr(_Hosts, "stall", {"/cifar/cifar-10-python.tar.gz"})
    root = tmp_path / "data"
    start = time.perf_counter()
    result = fetch.fetch_cifar10(root, progress=False)
    assert time.perf_counter() - start < 5.5
    assert result.status == "unavailable" and "download from 127.0.0.1 failed" in result.reason
    assert "lorsp data import PATH" in result.reason
    assert not any(root.iterdir())   # no partial archive, no half-extracted batches


# ---------------------------------------------------------------------------------------------------------
# offline: quick, bannered fallback that says why
# ---------------------------------------------------------------------------------------------------------
def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]   # closed on exit: nobody listens there


def test_a_refused_connection_falls_back_quickly_with_the_reason(tmp_path, monkeypatch):
    from lorsp import experiments as ex

    _point_at(monkeypatch, tmp_path, _dead_port())
    root = tmp_path / "data"
    start = time.perf_counter()   # (_point_at imported torchvision and huggingface_hub: their import is not timed)
    inputs = fetch.ensure_smoke_inputs(root)
    setup = ex.scale_setup("smoke", data_root=root)
    assert time.perf_counter() - start < 5
    assert not inputs.has_cifar10 and not inputs.has_weights
    for result in (inputs.cifar10, inputs.weights):
        assert result.reason.startswith("no network: could not reach 127.0.0.1:")
        assert "(connection refused)" in result.reason
        assert result.reason.endswith("run `lorsp data import PATH` or connect and rebuild")
    assert list(setup.datasets) == ["synthetic"] and setup.backbones == ("efficientnet_lite0",)
    assert "CIFAR-10 was not fetched: no network: could not reach 127.0.0.1" in setup.fallbacks[-2]
    assert "MobileNetV2's ImageNet weights were not fetched: no network" in setup.fallbacks[-1]
    assert setup.facts()["fallbacks"] == setup.fallbacks
    assert not root.exists() or _leftovers(root) == []


def test_a_host_that_never_answers_costs_the_connect_timeout_once(monkeypatch):
    _online(monkeypatch)
    monkeypatch.setattr(fetch, "_UNREACHABLE", {})
    monkeypatch.setenv(fetch.CONNECT_TIMEOUT_VAR, "0.5")
    calls = []

    def silent(address, timeout=None, *args, **kwargs):   # a name lookup or SYN that is never answered
        calls.append(address)
        time.sleep(30)

    monkeypatch.setattr(socket, "create_connection", silent)
    start = time.perf_counter()
    reason = fetch.network_obstacle("https://blackhole.invalid/x")
    assert time.perf_counter() - start < 2
    assert reason == "no network: could not reach blackhole.invalid:443 (no answer within 0.5 s)"
    assert fetch.network_obstacle("https://blackhole.invalid/y") == reason and len(calls) == 1  # remembered


@pytest.mark.parametrize("variable", ["LORSP_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_switch_opens_no_socket(tmp_path, monkeypatch, variable, capsys):
    from lorsp import experiments as ex
    from lorsp.cli import main

    monkeypatch.setattr(fetch, "_UNREACHABLE", {})
    monkeypatch.delenv("LORSP_OFFLINE", raising=False)
    monkeypatch.setenv(variable, "1")

    def no_network(*args, **kwargs):
        raise AssertionError(f"a socket was opened with {variable}=1: {args}")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    root = tmp_path / "data"
    start = time.perf_counter()
    inputs = fetch.ensure_smoke_inputs(root)
    setup = ex.scale_setup("smoke", data_root=root)
    assert time.perf_counter() - start < 5
    assert inputs.cifar10.reason.startswith(f"{variable}=1 is set, so nothing is downloaded")
    assert inputs.weights.reason.startswith(f"{variable}=1 is set")
    assert any(f"{variable}=1 is set" in sentence for sentence in setup.fallbacks)
    assert main(["data", "fetch", "--root", str(root)]) == 0   # `lorsp data fetch` says the same
    assert f"{variable}=1 is set" in capsys.readouterr().out
    assert not root.exists()


def test_lorsp_offline_refuses_the_hub_for_backbones(tmp_path, monkeypatch):
    """What a GPU script without network relies on: no silent download of other weights."""
    import timm

    from lorsp.backbones import WeightsUnavailableError, create_backbone

    monkeypatch.setenv("LORSP_OFFLINE", "1")
    real = timm.create_model

    def spy(name, pretrained=False, **kwargs):
        assert not pretrained, "timm's pretrained download was attempted under LORSP_OFFLINE=1"
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    with pytest.raises(WeightsUnavailableError, match=r"'mobilenetv2'.*LORSP_OFFLINE=1 forbids timm's download"):
        create_backbone("mobilenetv2", data_root=tmp_path)
    _, info = create_backbone("mobilenetv2", data_root=tmp_path, random_init=True)   # asked for: allowed
    assert info.weights_source == "random"


def test_present_inputs_need_no_network(tmp_path, monkeypatch):
    """A data root filled by `lorsp data import` (ImageFolder CIFAR-10, the TFLite weights): a no-op."""
    from lorsp.backbones import MOBILENETV2_FILE

    monkeypatch.delenv("LORSP_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("network used"))
    for split in ("train", "test"):
        (tmp_path / "cifar10" / split / "cat").mkdir(parents=True)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / MOBILENETV2_FILE).write_bytes(b"x")
    inputs = fetch.ensure_smoke_inputs(tmp_path)
    assert inputs.flags() == (True, False, True) and inputs.fallback_reasons() == []
    assert inputs.weights_note.endswith(f"(weights/{MOBILENETV2_FILE})")


def test_bad_timeout_setting_is_a_clear_error(monkeypatch):
    _online(monkeypatch)
    monkeypatch.setattr(fetch, "_UNREACHABLE", {})
    monkeypatch.setenv(fetch.CONNECT_TIMEOUT_VAR, "soon")
    with pytest.raises(ValueError, match="LORSP_FETCH_CONNECT_TIMEOUT must be a number of seconds, got 'soon'"):
        fetch.network_obstacle("http://127.0.0.1:9/")
