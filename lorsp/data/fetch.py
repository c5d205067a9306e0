"""Fetching what the smoke chapters need into the data root, where a network exists (``lorsp data fetch``).

The smoke scale (:func:`lorsp.experiments.scale_setup`) trains MobileNetV2 with ImageNet-1k weights on a few
real CIFAR-10 images. A data root filled by ``lorsp data import`` already has both; a connected reader's
fresh checkout has neither. :func:`ensure_smoke_inputs` then fetches them, with progress bars:

- **CIFAR-10** through torchvision's own download (``torchvision.datasets.CIFAR10(download=True)``: the
  official ``cifar-10-python.tar.gz``, md5-checked), leaving torchvision's ``cifar-10-batches-py/`` in the data
  root, which :func:`lorsp.data.build_dataset` reads as it reads the imported ``cifar10/{train,test}/`` folders;
- **MobileNetV2's ImageNet-1k weights** through timm (``timm.create_model("mobilenetv2_100.ra_in1k",
  pretrained=True)``: the Hugging Face hub, or its local cache), saved as
  ``weights/mobilenetv2_100.ra_in1k.safetensors`` with the file metadata (``architecture``, ``mean``, ``std``,
  ``source``) that :func:`lorsp.backbones.create_backbone` reads.

Tiny-ImageNet and the ImageNet sample images have no download that lorsp uses: they come only from
``lorsp data import``, and the chapters say so when they are missing.

Nothing here hangs or half-writes:

- ``LORSP_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) means no network at all: not one socket is opened, and the
  inputs that are missing are reported unavailable at once, with that reason.
  ``LORSP_OFFLINE=1`` also makes :func:`lorsp.backbones.create_backbone` refuse timm's hub download (and its
  cache) when the data root has no weights file: a clear :class:`~lorsp.backbones.WeightsUnavailableError`
  instead of other weights than the ones asked for.
- Otherwise each host is probed first (name lookup and a TCP connection, at most
  ``LORSP_FETCH_CONNECT_TIMEOUT`` = 3 s); a host that cannot be reached is remembered for the rest of the
  process, so a build whose chapters each ask costs the probe once.
- Downloads read with a timeout (``LORSP_FETCH_READ_TIMEOUT`` = 60 s without a byte ends one).
- Everything is written under a temporary ``.lorsp-fetch-*`` folder of the data root and renamed into place
  when complete; an interrupted fetch leaves no partial file under a real name (stale temporary folders are
  removed by the next fetch).

Any failure is not an error: the input is reported ``unavailable`` with a sentence that says why, and the
smoke chapters fall back, bannered, to synthetic images and random weights as before.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .registry import CIFAR_BATCHES, dataset_location
from .root import IMPORT_HINT, data_root

__all__ = ["FetchResult", "SmokeInputs", "ensure_smoke_inputs", "smoke_inputs_present", "offline_reason",
           "network_obstacle", "fetch_cifar10", "fetch_backbone_weights", "OFFLINE_VAR",
           "CONNECT_TIMEOUT_VAR", "READ_TIMEOUT_VAR", "SMOKE_BACKBONE", "CIFAR10_FOLDER"]

OFFLINE_VAR = "LORSP_OFFLINE"
CONNECT_TIMEOUT_VAR = "LORSP_FETCH_CONNECT_TIMEOUT"
READ_TIMEOUT_VAR = "LORSP_FETCH_READ_TIMEOUT"
SMOKE_BACKBONE = "mobilenetv2"
#: torchvision's CIFAR-10 folder, with the pickled batches (the registry's layout: lorsp.data.registry)
CIFAR10_FOLDER, CIFAR10_FILES = CIFAR_BATCHES["cifar10"]
_TEMP_PREFIX = ".lorsp-fetch-"
_UNREACHABLE: dict[tuple[str, int], str] = {}   # (host, port) → why, for the rest of the process
_TRUE = ("1", "true", "yes", "on")


@dataclass
class FetchResult:
    """One input of the smoke chapters: ``status`` is "present" (already in the data root), "fetched" (just
    downloaded into it) or "unavailable" (``reason`` says why); ``location`` is relative to the data root."""
    name: str
    status: str
    location: str | None = None
    reason: str = ""
    seconds: float = 0.0

    @property
    def available(self) -> bool:
        return self.status in ("present", "fetched")

    def to_dict(self) -> dict:
        return dict(name=self.name, status=self.status, location=self.location, reason=self.reason,
                    seconds=round(self.seconds, 2))


@dataclass
class SmokeInputs:
    """What the smoke scale can use from the data root, after :func:`ensure_smoke_inputs`."""
    root: Path
    cifar10: FetchResult
    tiny_imagenet: FetchResult
    weights: FetchResult
    results: list[FetchResult] = field(default_factory=list)

    @property
    def has_cifar10(self) -> bool:
        return self.cifar10.available

    @property
    def has_tiny_imagenet(self) -> bool:
        return self.tiny_imagenet.available

    @property
    def has_weights(self) -> bool:
        return self.weights.available

    def flags(self) -> tuple[bool, bool, bool]:
        """``(cifar10, tiny_imagenet, weights)``: which real inputs the smoke scale has."""
        return self.has_cifar10, self.has_tiny_imagenet, self.has_weights

    @property
    def weights_note(self) -> str:
        """The banner's words for the backbone's weights ("" when there are none)."""
        if not self.has_weights:
            return ""
        from ..backbones import MOBILENETV2_FILE

        name = Path(self.weights.location).name
        if name == MOBILENETV2_FILE:
            return f"MobileNetV2 (1.0, 224) ImageNet-1k weights from the data root (weights/{name})"
        fetched = " (fetched by timm from the Hugging Face hub)" if self.weights.status == "fetched" else ""
        return f"MobileNetV2 (1.0, 224) ImageNet-1k weights from the data root (weights/{name}){fetched}"

    def fallback_reasons(self) -> list[str]:
        """Why the smoke scale falls back, one sentence per input that would have avoided a fallback: the
        weights, and CIFAR-10 when there is no Tiny-ImageNet either. Empty when nothing falls back."""
        reasons = []
        if not self.has_cifar10 and not self.has_tiny_imagenet:
            reasons.append(f"CIFAR-10 was not fetched: {self.cifar10.reason}.")
        if not self.has_weights:
            reasons.append(f"MobileNetV2's ImageNet weights were not fetched: {self.weights.reason}.")
        return reasons


# ---------------------------------------------------------------------------------------------------------
# settings and the network probe
# ---------------------------------------------------------------------------------------------------------
def _seconds(var: str, default: float) -> float:
    text = os.environ.get(var, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{var} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"{var} must be a positive number of seconds, got {text!r}")
    return value


def offline_reason() -> str | None:
    """Why no network may be used (``LORSP_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``), or None."""
    for var in (OFFLINE_VAR, "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var}={os.environ[var].strip()} is set, so nothing is downloaded"
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None and getattr(hub, "HF_HUB_OFFLINE", False):
        return "the Hugging Face hub is in offline mode (HF_HUB_OFFLINE), so nothing is downloaded"
    return None


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"cannot tell the host of URL {url!r}")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def network_obstacle(url: str, timeout: float | None = None) -> str | None:
    """None when ``url``'s host accepts a TCP connection within ``timeout`` seconds (default
    ``LORSP_FETCH_CONNECT_TIMEOUT`` or 3), else a sentence that says why not. The name lookup runs inside the
    same time limit (in a helper thread), so a machine without a resolver cannot make this hang. A host that
    could not be reached stays unreachable for the rest of the process."""
    offline = offline_reason()
    if offline:
        return offline
    host, port = _host_port(url)
    if (host, port) in _UNREACHABLE:
        return _UNREACHABLE[(host, port)]
    timeout = _seconds(CONNECT_TIMEOUT_VAR, 3.0) if timeout is None else timeout
    outcome: list = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 — the reason is what we report
            outcome.append(error)

    worker = threading.Thread(target=probe, name=f"lorsp-probe-{host}", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if outcome and outcome[0] is None:
        return None
    error = outcome[0] if outcome else None
    if error is None:
        why = f"no answer within {timeout:g} s"
    elif isinstance(error, socket.gaierror):
        why = f"name lookup failed: {error.strerror or error}"
    elif isinstance(error, ConnectionRefusedError):
        why = "connection refused"
    elif isinstance(error, (socket.timeout, TimeoutError)):
        why = f"no answer within {timeout:g} s"
    else:
        why = f"{type(error).__name__}: {error}"
    reason = f"no network: could not reach {host}:{port} ({why})"
    _UNREACHABLE[(host, port)] = reason
    return reason


@contextlib.contextmanager
def _read_timeout(seconds: float):
    """Downloads that use the socket default (urllib without a timeout, as torchvision's) give up after
    ``seconds`` without data instead of waiting for ever."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


# ---------------------------------------------------------------------------------------------------------
# temporary folders in the data root
# ---------------------------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale_temporaries(root: Path) -> None:
    """Remove the temporary folders of fetches whose process has ended (interrupted fetches)."""
    if not root.is_dir():
        return
    for folder in root.glob(_TEMP_PREFIX + "*"):
        pid_text = folder.name.rsplit("-", 1)[-1]
        if folder.is_dir() and pid_text.isdigit() and not _pid_alive(int(pid_text)):
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _temporary_folder(root: Path, what: str):
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    folder = root / f"{_TEMP_PREFIX}{what}-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _say(message: str, progress: bool) -> None:
    if progress:
        print(f"lorsp: {message}", file=sys.stderr, flush=True)


def _quiet(progress: bool):
    """Without ``progress``, torchvision's and the hub's progress bars (tqdm, on stderr) are swallowed."""
    return contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())


