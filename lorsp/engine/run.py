"""One training run, from its config to its record: :func:`train` and the steps of :class:`Run`."""
from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .. import distributed as distrib
from ..checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ..results import file_sha256, git_commit, host_info, to_jsonable, versions, write_record
from .building import (backbone_fingerprint, build_datasets, build_optimizer, build_run_model, build_scheduler,
                       count_skipped, freeze_backbone_mode, logit_indices_of, trainable_parameters, trainable_state)
from .config import PROMPT_WEIGHTS_NAME, RECORD_NAME, TrainConfig, check_resumable
from .describe import describe_model, splits_provenance
from .devices import device_name, resolve_amp_dtype, resolve_device
from .faults import InjectedFault, read_fault_injection
from .features import HeadOnly, cached_features
from .gates import plan_prompter
from .label_mapping import label_mapping_due, update_label_mapping
from .loaders import choose_loader, device_loader, worker_init
from .loop import evaluate, train_epoch
from .progress import progress_bar
from .sampling import EpochSampler, mix_seed, seed_everything
from .saving import save_prompt_weights


def train(config: TrainConfig, progress: bool | None = None,
          on_epoch_end: Callable[[int, dict], None] | None = None,
          on_batch_end: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Run one training run and return its record (see :mod:`lorsp.results`).

    ``progress``: tqdm bars (None: only when stderr is a terminal). ``on_epoch_end(epoch, metrics)`` runs
    after each epoch's checkpoint; ``on_batch_end(epoch, step, loss)`` after each step (hooks for tests and
    notebooks; an exception there stops the run like an interruption would).
    """
    config.validate()
    faults = read_fault_injection(config)
    device_pref = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    ctx = distrib.init_from_env(device_pref.split(":")[0])
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    cudnn_before = torch.backends.cudnn.benchmark
    try:
        device = resolve_device(config.device, ctx)
        if progress is None:
            progress = sys.stderr.isatty()
        progress = bool(progress) and ctx.is_main
        if config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        return _run(config, ctx, device, progress, faults, on_epoch_end, on_batch_end)
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        torch.backends.cudnn.benchmark = cudnn_before
        distrib.cleanup(ctx)


def _run(config: TrainConfig, ctx: distrib.DistContext, device: torch.device, progress: bool, faults: dict,
         on_epoch_end, on_batch_end) -> dict[str, Any]:
    """The steps of one run (:class:`Run`); a failure after the data were built still writes a record."""
    run = Run(config, ctx, device, progress, faults)
    checkpoint = run.open_checkpoint()
    try:
        run.build_data()
        run.build_model()
        run.build_loaders()
        run.resume(checkpoint)
        run.epoch_loop(on_epoch_end, on_batch_end)
        return run.complete()
    except Exception as error:
        if isinstance(error, InjectedFault):
            raise  # a simulated kill leaves no record, like a real one
        run.fail(error)
        raise


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class Run:
    """One training run, step by step (:func:`_run`): open the run directory, build the data, the model and the
    loaders, resume, the epoch loop, finish. Each step sets the attributes the later ones read, and fills in
    :attr:`record`."""

    def __init__(self, config: TrainConfig, ctx: distrib.DistContext, device: torch.device, progress: bool,
                 faults: dict):
        self.config, self.ctx, self.device, self.progress, self.faults = config, ctx, device, progress, faults
        self.started, self.t0 = time.time(), time.perf_counter()
        self.run_dir = Path(config.output) if config.output else None
        self.metrics: list[dict[str, Any]] = []
        self.loss_trace: list[float] = []
        self.start_epoch = self.steps_done = 0
        self.cache_seconds = None
        self.record: dict[str, Any] = {
            "run_id": uuid.uuid4().hex[:12], "status": "running", "reason": None, "config": config.to_dict(),
            "versions": versions(), "git_commit": git_commit(), "device": str(device),
            "device_name": device_name(device), "world_size": ctx.world_size, "started_at": _utc(self.started),
            **host_info(),
        }
        if faults:
            self.record["fault_injection"] = faults  # test hooks in effect (config or LORSP_FAULT_INJECTION)

    def open_checkpoint(self) -> dict | None:
        """The checkpoint to resume from (None: start from the beginning); a run directory that already holds
        one without ``resume``, or a checkpoint of another config, is a ValueError."""
        config, run_dir = self.config, self.run_dir
        if config.resume:
            try:
                checkpoint = load_checkpoint(run_dir)
            except FileNotFoundError:
                return None  # nothing finished yet: start from the beginning
            check_resumable(checkpoint["config"], config, run_dir)
            return checkpoint
        if run_dir is not None and self.ctx.is_main and (run_dir / "checkpoint.pt").exists():
            raise ValueError(f"{run_dir} already holds a checkpoint; pass --resume to continue it, or choose "
                             "another --output directory")
        return None

    def build_data(self) -> None:
        """The train and test datasets (seeded by the run's seed), described in the record."""
        config = self.config
        seed_everything(config.seed)
        train_set, self.val_set, test_set = build_datasets(config, with_val=True)
        self.num_classes = getattr(train_set, "num_classes", None) or len(train_set.classes)
        self.record["data"] = {
            "dataset": config.dataset, "n_train": len(train_set), "n_test": len(test_set),
            "num_classes": self.num_classes, "skipped_train": count_skipped(train_set),
            "skipped_test": count_skipped(test_set),
            "skipped": count_skipped(train_set) + count_skipped(test_set),
            "provenance": splits_provenance(train_set, test_set, config, self.val_set)}
        if self.val_set is not None:
            self.record["data"]["n_val"] = len(self.val_set)
        if len(train_set) == 0 or len(test_set) == 0:
            raise ValueError(f"dataset {config.dataset!r} has {len(train_set)} train and {len(test_set)} test "
                             "images; both must be non-empty")
        self.train_set, self.test_set = train_set, test_set

    def build_model(self) -> None:
        """Backbone, prompter and head on the device (seeded by the run's seed), described in the record."""
        config, record, device = self.config, self.record, self.device
        seed_everything(config.seed)
        model, info = build_run_model(config, self.num_classes)
        describe_model(record, model, info, config)
        model.to(device)
        if device.type == "cuda" and config.channels_last:
            model.to(memory_format=torch.channels_last)
        self.amp_dtype = resolve_amp_dtype(config.amp, device)
        record["amp"] = str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else None
        self.params = trainable_parameters(model)
        record["trainable_params"] = sum(p.numel() for p in self.params)
        record["backbone_fingerprint"] = backbone_fingerprint(model)
        self.model, self.info = model, info

    def build_loaders(self) -> None:
        """The train and test loaders: over the images (a DataLoader, or the decode-once device loader) or, for
        linear probing, over the frozen backbone's features computed once."""
        config, ctx, model = self.config, self.ctx, self.model
        head = getattr(model, "head", None)
        self.use_cache = (config.is_linear_probe and config.cache_features != "off"
                          and getattr(model, "prompter", None) is None and config.head == "linear"
                          and hasattr(model, "features") and isinstance(head, nn.Module))
        self.record["features_cached"] = bool(self.use_cache)
        if config.batch_size % ctx.world_size:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of processes "
                             f"({ctx.world_size})")
        batch = config.batch_size // ctx.world_size
        eval_batch = max(1, (config.eval_batch_size or 2 * config.batch_size) // ctx.world_size)
        self.record["eval_batch_size"] = eval_batch * ctx.world_size
        if self.use_cache:
            train_data, test_data = self._cached_feature_sets()
            self.step_module = self.eval_module = HeadOnly(head)
            loader_kw = dict(num_workers=0)
        else:
            train_data, test_data = self.train_set, self.test_set
            self.step_module = self.eval_module = model
            loader_kw = dict(num_workers=config.num_workers, pin_memory=self.device.type == "cuda",
                             worker_init_fn=worker_init, persistent_workers=False)
        loader = "dataloader" if self.use_cache else choose_loader(config.loader, self.device, self.train_set,
                                                                   self.test_set)
        self.record["loader"] = loader
        self.train_sampler = EpochSampler(len(train_data), config.seed, True, ctx.rank, ctx.world_size)
        test_sampler = EpochSampler(len(test_data), config.seed, False, ctx.rank, ctx.world_size)
        if loader == "device":
            tb = time.perf_counter()
            self.train_loader = device_loader(self.train_set, self.train_sampler, batch, config.image_size,
                                               self.device)
            self.test_loader = device_loader(self.test_set, test_sampler, eval_batch, config.image_size, self.device,
                                              draw_like_dataloader=True)  # as the test DataLoader (no generator)
            self.record["loader_decode_seconds"] = time.perf_counter() - tb
        else:
            self.train_loader = DataLoader(train_data, batch_size=batch, sampler=self.train_sampler,
                                           generator=torch.Generator().manual_seed(config.seed), **loader_kw)
            self.test_loader = DataLoader(test_data, batch_size=eval_batch, sampler=test_sampler, **loader_kw)
        self.val_loader = self._val_loader(loader, eval_batch, loader_kw)
        self.steps_per_epoch = len(self.train_loader)
        self.ddp_module = distrib.wrap_ddp(self.step_module, ctx, self.device)
        plan_prompter(model, config.epochs * self.steps_per_epoch, self.device, self.record)

    def _val_loader(self, loader: str, eval_batch: int, loader_kw: dict):
        """The loader of the validation split (``val_per_class``), built as the test loader is; None without one."""
        if self.val_set is None:
            return None
        data = self.val_set
        if self.use_cache:
            args = (self.config, self.info, self.device, self.amp_dtype, self.ctx, self.progress, self.run_dir)
            features, labels = cached_features(self.model, self.val_set, "val", *args)
            data = TensorDataset(features, labels.to(features.device))
        sampler = EpochSampler(len(data), self.config.seed, False, self.ctx.rank, self.ctx.world_size)
        if loader == "device":
            return device_loader(self.val_set, sampler, eval_batch, self.config.image_size, self.device)
        return DataLoader(data, batch_size=eval_batch, sampler=sampler, **loader_kw)

    def _cached_feature_sets(self):
        """Linear probing: the frozen backbone's features of the train and test images, computed once."""
        args = (self.config, self.info, self.device, self.amp_dtype, self.ctx, self.progress, self.run_dir)
        self.model.eval()
        tc = time.perf_counter()
        train_feats, train_labels = cached_features(self.model, self.train_set, "train", *args)
        test_feats, test_labels = cached_features(self.model, self.test_set, "test", *args)
        self.cache_seconds = time.perf_counter() - tc
        return (TensorDataset(train_feats, train_labels.to(train_feats.device)),
                TensorDataset(test_feats, test_labels.to(test_feats.device)))

    def resume(self, checkpoint: dict | None) -> None:
        """The optimizer and schedule, and with a checkpoint its state: trainable weights, optimizer, schedule,
        random state, metrics and loss trace, after its last complete epoch."""
        config, model, record = self.config, self.model, self.record
        self.optimizer = build_optimizer(config, model, self.params)
        self.scheduler = build_scheduler(config, self.optimizer, self.steps_per_epoch)
        record["steps_per_epoch"] = self.steps_per_epoch
        if checkpoint is None:
            return
        fingerprint = record["backbone_fingerprint"]
        if abs(checkpoint.get("backbone_fingerprint", fingerprint) - fingerprint) > 1e-6 * max(1.0, abs(fingerprint)):
            raise ValueError(f"cannot resume {self.run_dir}: the backbone weights differ from the checkpoint's "
                             "(another weights file or random init?)")
        expected = set(trainable_state(model))
        missing, unexpected = model.load_state_dict(checkpoint["model"], strict=False)
        missing = [k for k in missing if k in expected]
        if unexpected or missing:
            raise ValueError(f"cannot resume {self.run_dir}: the checkpoint does not fit the model (keys not in the "
                             f"model: {unexpected[:5]}; model keys not in the checkpoint: {missing[:5]})")
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        set_rng_state(checkpoint["rng"])
        self.metrics = list(checkpoint["metrics"])
        self.start_epoch = int(checkpoint["epoch"])
        self.steps_done = int(checkpoint.get("steps_completed", self.start_epoch * self.steps_per_epoch))
        self.loss_trace = list(checkpoint.get("loss_trace", []))
        record["resumed_from_epoch"] = self.start_epoch
        record["run_id"] = checkpoint.get("run_id", record["run_id"])

    def epoch_loop(self, on_epoch_end, on_batch_end) -> None:
        """Train the remaining epochs; evaluate where due (:meth:`evaluation_due`); checkpoint each complete
        epoch; stop after ``max_steps`` optimisation steps."""
        config = self.config
        epoch_bar = progress_bar(range(self.start_epoch + 1, config.epochs + 1), self.progress, desc="epochs",
                          unit="epoch", initial=self.start_epoch, total=config.epochs)
        for epoch in epoch_bar:
            te = time.perf_counter()
            row = {"epoch": epoch, **self.train_epoch(epoch, on_batch_end)}
            stopped = config.max_steps is not None and self.steps_done >= config.max_steps
            if stopped or self.evaluation_due(epoch):
                row.update(self.evaluate())
            row["epoch_seconds"] = time.perf_counter() - te
            self.metrics.append(to_jsonable(row))
            if row["train_steps"] == self.steps_per_epoch:  # a complete epoch (max_steps may end one early)
                self.save_checkpoint(epoch)
            distrib.barrier(self.ctx)
            if self.progress:
                accuracy = row.get("test_accuracy")
                epoch_bar.set_postfix(test_acc="–" if accuracy is None else f"{accuracy:.3f}",
                                      loss=f"{row['train_loss']:.4f}")
            if on_epoch_end is not None:
                on_epoch_end(epoch, dict(row))
            if self.faults.get("raise_after_epoch") == epoch:
                raise InjectedFault(f"fault injection: interrupted after epoch {epoch}")
            if stopped:
                self.record["stopped_at_max_steps"] = True
                break

    def evaluation_due(self, epoch: int) -> bool:
        """After every ``eval_every``-th epoch (1-based) and after the last."""
        return epoch % self.config.eval_every == 0 or epoch == self.config.epochs

    def train_epoch(self, epoch: int, on_batch_end) -> dict[str, Any]:
        """One epoch; everything random in it comes from (seed, epoch, rank): exact resume, any world size."""
        config, ctx = self.config, self.ctx
        seed_everything(mix_seed(config.seed, epoch, ctx.rank) % 2**31)
        self.train_sampler.set_epoch(epoch)
        if isinstance(self.train_loader, DataLoader):
            self.train_loader.generator.manual_seed(mix_seed(config.seed, epoch, 31))  # worker seeds of this epoch
        if not self.use_cache and label_mapping_due(self.model, config, epoch):
            update_label_mapping(self.model, self.train_set, config, self.device, self.amp_dtype, epoch, ctx,
                                  self.progress, bank=getattr(self.train_loader, "bank", None))
        self.step_module.train()
        freeze_backbone_mode(self.model)
        row = train_epoch(self.ddp_module, self.train_loader, self.optimizer, self.scheduler, self.params, config,
                           self.device, self.amp_dtype, ctx, epoch, self.faults, self.progress, on_batch_end,
                           first_step=self.steps_done, loss_trace=self.loss_trace)
        self.steps_done += row["train_steps"]
        return row

    def evaluate(self) -> dict[str, Any]:
        """Test metrics of the model as it is now (:func:`evaluate`)."""
        config, use_cache = self.config, self.use_cache
        options = dict(channels_last=self.device.type == "cuda" and config.channels_last and not use_cache,
                       features_mode=use_cache)
        metrics = evaluate(self.eval_module, self.test_loader, self.device, self.amp_dtype, self.ctx,
                           logit_indices_of(self.test_set), **options)
        if self.val_loader is not None:  # the validation split of val_per_class: the search's criterion
            val = evaluate(self.eval_module, self.val_loader, self.device, self.amp_dtype, self.ctx,
                           logit_indices_of(self.val_set), prompt_stats=False, **options)
            metrics.update(val_loss=val["test_loss"], val_accuracy=val["test_accuracy"], val_images=val["test_images"])
        return metrics

    def save_checkpoint(self, epoch: int) -> None:
        if self.run_dir is None or not self.ctx.is_main:
            return
        save_checkpoint(self.run_dir, {
            "epoch": epoch, "model": trainable_state(self.model), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "metrics": self.metrics,
            "config": self.config.to_dict(), "run_id": self.record["run_id"],
            "backbone_fingerprint": self.record["backbone_fingerprint"], "num_classes": self.num_classes,
            "steps_completed": self.steps_done, "loss_trace": self.loss_trace})

    def complete(self) -> dict[str, Any]:
        """The completed run's record (and its prompt weights, with a run directory)."""
        self.record["status"] = "completed"
        if self.run_dir is not None and self.ctx.is_main:
            weights = save_prompt_weights(self.model, self.run_dir / PROMPT_WEIGHTS_NAME, self.config)
            self.record["prompt_weights"] = str(weights)
            if weights is not None:  # the record vouches for its prompt file (lorsp.results.check_prompt_file)
                self.record["prompt_sha256"] = file_sha256(weights)
        return self.finish()

    def fail(self, error: Exception) -> None:
        """Record a failed run; failures before the data were built are configuration errors: no record."""
        self.record["status"] = "failed"
        self.record["reason"] = f"{type(error).__name__}: {error}"
        self.cache_seconds = None
        if "data" in self.record:
            self.finish()

    def finish(self) -> dict[str, Any]:
        """The record's summary of the epochs (test metrics from the last evaluated one), written atomically."""
        record, metrics = self.record, self.metrics
        record["metrics"] = metrics  # per-epoch rows (config "epochs" is the planned count)
        evaluated = [m for m in metrics if m.get("test_accuracy") is not None]
        final = evaluated[-1] if evaluated else {}
        accuracies = [m["test_accuracy"] for m in evaluated]
        record["evaluated_epochs"] = [m["epoch"] for m in evaluated]
        record["final_accuracy"] = final.get("test_accuracy")
        record["best_accuracy"] = max(accuracies) if accuracies else None
        record["best_epoch"] = evaluated[accuracies.index(max(accuracies))]["epoch"] if accuracies else None
        record["final_test_loss"] = final.get("test_loss")
        if self.config.val_per_class:
            record["final_val_accuracy"] = final.get("val_accuracy")
        record["final_train_loss"] = metrics[-1].get("train_loss") if metrics else None
        record["firing_rate"] = final.get("firing_rate")
        record["sparsity"] = final.get("sparsity")
        record["epochs_completed"] = len(metrics)
        record["steps_completed"] = self.steps_done
        record["loss_trace"] = list(self.loss_trace)
        record["timings"] = {"total_seconds": time.perf_counter() - self.t0,
                             "epoch_seconds": [m.get("epoch_seconds") for m in metrics],
                             "feature_cache_seconds": self.cache_seconds}
        record["finished_at"] = _utc(time.time())
        record["run_dir"] = str(self.run_dir) if self.run_dir is not None else None
        record = to_jsonable(record)
        if self.ctx.is_main:
            if self.run_dir is not None:
                record["record_path"] = str(write_record(record, self.run_dir, name=RECORD_NAME))
            if self.config.results_dir:
                from ..data.provenance import portable_record
                record["results_path"] = str(write_record(portable_record(record), self.config.results_dir))
        return record
