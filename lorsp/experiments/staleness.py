"""Are the committed run records still what the code trains? (issue 15: committed records stay true; issue 25,
item 6: records that are one experiment)

From the start of training: every run record keeps ``loss_trace``, the training loss of its first steps
(``TrainConfig.trace_steps``). :func:`replay_losses` re-runs the first ``steps`` steps of a record's run from
its config (CPU, deterministic) and returns their losses; :func:`stale_records` compares them with the records'
traces and names every record whose first steps the code no longer reproduces, so that it is retrained. A
record whose first steps need a pass over the whole training set before any step (LP with cached features,
ILM-VP's label mapping) is not replayed there.

From a trained state (every method family, LP and ILM-VP included): a prompt starting at δ = 0 (B = 0) hides
most of the prompter from the first steps, so :func:`check_trained` also rebuilds one committed record per
family with its ``prompt.safetensors`` (:func:`trained_run`), re-evaluates it on its whole test set and
compares the number of correct images with the record's ``final_accuracy`` exactly (:func:`reevaluate`; the
evaluation the run itself made, so this holds the forward pass of the trained prompter to the record), and
replays a few steps from that trained state (:func:`replay_from_trained`). What those steps must give cannot
come from the original run (its optimizer state is not committed), so it is measured once when the prompt file
is committed (:func:`record_replays`, ``python -m lorsp.experiments.staleness --record-replays results/desk
--out tests/data/trained_replays.json``, keyed by run key and the prompt file's sha256) and any later change of
the training step (loss, surrogate gradient, optimizer) is named.

One experiment: :func:`commit_problems` / :func:`chapter_commit_problems` name a chapter's records trained from a
checkout with uncommitted changes, or by different training code (``versions.lorsp_code``), for records of
schema ``lorsp.run/2`` (those of the grid run after this check existed).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Iterable

from .store import RecordStore, read_run_record

#: relative tolerance between a replayed loss and the recorded one (float sums over 1–2 threads differ by ~1e-6)
RTOL = 1e-4


class _Enough(Exception):
    """Raised by the step hook once the replay has its steps (the run stops there, before any evaluation)."""


def replayable(record: dict) -> bool:
    """Whether :func:`replay_losses` can re-run the first steps of ``record`` cheaply (see the module)."""
    config = record.get("config") or {}
    return bool(record.get("loss_trace")) and config.get("method") not in ("none", None) and \
        config.get("head") not in ("ilm", "flm")


def replay_losses(record: dict, steps: int, data_root=None) -> list[float]:
    """The training losses of the first ``steps`` steps of ``record``'s run, re-run now on the CPU."""
    from ..engine import TrainConfig, train
    config = TrainConfig.from_dict(dict(record["config"]))
    config = dataclasses.replace(config, output=None, resume=False, results_dir=None, feature_cache_dir=None,
                                 device="cpu",
                                 deterministic=True, max_steps=steps, fault_injection=None,
                                 prompter_kwargs=_same_lif_backend(record, config.prompter_kwargs),
                                 data_root=data_root if data_root is not None else config.data_root)
    losses: list[float] = []

    def collect(epoch, step, loss):
        losses.append(float(loss))
        if len(losses) >= steps:
            raise _Enough

    try:
        train(config, progress=False, on_batch_end=collect)
    except _Enough:
        pass
    return losses


def _same_lif_backend(record: dict, prompter_kwargs: dict) -> dict:
    """``prompter_kwargs`` with LoRSP's fused gate pinned to the backend the record was trained with
    (``lif_backend``): ``backend="auto"`` may pick the compiled gate on a machine where it is built, and the
    replay must compute as the run did, not as this machine would choose."""
    backend = record.get("lif_backend")
    if backend is None or "backend" in prompter_kwargs:
        return prompter_kwargs
    return {**prompter_kwargs, "backend": backend}