# ---------------------------------------------------------------------------------------------------------
# what is present (the datasets' layouts are the registry's: lorsp.data.registry.dataset_location)
# ---------------------------------------------------------------------------------------------------------
def _weights_location(root: Path, backbone: str = SMOKE_BACKBONE) -> str | None:
    from ..backbones import local_weight_candidates, resolve_backbone

    found = next((p for p in local_weight_candidates(resolve_backbone(backbone), root) if p.is_file()), None)
    return found.relative_to(root).as_posix() if found is not None else None


def smoke_inputs_present(root=None) -> SmokeInputs:
    """What the smoke scale finds in the data root, without fetching anything (no network)."""
    base = data_root(root)
    found = []
    for name, locate, missing in (
            ("cifar10", lambda at: dataset_location("cifar10", at),
             f"not in the data root; import it with `{IMPORT_HINT}`"),
            ("tiny-imagenet", lambda at: dataset_location("tiny-imagenet", at),
             f"not in the data root and it has no download that lorsp uses; import it with `{IMPORT_HINT}`"),
            (f"{SMOKE_BACKBONE} weights", _weights_location,
             f"not in the data root; import a weights file with `{IMPORT_HINT}`")):
        location = locate(base)
        found.append(FetchResult(name, "present", location) if location else
                     FetchResult(name, "unavailable", None, missing))
    return SmokeInputs(base, *found, results=found)


