"""The paper's claim on `shapes`: does redescription (STREAM) make images match their text?

  python -m experiments.ablation [--config=configs/shapes.py] [--seeds=0,1] [--root=runs/ablation]
                                 [--train_steps=N] [--doc=docs/shapes.md] [--dry_run]

For each seed: one run prepares the data (shared by all runs) and pretrains DAMSM and STREAM;
each variant copies those two finished stages and trains/evaluates its own generator:
  mirrorgan              lambda1 = 10 (the released value)
  no_stream              lambda1 = 0 (no redescription loss)
  no_sentence_attention  lambda1 = 10, GLAM without the sentence-level attention
Every run is scored by one attribute classifier (the measuring instrument): the first eval trains
it and the others reuse its file. `--train_steps` shortens every GAN run (the table says so).
The table (semantic accuracy, all-correct, R-precision, domain FID; mean +- spread over seeds;
`test` and `test_novel`) goes to <root>/ablation.md and, between the markers
`<!-- ablation:start -->` / `<!-- ablation:end -->`, into the results page (`--doc`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

VARIANTS = {
    "mirrorgan": ["--config.train.lambda1=10.0"],
    "no_stream": ["--config.train.lambda1=0.0"],
    "no_sentence_attention": [
        "--config.train.lambda1=10.0",
        "--config.model.sentence_attention=False",
    ],
}
COLUMNS = (
    ("all-correct", lambda r: r["semantic_accuracy"]["all_correct"]),
    ("colour", lambda r: r["semantic_accuracy"]["colour"]),
    ("shape", lambda r: r["semantic_accuracy"]["shape"]),
    ("size", lambda r: r["semantic_accuracy"]["size"]),
    ("layout", lambda r: r["semantic_accuracy"]["layout"]),
    ("R-prec top-1", lambda r: r["r_precision"]["top1_mean"]),
    ("domain FID", lambda r: r["domain_fid"]),
)
START, END = "<!-- ablation:start -->", "<!-- ablation:end -->"


CLASSIFIER = os.path.join("eval", "shapes_classifier.npz")


def plan(
    config: str, root: str, seeds: list[int], train_steps: int = 0
) -> list[tuple[str, list[str], str | None]]:
    """(workdir, main arguments, base workdir to copy damsm/stream from) for every run."""
    data = os.path.join(root, "data")
    runs = []
    for s in seeds:
        base = os.path.join(root, f"seed{s}", "base")
        common = [f"--config={config}", f"--config.seed={s}", f"--config.data.data_dir={data}"]
        if train_steps:
            common.append(f"--config.train.steps={train_steps}")
        for mode in ("prepare", "pretrain_damsm", "pretrain_stream"):
            runs.append((base, common + [f"--mode={mode}"], None))
        for name, flags in VARIANTS.items():
            w = os.path.join(root, f"seed{s}", name)
            for mode in ("train", "eval"):
                runs.append((w, common + flags + [f"--mode={mode}"], base))
    return runs


def summarise(root: str, seeds: list[int]) -> dict:
    """{variant: {split: {column: (mean, spread)}}} from every run's eval/metrics.json."""
    table: dict = {}
    for name in VARIANTS:
        per_split: dict = {}
        for s in seeds:
            with open(os.path.join(root, f"seed{s}", name, "eval", "metrics.json")) as f:
                metrics = json.load(f)
            for split, result in metrics["splits"].items():
                for col, get in COLUMNS:
                    per_split.setdefault(split, {}).setdefault(col, []).append(float(get(result)))
        table[name] = {
            split: {
                c: (float(np.mean(v)), float(np.max(v) - np.min(v)) / 2) for c, v in cols.items()
            }
            for split, cols in per_split.items()
        }
    return table


def to_markdown(
    table: dict, seeds: list[int], seconds: float, config: str, train_steps: int = 0
) -> str:
    steps = f", GAN shortened to {train_steps} steps" if train_steps else ""
    lines = [
        f"Config `{config}`{steps}, seeds {seeds}; mean +- half the range over seeds; run time "
        f"{seconds / 60:.0f} min on this machine. Semantic accuracies from one attribute "
        "classifier shared by every run (fractions of images); R-precision from each run's "
        "DAMSM encoders.",
        "",
    ]
    splits = sorted({sp for v in table.values() for sp in v})
    for split in splits:
        lines += [
            f"**{split}**",
            "",
            "| variant | " + " | ".join(c for c, _ in COLUMNS) + " |",
            "|---" * (len(COLUMNS) + 1) + "|",
        ]
        for name, per_split in table.items():
            cells = [f"{m:.3f} +- {d:.3f}" for m, d in (per_split[split][c] for c, _ in COLUMNS)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_between_markers(doc: str, text: str) -> None:
    with open(doc) as f:
        content = f.read()
    if START not in content or END not in content:
        raise ValueError(f"{doc}: no {START} ... {END} markers to put the table between")
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(doc, "w") as f:
        f.write(f"{head}{START}\n{text}\n{END}{tail}")


def execute(runs, dry_run: bool = False, runner=subprocess.run) -> None:
    """Run the plan in order: copy the base's pretrained stages into each variant, and the first
    eval's classifier into every later eval, so that one instrument scores every run."""
    classifier = None
    for workdir, args, base in runs:
        cmd = [sys.executable, "-m", "mirrorgan_jax.main", f"--workdir={workdir}", *args]
        print(" ".join(cmd), flush=True)
        if dry_run:
            continue
        if base:
            for stage in ("damsm", "stream"):
                if not os.path.exists(os.path.join(workdir, stage)):
                    shutil.copytree(os.path.join(base, stage), os.path.join(workdir, stage))
        target = os.path.join(workdir, CLASSIFIER)
        if "--mode=eval" in args and classifier and not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy(classifier, target)
        runner(cmd, check=True)
        if "--mode=eval" in args and classifier is None:
            classifier = target


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/shapes.py")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--root", default="runs/ablation")
    p.add_argument("--train_steps", type=int, default=0, help="override config.train.steps")
    p.add_argument("--doc", default="docs/shapes.md")
    p.add_argument("--dry_run", action="store_true")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    t0 = time.time()
    execute(plan(a.config, a.root, seeds, a.train_steps), a.dry_run)
    if a.dry_run:
        return
    text = to_markdown(summarise(a.root, seeds), seeds, time.time() - t0, a.config, a.train_steps)
    with open(os.path.join(a.root, "ablation.md"), "w") as f:
        f.write(text + "\n")
    write_between_markers(a.doc, text)
    print(text)


if __name__ == "__main__":
    main()
