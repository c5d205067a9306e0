"""lorsp.experiments.collapse: the size of a collapsed run's prompt beside its healthy seeds', measured on the
committed desk records (any images: the data root may be empty), and the sentences that say what it shows."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from lorsp.experiments.collapse import collapse_sentences, prompt_sizes
from lorsp.experiments.health import run_health

DESK = Path(__file__).resolve().parents[1] / "results" / "desk"
CELL = dict(dataset="cifar10", backbone="efficientnet_lite0", label="LoRSP", setting=" (G=4, r=4, tau=4, V_th=0)")


def _table(bad, good, label="LoRSP (G=4, r=4)"):
    rows = [dict(label=label, dataset="cifar10", backbone="efficientnet_lite0", seed=i, collapsed=True,
                 delta_share_pct=v) for i, v in enumerate(bad)]
    rows += [dict(label=label, dataset="cifar10", backbone="efficientnet_lite0", seed=10 + i, collapsed=False,
                  delta_share_pct=v) for i, v in enumerate(good)]
    return pd.DataFrame(rows)


def test_sentences_say_whether_the_collapsed_prompts_are_the_large_ones():
    [apart] = collapse_sentences(_table([40.0, 60.0], [2.0, 4.0, 5.0]))
    assert "the 2 collapsed seeds' prompts have a mean |δ| of 40.0–60.0%" in apart
    assert "the 3 healthy seeds' 2.0–5.0%" in apart and "10–15× the healthy median" in apart
    assert "outgrew the image" in apart
    [overlap] = collapse_sentences(_table([4.5], [2.0, 4.0, 5.0]))
    assert "the collapsed seed's prompt has a mean |δ| of 4.5%" in overlap
    assert "does not tell the collapsed seeds apart" in overlap and "outgrew" not in overlap
    [unmeasured] = collapse_sentences(_table([float("nan")], [2.0]))
    assert "could not be measured" in unmeasured


def test_health_tells_a_collapse_from_a_run_that_never_started_to_learn():
    health = run_health(DESK)
    cell = health[(health["dataset"] == CELL["dataset"]) & (health["backbone"] == CELL["backbone"])
                  & (health["method"] == "lorsp") & (health["setting"] == CELL["setting"])
                  & (health["prompt_lr"] == 0.01)]
    assert sorted(cell.loc[cell["collapsed"], "seed"]) == [1, 2]
    lpf = health[(health["label"].str.startswith("LPF")) & (health["dataset"] == "tiny-imagenet")
                 & (health["backbone"] == "efficientnet_lite0") & (health["prompt_lr"] == 0.01)]
    assert lpf["label"].nunique() > 1 and lpf["seed"].nunique() == 10   # one configuration under two labels
    assert not health.loc[health["unstable"] & health["why"].str.contains("first-epoch loss"), "collapsed"].any()
    assert (health["collapsed"] <= health["unstable"]).all()


def test_the_committed_collapsed_lorsp_prompts_outgrew_the_image():
    table = prompt_sizes(DESK)
    cell = table[(table["label"] == CELL["label"] + CELL["setting"] + " at prompt lr 0.01")
                 & (table["dataset"] == CELL["dataset"])]
    bad, good = cell[cell["collapsed"]], cell[~cell["collapsed"]]
    assert sorted(bad["seed"]) == [1, 2] and len(good) >= 5 and (cell["note"] == "").all()
    assert bad["delta_share_pct"].min() > 3 * good["delta_share_pct"].max()
    assert table.attrs["images"]
    assert any("outgrew the image" in s for s in collapse_sentences(table))


def _copy_cell(folder, labels):
    for record in sorted(DESK.glob("cifar10-efficientnet_lite0-*/record.json")):
        tags = json.loads(record.read_text())["experiment"]["tags"]
        if tags.get("chapter") == "backbones" and tags.get("label") in labels:
            shutil.copytree(record.parent, folder / record.parent.name)
    return run_health(folder)


def test_a_missing_prompt_file_is_an_error_naming_it(tmp_path):
    health = _copy_cell(tmp_path, ("LP", "LoRSP"))
    collapsed = health.loc[health["collapsed"], "key"].tolist()
    assert collapsed, "the copied cell should hold the collapsed seeds"
    (tmp_path / collapsed[0] / "prompt.safetensors").unlink()
    with pytest.raises(ValueError, match=f"{collapsed[0]}/prompt.safetensors is missing"):
        prompt_sizes(tmp_path)


def test_a_collapsed_run_of_another_prompter_is_listed_unmeasured(tmp_path):
    health = _copy_cell(tmp_path, ("LP", "AutoVP"))
    victim = health[health["label"] == "AutoVP"].sort_values("seed").iloc[0]["key"]
    record_path = tmp_path / victim / "record.json"
    record = json.loads(record_path.read_text())
    record["final_accuracy"] = 0.05   # a seed far below its others and below LP: collapsed
    record_path.write_text(json.dumps(record))
    table = prompt_sizes(tmp_path)
    assert len(set(table["label"])) == 1 and table["label"].iloc[0].startswith("AutoVP at prompt lr ")
    assert table["collapsed"].sum() == 1
    assert table["note"].str.startswith("not measured: a 'pad' prompt").all()   # AutoVP pads
    assert table["delta_share_pct"].isna().all()
    assert "could not be measured" in collapse_sentences(table)[0]


def test_no_collapse_gives_an_empty_table(tmp_path):
    assert prompt_sizes(tmp_path).empty
    with pytest.raises(KeyError):
        prompt_sizes(tmp_path)["seed"]