# ---------------------------------------------------------------------------------------------------------
# fetching
# ---------------------------------------------------------------------------------------------------------
def _advice(reason: str) -> str:
    if reason.startswith("no network") or "failed" in reason or "could not" in reason:
        return f"{reason}; run `{IMPORT_HINT}` or connect and rebuild"
    return f"{reason}; run `{IMPORT_HINT}`, or unset it and rebuild with a network"


def fetch_cifar10(root=None, progress: bool = True) -> FetchResult:
    """CIFAR-10 into ``<root>/cifar-10-batches-py`` through torchvision's download (md5-checked), unless the
    data root has it already. Never raises for a network or download failure: the result says why."""
    base = data_root(root)
    location = dataset_location("cifar10", base)
    if location:
        return FetchResult("cifar10", "present", location)
    offline = offline_reason()
    if offline:  # before importing torchvision: offline costs nothing
        return FetchResult("cifar10", "unavailable", None, _advice(offline))
    from torchvision.datasets import CIFAR10

    obstacle = network_obstacle(CIFAR10.url)
    if obstacle:
        return FetchResult("cifar10", "unavailable", None, _advice(obstacle))
    start = time.perf_counter()
    host = _host_port(CIFAR10.url)[0]
    _say(f"fetching CIFAR-10 from {host} into the data root (torchvision, about 170 MB) ...", progress)
    try:
        with _temporary_folder(base, "cifar10") as folder, _read_timeout(_seconds(READ_TIMEOUT_VAR, 60.0)):
            with contextlib.redirect_stdout(io.StringIO()), _quiet(progress):  # (it prints temporary paths)
                CIFAR10(str(folder), train=True, download=True)
            CIFAR10(str(folder), train=False, download=False)  # both splits complete and md5-correct
            target = base / CIFAR10_FOLDER
            try:
                os.replace(folder / CIFAR10_FOLDER, target)
            except OSError:
                if dataset_location("cifar10", base) is None:   # not a concurrent fetch that finished first
                    raise
    except Exception as error:  # URLError, HTTPError, timeouts, RuntimeError (md5), OSError (disk)
        first = str(error).splitlines()[0][:200] if str(error) else ""
        return FetchResult("cifar10", "unavailable", None,
                           _advice(f"the download from {host} failed ({type(error).__name__}: {first})"),
                           time.perf_counter() - start)
    return FetchResult("cifar10", "fetched", dataset_location("cifar10", base), seconds=time.perf_counter() - start)