def compare_trace(record: dict, losses: list[float], rtol: float = RTOL) -> str | None:
    """``None`` when ``losses`` match the start of the record's ``loss_trace``, else what differs."""
    trace = [float(v) for v in record.get("loss_trace") or []][:len(losses)]
    if len(trace) < len(losses):
        return f"its loss_trace has {len(trace)} steps, {len(losses)} were replayed"
    for step, (old, new) in enumerate(zip(trace, losses)):
        if not math.isclose(old, new, rel_tol=rtol, abs_tol=1e-7):
            return f"step {step}: recorded loss {old:.6f}, the code now gives {new:.6f}"
    return None


def stale_records(paths: Iterable[Path], steps: int = 3, budget_seconds: float | None = None,
                  data_root=None) -> tuple[list[str], list[Path]]:
    """Replay the first ``steps`` of each replayable record of ``paths`` (one per method and dataset, the
    first found, until ``budget_seconds`` is spent) and return ``(problems, replayed paths)``: one sentence per
    record whose replay differs, naming the record to regenerate."""
    problems, replayed, seen = [], [], set()
    started = time.perf_counter()
    for path in sorted(Path(p) for p in paths):
        record = read_run_record(path)  # strict: a damaged record or prompt file is an error naming it
        if not replayable(record):
            continue
        kind = (record["config"].get("method"), record["config"].get("dataset"))
        if kind in seen:
            continue
        if budget_seconds is not None and replayed and time.perf_counter() - started > budget_seconds:
            break
        seen.add(kind)
        losses = replay_losses(record, steps, data_root=data_root)
        replayed.append(path)
        difference = compare_trace(record, losses)
        if difference:
            problems.append(f"{path} is stale ({difference}): the code no longer trains what this record "
                            f"says; regenerate it (and the records of the same commit "
                            f"{str(record.get('git_commit'))[:12]}) with python -m lorsp.experiments")
    return problems, replayed


# ----------------------------------------------------------------------------------------------------
# from a TRAINED state: re-evaluate the committed prompt + head, replay steps from it
# ----------------------------------------------------------------------------------------------------
#: the label mapping (ILM-VP) is not recomputed in a replay from a trained state: the committed one is used
_NEVER = 10 ** 9


@contextlib.contextmanager
def trained_run(record_path, data_root=None):
    """The engine's run (:class:`lorsp.engine.run.Run`) of a committed record, on the CPU, ready to evaluate or
    step: its data (the same per-class subsets and seed), its model with the committed ``prompt.safetensors``
    (prompter and head, ILM-VP's label mapping too) loaded, its loaders and a fresh optimizer and schedule.

    Linear probing runs over the images rather than cached features (the same head on the same frozen
    features, without a pass over the training set); ILM-VP keeps the committed label mapping (the replay
    config's ``label_mapping_interval`` never falls due)."""
    import torch
    from safetensors.torch import load_file
    from .. import distributed as distrib
    from .. import engine
    from ..results import PROMPT_NAME
    record_path = Path(record_path)
    record = read_run_record(record_path)  # strict: the prompt file is checked against the record's sha256
    config = _replay_config(record, data_root, steps=None)
    config = dataclasses.replace(config, cache_features="off", label_mapping_interval=_NEVER)
    ctx = distrib.init_from_env("cpu")
    try:
        run = engine.Run(config, ctx, torch.device("cpu"), progress=False, faults={})
        run.build_data()
        run.build_model()
        state = load_file(str(record_path.parent / PROMPT_NAME))
        missing, unexpected = run.model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k.startswith(("prompter.", "head."))]
        if unexpected or missing:
            raise ValueError(f"{record_path.parent / PROMPT_NAME}: keys {unexpected[:5]} do not fit the model of its "
                             f"record, whose trained keys {missing[:5]} are missing")
        run.build_loaders()
        run.resume(None)
        yield run
    finally:
        distrib.cleanup(ctx)


def _replay_config(record: dict, data_root, steps: int | None):
    """The record's TrainConfig, made to re-run here: CPU, no output, no resume, no fault injection, the LIF
    backend it was trained with, ``data_root`` when given; at most ``steps`` steps."""
    from ..engine import TrainConfig
    config = TrainConfig.from_dict(dict(record["config"]))
    return dataclasses.replace(config, output=None, resume=False, results_dir=None, feature_cache_dir=None,
                               device="cpu", deterministic=True, max_steps=steps, fault_injection=None,
                               prompter_kwargs=_same_lif_backend(record, config.prompter_kwargs),
                               data_root=data_root if data_root is not None else config.data_root)


