"""experiments/ablation.py: the run plan shares pretraining, and the table reaches the results
page."""

import json
import os

import pytest

from experiments import ablation


def test_plan_pretrains_once_per_seed_and_varies_only_the_gan(tmp_path):
    runs = ablation.plan("configs/shapes.py", str(tmp_path), [1, 2])
    modes = [[a for a in args if a.startswith("--mode=")][0] for _, args, _ in runs]
    assert modes.count("--mode=pretrain_damsm") == 2 and modes.count("--mode=train") == 6
    for workdir, args, base in runs:
        if "--mode=train" in args:
            assert base and base.endswith("base") and os.path.basename(workdir) in ablation.VARIANTS
    no_stream = [a for w, a, _ in runs if w.endswith("no_stream") and "--mode=train" in a][0]
    assert "--config.train.lambda1=0.0" in no_stream
    no_sent = [a for w, a, _ in runs if w.endswith("no_sentence_attention")][0]
    assert "--config.model.sentence_attention=False" in no_sent


def _metrics(all_correct, r1):
    split = {
        "semantic_accuracy": {
            "all_correct": all_correct,
            "colour": 0.9,
            "shape": 0.5,
            "size": 0.8,
            "layout": 0.7,
        },
        "r_precision": {"top1_mean": r1},
        "domain_fid": 3.0,
    }
    return {"splits": {"test": split, "test_novel": split}}


def test_table_mean_and_spread_into_the_results_page(tmp_path):
    for s, value in ((1, 0.2), (2, 0.4)):
        for name in ablation.VARIANTS:
            d = tmp_path / f"seed{s}" / name / "eval"
            d.mkdir(parents=True)
            (d / "metrics.json").write_text(json.dumps(_metrics(value, value / 2)))
    table = ablation.summarise(str(tmp_path), [1, 2])
    mean, spread = table["mirrorgan"]["test"]["all-correct"]
    assert mean == pytest.approx(0.3) and spread == pytest.approx(0.1)
    text = ablation.to_markdown(table, [1, 2], 600.0, "configs/shapes.py")
    assert "0.300 +- 0.100" in text and "**test_novel**" in text and "10 min" in text
    doc = tmp_path / "shapes.md"
    doc.write_text(f"intro\n{ablation.START}\nold\n{ablation.END}\noutro\n")
    ablation.write_between_markers(str(doc), text)
    content = doc.read_text()
    assert "old" not in content and "0.300 +- 0.100" in content and content.endswith("outro\n")
    (tmp_path / "plain.md").write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        ablation.write_between_markers(str(tmp_path / "plain.md"), text)


def test_execute_shares_pretraining_and_one_classifier(tmp_path):
    runs = ablation.plan("configs/shapes.py", str(tmp_path), [1, 2], train_steps=300)
    assert all("--config.train.steps=300" in args for _, args, _ in runs)
    trained = []

    def fake_main(cmd, check):
        assert check
        workdir = [c for c in cmd if c.startswith("--workdir=")][0].split("=", 1)[1]
        mode = [c for c in cmd if c.startswith("--mode=")][0].split("=", 1)[1]
        if mode.startswith("pretrain_"):
            stage = mode.split("_", 1)[1]
            os.makedirs(os.path.join(workdir, stage))
        if mode == "train":  # the variant sees its base's pretrained stages
            assert os.path.isdir(os.path.join(workdir, "damsm"))
            assert os.path.isdir(os.path.join(workdir, "stream"))
        if mode == "eval":
            path = os.path.join(workdir, ablation.CLASSIFIER)
            if not os.path.exists(path):  # what main --mode=eval does without a cached file
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(f"trained in {workdir}")
                trained.append(workdir)

    ablation.execute(runs, runner=fake_main)
    assert len(trained) == 1  # every later eval found the first one's classifier
    evals = [w for w, a, _ in runs if "--mode=eval" in a]
    assert len(evals) == 6
    for w in evals:
        with open(os.path.join(w, ablation.CLASSIFIER)) as f:
            assert f.read() == f"trained in {trained[0]}"