def hub_endpoint() -> str:
    try:
        from huggingface_hub import constants
    except ImportError:
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return constants.ENDPOINT


def fetch_backbone_weights(root=None, backbone: str = SMOKE_BACKBONE, progress: bool = True) -> FetchResult:
    """``backbone``'s pretrained weights into ``<root>/weights/<timm name>.safetensors`` through timm
    (``pretrained=True``: the Hugging Face hub or its cache), unless the data root has a weights file for it.
    The file carries the metadata ``create_backbone`` reads (architecture, mean, std, source). Never raises for
    a network or download failure: the result says why."""
    from ..backbones import timm_architecture, resolve_backbone

    base = data_root(root)
    label = f"{backbone} weights"
    location = _weights_location(base, backbone)
    if location:
        return FetchResult(label, "present", location)
    obstacle = offline_reason() or network_obstacle(hub_endpoint())
    if obstacle:
        return FetchResult(label, "unavailable", None, _advice(obstacle))
    spec = resolve_backbone(backbone)
    start = time.perf_counter()
    host = _host_port(hub_endpoint())[0]
    _say(f"fetching {spec.timm_name}'s pretrained weights from {host} into the data root (timm) ...", progress)
    try:
        import timm
        from safetensors.torch import save_file

        with _quiet(progress):
            model = timm.create_model(spec.timm_name, pretrained=True)
        cfg = model.pretrained_cfg
        metadata = {"architecture": timm_architecture(spec.timm_name), "create_kwargs": "{}",
                    "mean": json.dumps([float(v) for v in cfg["mean"]]),
                    "std": json.dumps([float(v) for v in cfg["std"]]),
                    "input_size": str(cfg.get("input_size", (3, 224, 224))[-1]),
                    "source": f"timm {spec.timm_name} pretrained weights "
                              f"(hub {cfg.get('hf_hub_id') or cfg.get('url')})"}
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        with _temporary_folder(base, "weights") as folder:
            staged = folder / f"{spec.timm_name}.safetensors"
            save_file(state, str(staged), metadata=metadata)
            target = base / "weights" / staged.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
    except Exception as error:  # hub errors (OSError subclasses), RuntimeError, disk errors
        first = str(error).splitlines()[0][:200] if str(error) else ""
        return FetchResult(label, "unavailable", None,
                           _advice(f"timm could not download them from {host} ({type(error).__name__}: {first})"),
                           time.perf_counter() - start)
    return FetchResult(label, "fetched", target.relative_to(base).as_posix(), seconds=time.perf_counter() - start)


def ensure_smoke_inputs(root=None, progress: bool = True) -> SmokeInputs:
    """Make the data root hold what the smoke chapters need, where that can be had: CIFAR-10 and MobileNetV2's
    ImageNet-1k weights are fetched when missing (see the module docstring); Tiny-ImageNet is only looked for.
    A no-op, with no network access, when the data root has them. Never raises for a network failure.
    ``progress``: lorsp's one-line messages and torchvision's and the hub's download bars, on stderr."""
    base = data_root(root)
    present = smoke_inputs_present(base)
    cifar = present.cifar10 if present.has_cifar10 else fetch_cifar10(base, progress)
    weights = present.weights if present.has_weights else fetch_backbone_weights(base, SMOKE_BACKBONE, progress)
    results = [cifar, present.tiny_imagenet, weights]
    return SmokeInputs(base, cifar, present.tiny_imagenet, weights, results=results)
