"""The training loop's parts: one epoch, one optimisation step (Eqs. 10–12), and the evaluation on a test set."""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from .. import distributed as distrib
from .building import freeze_backbone_mode
from .config import DivergenceError
from .devices import autocast
from .progress import progress_bar


def train_epoch(step_model, loader, optimizer, scheduler, params, config, device, amp_dtype, ctx, epoch,
                 faults, progress, on_batch_end, first_step=0, loss_trace=None) -> dict[str, float]:
    """One epoch of optimisation steps. ``first_step``: the steps the run made before this epoch; the epoch
    ends early once the run has made ``config.max_steps``; ``loss_trace`` (a list) receives the loss of each of
    the run's first ``config.trace_steps`` steps (the mean over processes)."""
    loss_sum = correct = count = 0.0
    steps = 0
    start = time.perf_counter()
    bar = progress_bar(loader, progress, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False)
    sleep = float(faults.get("sleep_per_batch", 0) or 0)
    for step, (x, y) in enumerate(bar):
        x = x.to(device, non_blocking=True)
        y = torch.as_tensor(y).to(device, non_blocking=True)
        if device.type == "cuda" and config.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        loss_value, logits = train_step(step_model, x, y, optimizer, scheduler, params, config, device, amp_dtype,
                                         epoch, step, faults.get("nonfinite_loss_at"))
        steps += 1
        if loss_trace is not None and first_step + step < config.trace_steps:
            loss_trace.append(_mean_over_ranks(loss_value, ctx, device))
        n = y.shape[0]
        loss_sum += loss_value * n
        correct += float((logits.detach().argmax(1) == y).sum())
        count += n
        if progress:
            elapsed = max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(loss=f"{loss_sum / count:.4f}", acc=f"{correct / count:.3f}",
                            img_s=f"{count * ctx.world_size / elapsed:.0f}")
        if on_batch_end is not None:
            on_batch_end(epoch, step, loss_value)
        if sleep:
            time.sleep(sleep)
        if config.max_steps is not None and first_step + steps >= config.max_steps:
            break
    seconds = time.perf_counter() - start
    loss_sum, correct, count = distrib.all_reduce_sums([loss_sum, correct, count], ctx, device)
    return {"train_loss": loss_sum / max(count, 1), "train_accuracy": correct / max(count, 1),
            "train_images": int(count), "train_steps": steps, "train_seconds": seconds,
            "images_per_second": count / max(seconds, 1e-9), "lr": optimizer.param_groups[0]["lr"]}


def train_step(step_model, x, y, optimizer, scheduler, params, config, device, amp_dtype, epoch, step,
                nonfinite_loss_at=None) -> tuple[float, torch.Tensor]:
    """One optimisation step (Eqs. 10–12, cross-entropy, SGD, the schedule); returns ``(loss, logits)``; a
    non-finite loss raises :class:`DivergenceError`."""
    with autocast(device, amp_dtype):
        logits = step_model(x)
    loss = F.cross_entropy(logits.float(), y)
    if nonfinite_loss_at is not None and [epoch, step] == list(nonfinite_loss_at):
        loss = loss * float("nan")
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        raise DivergenceError(
            f"non-finite training loss ({loss_value}) at epoch {epoch}, step {step} (method "
            f"{config.method!r}, lr {config.lr}); the run stopped, its last good checkpoint is kept. "
            "Try a lower --lr or --max-grad-norm.")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    return loss_value, logits


def _mean_over_ranks(value: float, ctx: distrib.DistContext, device) -> float:
    if ctx.world_size == 1:
        return value
    return distrib.all_reduce_sums([value], ctx, device)[0] / ctx.world_size


@torch.inference_mode()
def evaluate(model, loader, device, amp_dtype=None, ctx=None, logit_indices=None, prompt_stats=True,
             channels_last=False, progress=False, features_mode=False) -> dict[str, float | None]:
    """Test loss and accuracy, and the prompt's mean firing rate and sparsity over the images
    (``prompter.stats``; None where the prompter has no such statistic).

    With ``logit_indices`` (ImageNet-A/R: their 200 of the 1,000 classes) only those logits are scored and a
    label ``i`` means the class of logit ``logit_indices[i]``.
    """
    ctx = ctx or distrib.DistContext()
    was_training = model.training
    model.eval()
    prompter = None if features_mode else getattr(model, "prompter", None)
    loss_sum = correct = count = 0.0
    fire_sum = sparse_sum = 0.0
    fire_n = sparse_n = 0.0
    if logit_indices is not None:
        logit_indices = logit_indices.to(device)
    for x, y in progress_bar(loader, progress, desc="eval", unit="batch", leave=False):
        x = x.to(device, non_blocking=True)
        y = torch.as_tensor(y).to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            logits = model(x).float()
        if logit_indices is not None:
            logits = logits[:, logit_indices]
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += float((logits.argmax(1) == y).sum())
        count += y.shape[0]
        if prompt_stats and prompter is not None and hasattr(prompter, "stats"):
            stats = prompter.stats(x)
            if stats.get("firing_rate") is not None:
                fire_sum += float(stats["firing_rate"].float().sum())
                fire_n += stats["firing_rate"].numel()
            if stats.get("sparsity") is not None:
                sparse_sum += float(stats["sparsity"].float().sum())
                sparse_n += stats["sparsity"].numel()
    loss_sum, correct, count, fire_sum, fire_n, sparse_sum, sparse_n = distrib.all_reduce_sums(
        [loss_sum, correct, count, fire_sum, fire_n, sparse_sum, sparse_n], ctx, device)
    model.train(was_training)
    freeze_backbone_mode(model)
    return {"test_loss": loss_sum / max(count, 1), "test_accuracy": correct / max(count, 1),
            "test_images": int(count),
            "firing_rate": fire_sum / fire_n if fire_n else None,
            "sparsity": sparse_sum / sparse_n if sparse_n else None}