def reevaluate(run) -> dict:
    """The committed model's test metrics, evaluated now by the engine's evaluation (:meth:`lorsp.engine.run.Run.evaluate`)."""
    import torch
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return run.evaluate()
    finally:
        torch.use_deterministic_algorithms(deterministic)


def replay_from_trained(run, steps: int) -> list[float]:
    """The losses of ``steps`` training steps from the committed (trained) state: the engine's own step
    (:func:`lorsp.engine.loop.train_epoch`) over the first batches of the run's last epoch (its order and random
    draws: seeded by (seed, epoch)), with a fresh optimizer at the schedule's start. Deterministic: a
    function of the committed prompt and head, the data and the training code."""
    import torch
    losses: list[float] = []

    def collect(epoch, step, loss):
        losses.append(float(loss))
        if len(losses) >= steps:
            raise _Enough

    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        run.train_epoch(run.config.epochs, collect)
    except _Enough:
        pass
    finally:
        torch.use_deterministic_algorithms(deterministic)
    return losses


# ----------------------------------------------------------------------------------------------------
# one record per method family: re-evaluated exactly, and replayed from its trained state
# ----------------------------------------------------------------------------------------------------
#: the method families of the records, by (method, head) of their config
FAMILIES = {("none", "linear"): "LP", ("pad", "ilm"): "ILM-VP", ("pad", "linear"): "AutoVP", ("evp", "linear"): "EVP",
            ("lorvp", "linear"): "LoR-VP", ("lpf", "linear"): "LPF", ("lorsp", "linear"): "LoRSP",
            ("topk", "linear"): "Top-k", ("dropout", "linear"): "Dropout"}
#: the steps replayed from a trained state
TRAINED_STEPS = 3


def family(record: dict) -> str:
    """The method family of a record (:data:`FAMILIES`), e.g. ``"ILM-VP"``; otherwise ``method/head``."""
    config = record.get("config") or {}
    key = (config.get("method"), config.get("head", "linear"))
    return FAMILIES.get(key, f"{key[0]}/{key[1]}")


def schema_version(record: dict) -> int:
    """The record schema's version (``lorsp.run/2`` → 2; 1 for a record without one)."""
    text = str(record.get("schema") or "lorsp.run/1")
    try:
        return int(text.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        raise ValueError(f"{record.get('record_path', 'a record')}: schema {text!r} is not 'lorsp.run/<n>'") from None


def eval_repeatable(record: dict) -> str | None:
    """``None`` when the record's evaluation is a deterministic function of its prompt file and data under the
    current code; else why not. Dropout records of schema 1 were evaluated with masks drawn from an unseeded
    generator (the committed desk ones: 61.48 % recorded for Dropout 10 %, seed 1; 61.62 % in one re-evaluation)."""
    if family(record) == "Dropout" and schema_version(record) < 2:
        return ("a schema-1 Dropout record: its accuracy was measured with evaluation masks from an unseeded "
                "generator, so no re-evaluation can reproduce it exactly")
    return None


def representatives(paths: Iterable[Path]) -> dict[str, Path]:
    """One record per method family among ``paths``: the completed one with the fewest test images (the
    cheapest to re-evaluate), ties to the first path; preferring one whose evaluation is repeatable. A backbone
    that none of these records uses gets one more, keyed ``"<family> · <backbone>"``: its LoRSP record when it
    has one (else its cheapest), so that every backbone's weights and path are checked too."""
    records = {}
    for path in sorted(Path(p) for p in paths):
        record = read_run_record(path)
        if record.get("status", "completed") == "completed":
            records[path] = record

    def rank(path: Path) -> tuple:
        record = records[path]
        return eval_repeatable(record) is not None, int((record.get("data") or {}).get("n_test") or 0), str(path)

    best: dict[str, Path] = {}
    for path, record in records.items():
        name = family(record)
        if name not in best or rank(path) < rank(best[name]):
            best[name] = path
    out = dict(sorted(best.items()))
    covered = {_backbone(records[path]) for path in out.values()}
    for backbone in sorted({_backbone(record) for record in records.values()} - covered):
        pick = min((p for p in records if _backbone(records[p]) == backbone),
                   key=lambda p: (family(records[p]) != "LoRSP", rank(p)))
        out[f"{family(records[pick])} · {backbone}"] = pick
    return out


def _backbone(record: dict) -> str:
    return str((record.get("config") or {}).get("backbone"))


def check_trained(paths: Iterable[Path], replays: dict, data_root=None, steps: int = TRAINED_STEPS,
                  log=None) -> tuple[list[str], dict[str, dict]]:
    """For one record per method family (:func:`representatives`): re-evaluate its committed prompt and head on
    its whole test set and compare the number of correct images with its ``final_accuracy`` exactly (when its
    evaluation is repeatable, :func:`eval_repeatable`); and replay ``steps`` steps from that trained state
    (:func:`replay_from_trained`) and compare their losses with ``replays[run key]`` (losses of the same replay,
    measured when the prompt file of that ``prompt_sha256`` was committed: :func:`record_replays`).

    Returns ``(problems, checked)``: one sentence per difference, naming the record; per family what was done."""
    problems, checked = [], {}
    for name, path in representatives(paths).items():
        record = read_run_record(path)
        key, why_not = path.parent.name, eval_repeatable(record)
        with trained_run(path, data_root=data_root) as run:
            done = {"record": str(path)}
            if why_not is None:
                metrics = reevaluate(run)
                done["accuracy"] = (record["final_accuracy"], metrics["test_accuracy"])
                difference = _accuracy_difference(record, metrics)
                if difference:
                    problems.append(f"{path} ({name}) is stale: {difference}; regenerate it with python -m "
                                    f"lorsp.experiments")
            else:
                done["accuracy"] = f"not compared: {why_not}"
            losses = replay_from_trained(run, steps)
        done["losses"] = losses
        expected = replays.get(key)
        if expected is None or expected.get("prompt_sha256") != record.get("prompt_sha256"):
            problems.append(f"{path} ({name}): no replay from its trained state is recorded for its prompt file "
                            f"(sha256 {str(record.get('prompt_sha256'))[:12]}); record them with python -m "
                            f"lorsp.experiments.staleness --record-replays {path.parent.parent} --out <file>")
        else:
            difference = compare_trace({"loss_trace": expected["losses"]}, losses)
            if difference:
                problems.append(f"{path} ({name}): {steps} steps from its trained state no longer give the losses "
                                f"recorded for them ({difference}): the training code changed what it does")
        checked[name] = done
        if log is not None:
            log(f"{name}: {done}")
    return problems, checked


def _accuracy_difference(record: dict, metrics: dict) -> str | None:
    """``None`` when a re-evaluation counts as many correct test images as the record's ``final_accuracy``."""
    images = int(metrics["test_images"])
    recorded_images = int((record.get("data") or {}).get("n_test") or images)
    if images != recorded_images:
        return f"its test set now has {images} images, its record says {recorded_images}"
    recorded, now = round(record["final_accuracy"] * images), round(metrics["test_accuracy"] * images)
    if recorded != now:
        return (f"its committed prompt and head now classify {now} of {images} test images correctly "
                f"({100 * now / images:.2f} %), its record says {recorded} ({100 * recorded / images:.2f} %)")
    return None


def record_replays(paths: Iterable[Path], data_root=None, steps: int = TRAINED_STEPS,
                   keep: dict | None = None) -> dict[str, dict]:
    """``{run key: {prompt_sha256, steps, losses, git_commit, lorsp_code}}``: the losses of ``steps`` steps from the
    trained state of each representative record (:func:`representatives`, :func:`replay_from_trained`), measured by
    the code as it is now: what :func:`check_trained` compares later runs of the code with. ``keep``: replays
    recorded before; one whose record is still a representative with the same prompt file is kept, not measured
    again."""
    from ..results import git_commit, training_code_sha256
    out = {}
    for name, path in representatives(paths).items():
        record = read_run_record(path)
        earlier = (keep or {}).get(path.parent.name)
        if earlier and earlier.get("prompt_sha256") == record.get("prompt_sha256") and earlier.get("steps") == steps:
            out[path.parent.name] = {**earlier, "family": name}
            continue
        with trained_run(path, data_root=data_root) as run:
            losses = replay_from_trained(run, steps)
        out[path.parent.name] = {"family": name, "prompt_sha256": record.get("prompt_sha256"), "steps": steps,
                                 "losses": losses, "git_commit": git_commit(), "lorsp_code": training_code_sha256()}
    return out


# ----------------------------------------------------------------------------------------------------
# a chapter's records come from one clean state of the training code
# ----------------------------------------------------------------------------------------------------
def commit_problems(records: Iterable[dict], since_schema: int = 2) -> list[str]:
    """What makes a chapter's records (``records``, dicts as read) not one experiment: a record trained from a
    checkout with uncommitted changes (``git_commit`` ending in ``-dirty``, or none at all), or records whose
    training code differs (``versions.lorsp_code``, :func:`lorsp.results.training_code_sha256`; a record
    without it is compared by its commit). Only records of schema ``since_schema`` or later are held to this
    (older ones predate ``lorsp_code``); one sentence per problem, naming the records."""
    held = [r for r in records if schema_version(r) >= since_schema]
    problems = []
    for record in held:
        commit = str(record.get("git_commit") or "")
        if not commit or commit.endswith("-dirty"):
            problems.append(f"{_name(record)} was trained from "
                            f"{'a checkout with uncommitted changes (' + commit + ')' if commit else 'no git commit'}")
    codes: dict[str, list[str]] = {}
    for record in held:
        code = (record.get("versions") or {}).get("lorsp_code") or f"commit {record.get('git_commit')}"
        codes.setdefault(code, []).append(_name(record))
    if len(codes) > 1:
        listed = "; ".join(f"{code[:19]}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''} "
                           f"({len(names)} records)" for code, names in codes.items())
        problems.append(f"the records mix {len(codes)} versions of the training code ({listed}): retrain the "
                        f"chapter from one commit")
    return problems


def _name(record: dict) -> str:
    return str(record.get("record_path") or (record.get("experiment") or {}).get("key") or record.get("run_id"))


def chapter_commit_problems(chapter: str, scale: str, results_root=None, since_schema: int = 2) -> list[str]:
    """:func:`commit_problems` of the committed records of ``chapter``'s grid at ``scale`` (those that exist)."""
    from .grid import grid, run_key
    from .grid import results_root as resolve_results_root
    store = RecordStore(resolve_results_root(results_root) / scale)
    keys = [key for key in dict.fromkeys(run_key(run) for run in grid(chapter, scale)) if store.exists(key)]
    return [f"{chapter}: {problem}" for problem in commit_problems([store.read(key) for key in keys], since_schema)]


def main(argv=None) -> int:
    """``python -m lorsp.experiments.staleness --record-replays results/desk --out FILE``: measure the replays
    from a trained state (:func:`record_replays`) and write them as JSON; ``--check`` compares instead."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m lorsp.experiments.staleness", description=main.__doc__)
    parser.add_argument("--record-replays", metavar="FOLDER", required=True, help="results folder, e.g. results/desk")
    parser.add_argument("--out", required=True, help="the replays file (tests/data/trained_replays.json)")
    parser.add_argument("--check", action="store_true", help="re-evaluate and compare with --out instead")
    parser.add_argument("--keep", action="store_true",
                        help="keep the replays already in --out whose record and prompt file are unchanged; measure "
                             "only the new representatives")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    paths = sorted(Path(args.record_replays).glob("*/record.json"))
    if args.check:
        replays = json.loads(Path(args.out).read_text(encoding="utf-8"))
        problems, _ = check_trained(paths, replays, data_root=args.data_root, log=print)
        print("\n".join(problems) or "every family reproduced")
        return 1 if problems else 0
    earlier = json.loads(Path(args.out).read_text(encoding="utf-8")) if args.keep and Path(args.out).is_file() else None
    replays = record_replays(paths, data_root=args.data_root, keep=earlier)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(replays, indent=2) + "\n", encoding="utf-8")
    print(f"{args.out}: replays of {len(replays)} families")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
