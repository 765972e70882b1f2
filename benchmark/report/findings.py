"""What the mini runs found, in sentences computed from the results (the REPORT.md section).

Every number here is a mean over the seeds that ran, with its standard deviation; a difference
counts as real when it is larger than twice its standard error (sqrt(s1^2/n1 + s2^2/n2)),
otherwise it is "within the seed noise". Each finding is set beside the paper's claim it tests
(../shared/paper/PROTOCOL.md), saying whether the miniature agrees. Nothing is written for a
comparison whose runs have not happened.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.experiments.mini import (
    CEILING,
    DENSE_ARTIFACTS,
    DENSE_METHODS,
    DETECT,
    FINETUNE,
    FRACTIONS,
    LINEAR,
)
from benchmark.experiments.paper import Pre, pretrain_steps
from benchmark.experiments.scales import MINI_SCALES, SCALE_SPECS
from benchmark.methods.base import DENOISING, JOINT_EMBEDDING, methods_of
from benchmark.report.gates import (
    COLLAPSE_SHARE,
    EVERY,
    FLOORS,
    Stat,
    gate_lines,
    monitor_curves,
    pixel_floors,
    seed_verdict,
    with_seed,
)
from benchmark.utils.io import read_log

Floor = tuple[str, float] | None  # the best pixel floor of the section: (method, mean test top-1)


def _floor(results: pd.DataFrame) -> Floor:
    """The best pixel floor on the 1,000 labels (means over seeds, each run once: the floor gate's)."""
    means = pixel_floors(results)
    return (str(means.idxmax()), float(means.max())) if not means.empty else None


def _shown(stat: Stat, floor: Floor) -> str:
    """The stat, marked where its mean is under the floor (a number below its floor is not a finding)."""
    return f"{stat} *below the floor*" if floor is not None and stat.mean <= floor[1] else str(stat)


def _concerns(failed_on: frozenset[Any], rests_on: set[str], methods: frozenset[str] | None = None) -> bool:
    """Whether a gate that failed on ``failed_on`` ((method, pre-training data) pairs; gates.EVERY:
    on the whole section; empty: it passed) concerns a finding resting on the pre-trainings of
    ``methods`` (None: any) on the data of ``rests_on``."""
    if not failed_on or not rests_on:
        return False
    if failed_on == EVERY:
        return True
    return any(data in rests_on and (methods is None or method in methods) for method, data in failed_on)


def _stats(results: pd.DataFrame, artifacts: str | tuple[str, ...], downstream: str,
           metric: str = "top1") -> dict[tuple[str, str], Stat]:
    """(method, pretrain_data) -> the stats of its runs in ``artifacts`` (each run once)."""
    names = (artifacts,) if isinstance(artifacts, str) else artifacts
    rows = results[results.artifact.isin(names) & (results.downstream == downstream) & (results.metric == metric)]
    rows = rows.drop_duplicates("run_key")  # a run in several of the artifacts has a row in each
    return {(m, d): Stat(group.value) for (m, d), group in rows.groupby(["method", "pretrain_data"])}


FULL = "fashion-mnist-100%"
SCENES = "fashion-mnist-scenes"
FRACTION_DATA = {f"fashion-mnist-{fraction * 100:g}%" for fraction in FRACTIONS}  # Fig. 2's subsets


def _chosen(runs_dir: Path, scale: str) -> str | None:
    """The fine-tuning settings chosen on val at ``scale``, one clause per select run: whose sweep,
    what it chose."""
    clauses = []
    for path in sorted(runs_dir.glob(f"select/select-{FINETUNE}-*/choice.json")):
        try:
            record = json.loads(path.read_text())
            tags = json.loads((path.parent / "run.json").read_text())["tags"]
        except (OSError, json.JSONDecodeError, KeyError):
            continue
        if tags.get("scale") != scale:
            continue
        chosen = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in record["chosen"].items())
        spec = SCALE_SPECS.get(tags.get("scale", ""))
        # runs recorded before the select runs named their initialisations: the scale's shared ones
        inits = tags.get("swept_inits") or (", ".join(spec.sweep_inits) if spec else "the swept initialisations")
        whose = "its own" if spec and inits in spec.sweep_by_init else "shared by the initialisations without a grid of their own"
        clauses.append(f"{chosen} for {inits}, {whose}")
    if not clauses:
        return None
    return "; ".join(clauses) + " (the best mean val top-1 at seed 0: `tables/mini_hparams.csv`)"


def _table6(results: pd.DataFrame, floor: Floor) -> list[str]:
    dae_methods, joint_methods = methods_of(DENOISING), methods_of(JOINT_EMBEDDING)
    # mini_seeds is Table 6 at more seeds (its seed 0 is mini_table6's runs): the finding rests on it once they ran
    seeded = _stats(results, "mini_seeds", FINETUNE)
    most = max((stat.n for stat in seeded.values()), default=0)
    artifact = "mini_seeds" if most > 1 else "mini_table6"
    stats = seeded if most > 1 else _stats(results, artifact, FINETUNE)
    base = stats.get(("random-init", "none"))
    if base is None or not base.n:
        return []
    seeds = f", {most} seeds" if most > 1 else ""
    lines = [f"- **Pre-training on the task's own images (Table 6 in miniature{seeds}).** Fine-tuned on 1,000 labels, "
             f"test top-1: random init {_shown(base, floor)}."]
    floors = {name: _stats(results, artifact, downstream).get((name, "none")) for name, downstream in FLOORS.items()}
    floor_text = ", ".join(f"{name} {stat}" for name, stat in floors.items() if stat is not None and stat.n)
    if floor_text:
        lines.append(f"  - floors on the same labels: {floor_text}.")
    helped = []
    for method in (*dae_methods, *joint_methods):
        stat = stats.get((method, FULL))
        if stat is None or not stat.n:
            continue
        diff, verdict = seed_verdict(stat, base)
        lines.append(f"  - {method} pre-trained on the 50,000 train images (labels unused): {_shown(stat, floor)}, "
                     f"{diff:+.1f} points vs random init ({verdict}).")
        helped.append((method, verdict))
    sup = stats.get(("supervised", FULL))
    if sup is not None and sup.n:
        lines.append("  - supervised pre-training on all 50,000 train labels, then fine-tuned on the 1,000: "
                     f"{_shown(sup, floor)}.")
    ceiling = _stats(results, artifact, CEILING.downstream).get((CEILING.method, "none"))
    if ceiling is not None and ceiling.n:
        lines.append(f"  - ceiling, supervised training from random init on all 50,000 labels: {_shown(ceiling, floor)}.")
    denoising = {m: v for m, v in helped if m in dae_methods}
    if denoising:
        if all(v == "higher" for v in denoising.values()):
            verdict = "agrees: every denoising autoencoder is above random init"
        elif any(v.startswith("not testable") for v in denoising.values()):
            verdict = "not testable with one seed"
        else:
            verdict = "disagrees for " + ", ".join(f"{m} ({v})" for m, v in denoising.items() if v != "higher")
        lines.append(f"  - Paper: denoising autoencoders pre-trained on the target data alone do well, far above random init. "
                     f"Here: {verdict}.")
    return lines


def _fig2(results: pd.DataFrame, floor: Floor) -> list[str]:
    dae_methods, joint_methods = methods_of(DENOISING), methods_of(JOINT_EMBEDDING)
    stats = _stats(results, ("mini_fig2", "mini_more"), FINETUNE)  # mini_more: MAE and BYOL at the same fractions
    fractions = sorted({d for _, d in stats if d.endswith("%")},
                       key=lambda d: -float(d.removeprefix("fashion-mnist-").rstrip("%")))
    if len(fractions) < 2:
        return []
    full, least = fractions[0], fractions[-1]
    lines = [f"- **Smaller pre-training sets at constant iterations (Fig. 2 in miniature).** Test top-1 after pre-training on "
             f"{full.removeprefix('fashion-mnist-')} vs {least.removeprefix('fashion-mnist-')} of the train images:"]
    drops: dict[str, float] = {}
    real = False  # whether any change is beyond the seed noise
    for method in (*dae_methods, *joint_methods):
        a, b = stats.get((method, full)), stats.get((method, least))
        if a is None or b is None or not a.n or not b.n:
            continue
        diff, verdict = seed_verdict(b, a)
        drops[method] = diff
        real |= verdict in ("higher", "lower")
        lines.append(f"  - {method}: {_shown(a, floor)} -> {_shown(b, floor)}, {diff:+.1f} points ({verdict}).")
    dae = [m for m in dae_methods if m in drops]
    joint = [m for m in joint_methods if m in drops]
    if dae and joint:
        dae_mean, joint_mean = sum(drops[m] for m in dae) / len(dae), sum(drops[m] for m in joint) / len(joint)
        agree = dae_mean > joint_mean
        lines.append(f"  - Paper: denoising autoencoders are more robust to a smaller pre-training set than joint-embedding "
                     f"methods. Here: mean change {dae_mean:+.1f} points for {', '.join(dae)} vs "
                     f"{joint_mean:+.1f} for {', '.join(joint)}: "
                     f"{'agrees' if agree else 'disagrees'}"
                     f"{'' if real else ' in direction, but every change is within the seed noise (or untestable)'}.")
    return lines


def _table1(results: pd.DataFrame, floor: Floor) -> list[str]:
    dae_methods, joint_methods = methods_of(DENOISING), methods_of(JOINT_EMBEDDING)
    stats = _stats(results, "mini_table1", FINETUNE)
    lines = ["- **Scenes instead of single items (Table 1 in miniature).** Test top-1 after pre-training on the 50,000 "
             "single items vs on as many scenes of 2-5 items, fine-tuned on 1,000 labels of the items:"]
    changes: dict[str, tuple[float, str]] = {}
    for method in (*dae_methods, *joint_methods):
        items, scenes = stats.get((method, FULL)), stats.get((method, SCENES))
        if items is None or scenes is None or not items.n or not scenes.n:
            continue
        changes[method] = seed_verdict(scenes, items)
        lines.append(f"  - {method}: items {_shown(items, floor)} -> scenes {_shown(scenes, floor)}, "
                     f"{changes[method][0]:+.1f} points ({changes[method][1]}).")
    dae = [changes[m][0] for m in dae_methods if m in changes]
    if not dae or "dino" not in changes:
        return []
    dae_mean, real = sum(dae) / len(dae), any(v in ("higher", "lower") for _, v in changes.values())
    lines.append(f"  - Paper: pre-trained on scenes (COCO) instead of object-centric images (ImageNet), the denoising "
                 f"autoencoders hold up while DINO degrades. Here: mean change {dae_mean:+.1f} points for "
                 f"{', '.join(m for m in dae_methods if m in changes)} vs {changes['dino'][0]:+.1f} for dino: "
                 f"{'agrees' if dae_mean > changes['dino'][0] else 'disagrees'}"
                 f"{'' if real else ' in direction, but every change is within the seed noise (or untestable)'}.")
    return lines


def _table8(results: pd.DataFrame, floor: Floor) -> list[str]:
    dae_methods = methods_of(DENOISING)
    linear = _stats(results, ("mini_table8", "mini_more"), LINEAR)
    finetune = _stats(results, ("mini_table8", "mini_more"), FINETUNE)
    lines = ["- **Linear probing vs fine-tuning (Table 8 in miniature)**, 1,000 labels, test top-1:"]
    for (method, data), lin in sorted(linear.items()):
        fin = finetune.get((method, data))
        if fin is None or not lin.n or not fin.n:
            continue
        lines.append(f"  - {method}: linear {_shown(lin, floor)}, fine-tuned {_shown(fin, floor)}.")
    if len(lines) == 1:
        return []
    probes = {m: stat for (m, _), stat in linear.items() if stat.n}
    dae = [m for m in dae_methods if m in probes]
    if dae and "dino" in probes:
        best = max(dae, key=lambda m: probes[m].mean)
        diff, verdict = seed_verdict(probes["dino"], probes[best])
        outcome = {"higher": "agrees", "lower": "disagrees"}.get(verdict, f"undecided ({verdict})")
        lines.append(f"  - Paper: denoising autoencoders trail DINO in linear probing. Here: DINO {probes['dino']} vs the best "
                     f"denoising autoencoder, {best}, {probes[best]}: {outcome}.")
    return lines


def _dense(results: pd.DataFrame, floor: Floor) -> list[str]:
    dae_methods = methods_of(DENOISING)
    del floor  # a classification floor; the dense legs' floor is random init
    rows = results[results.artifact.isin(DENSE_ARTIFACTS)]
    rows = rows.drop_duplicates(["run_key", "metric"])  # random init's runs are in both artifacts, a row in each
    if rows.empty or (rows.method == "random-init").all():  # the floor alone (a scale sharing it) compares nothing
        return []
    lines = ["- **Detection and segmentation on the scenes (Fig. 1, Tables 4 and 5 in miniature).** Mask R-CNN and "
             "UperNet on 64 px scenes of 2-5 items, one seed; random init (trained twice as long) is the floor, and "
             "supervised pre-training on the 50,000 labelled items the reference above it (there is no dense ceiling "
             "run):"]
    for (downstream, metric), group in rows.groupby(["downstream", "metric"], sort=False):
        values = {(m, d): v for m, d, v in zip(group.method, group.pretrain_data, group.value)}
        base = values.get(("random-init", "none"))
        shown = [f"{m} on {d.removeprefix('fashion-mnist-').replace('100%', 'items')} {v:.1f}"
                 + ("" if base is None or v > base else " *(not above random init)*")
                 for (m, d), v in values.items() if m != "random-init"]
        task = "detection" if downstream == DETECT else "segmentation"
        lines.append(f"  - {task}, {metric}: " + ", ".join(shown)
                     + (f"; random init {base:.1f}" if base is not None else "") + ".")
        if metric in ("bbox_mAP", "mIoU"):
            pairs = [(m, values.get((m, SCENES)), values.get((m, FULL))) for m in dae_methods]
            pairs = [(m, a, b) for m, a, b in pairs if a is not None and b is not None]
            if pairs:
                claim = ("pre-trained on COCO itself, SplitMask and BEiT detect as well as after ImageNet pre-training"
                         if task == "detection" else
                         "pre-trained on ADE20k itself, SplitMask and BEiT segment about as well as after ImageNet")
                verdict = ", ".join(f"{m} scenes {a:.1f} vs items {b:.1f} ({a - b:+.1f})" for m, a, b in pairs)
                lines.append(f"  - Paper ({task}): {claim}. Here ({metric}, one seed, so a direction only): {verdict}.")
    return lines


def _pretraining(runs_dir: Path, scales: set[str]) -> list[str]:
    """How far each full-data pre-training got: its loss at the first and last log line, the
    supervised run's train accuracy, and DINO's teacher entropy (at ln K the head's output is
    uniform: collapsed, whatever the encoder's numbers downstream)."""
    lines = []
    for run_json in sorted(runs_dir.glob("pretrain/pretrain-*-fashion-mnist-100pct-*/run.json")):
        run = json.loads(run_json.read_text())
        if run["tags"].get("scale") not in scales:
            continue
        try:
            records = [r for r in read_log(run_json.parent) if "loss" in r]  # not the monitor's records
        except (OSError, json.JSONDecodeError):
            continue
        if not records:
            continue
        first, last, which = records[0], records[-1], with_seed(run["config"]["method"], run["config"].get("seed", 0))
        line = f"  - {which}: loss {first['loss']:.3f} at step {first['step']} -> {last['loss']:.3f} at step {last['step']}"
        if "train_acc" in last:
            line += f", train accuracy {last['train_acc'] * 100:.0f}% in its last batch"
        if "teacher_entropy" in last:
            out_dim = run["config"]["method_args"].get("out_dim", 65536)
            uniform = math.log(out_dim)
            collapsed = last["teacher_entropy"] > COLLAPSE_SHARE * uniform  # the gate's threshold
            line += (f", teacher entropy {last['teacher_entropy']:.3f} of at most ln {out_dim} = {uniform:.3f}"
                     + (f": above {COLLAPSE_SHARE:g} ln {out_dim}, its head's output has **collapsed** towards uniform, so "
                        "its loss taught the encoder little; the rows below measure what the encoder learned"
                        if collapsed else ""))
        lines.append(line + ".")
    if not lines:
        return []
    return ["- **Pre-training, as logged** (the 100% runs; the losses are per method, not comparable across methods):", *lines]


def scale_summary(scale: str) -> str:
    """What a miniature's scale trains: its pre-training steps and batch (as passes over the full
    train set) and its fine-tuning length on the 1,000 labels."""
    spec = SCALE_SPECS.get(scale)
    if spec is None:
        return f"scale {scale}"
    full = Pre("*", "fashion-mnist")
    steps = pretrain_steps(spec, full)
    epochs, batch = spec.finetune_len[FINETUNE]
    return (f"{steps:,} pre-training steps of {spec.pretrain_batch} images ({steps * spec.pretrain_batch / 50_000:.3g} passes "
            f"over the 50,000 train images), {epochs} fine-tuning epochs of the 1,000 labels at batch {batch}")


def mini_findings(results: pd.DataFrame, runs_dir: Path) -> list[str]:
    """The REPORT.md section on the miniature (empty when no miniature run has happened): one part
    per scale of it that ran, each with its own gates and findings (the scales train for different
    lengths: their numbers are never pooled)."""
    # a scale whose plan made runs of its own (not one that only shares another's, such as the pixel floors)
    own = results if "run_scale" not in results else results[results.run_scale.astype(str) == results.scale.astype(str)]
    present = set(own.scale.astype(str))
    scales = [scale for scale in MINI_SCALES if scale in present]
    if not scales:
        return []
    lines = ["## The paper in miniature: what the runs found", "",
             "A 6-block ViT (width 128, 8x8 patches) on Fashion-MNIST upsampled to 32 px; pre-training on the 50,000 "
             "train images (labels unused), fine-tuning and probing on 1,000 of their labels (100 per class, a draw per "
             "seed), test top-1 on the official 10,000 test images. Means ± standard deviations over seeds; a difference "
             "counts when it exceeds twice its standard error. Small models on a small task: they test the direction of "
             "the paper's claims, not its numbers. Each scale below is a part of its own: `mini` is what 2 CPU cores "
             "afford in half an hour (the start of training), `mini-gpu` the same questions trained further on one GPU.",
             ""]
    for scale in scales:
        lines += _scale_findings(results[results.scale.astype(str) == scale], runs_dir, scale)
    return lines


def _scale_findings(mini: pd.DataFrame, runs_dir: Path, scale: str) -> list[str]:
    lines = [f"### Scale {scale}: {scale_summary(scale)}", ""]
    curves = monitor_curves(runs_dir, {scale})  # each pre-training's log read once
    gates, failures = gate_lines(mini, curves, runs_dir, scale)
    lines += gates
    if curves:
        lines += [f"Pre-training curves, the online k-NN per method and subset: `plots/{curves_plot(scale)}`.", ""]
    chosen = _chosen(runs_dir, scale)
    if chosen:
        lines += [f"Fine-tuning settings chosen on the val split: {chosen}.", ""]
    health = _pretraining(runs_dir, {scale})
    lines += health + ([""] if health else [])
    floor = _floor(mini)
    if floor is not None:
        lines += [f"The floor: {floor[0]} on raw pixels, {floor[1]:.1f} (test top-1 on the same 1,000 labels, the best "
                  "pixel floor); a number marked *below the floor* is under it, so not a finding.", ""]
    # each part with the pre-training data its comparisons rest on, the methods
    # (None: any) and the gates that bear on it (None: all; the dense legs' floor is random init, so
    # the classification floor, the fine-tuning grid and the ceiling do not)
    parts = ((_table6, {FULL}, None, None), (_table1, {FULL, SCENES}, None, None), (_fig2, FRACTION_DATA, None, None),
             (_table8, {FULL}, None, None), (_dense, {FULL, SCENES}, DENSE_METHODS, ("learned", "no collapse", "flattened")))
    for part, rests_on, methods, gates_of in parts:
        found = part(mini, floor)
        failed = [name for name, on in failures.items()
                  if (gates_of is None or name in gates_of) and _concerns(on, rests_on, methods)]
        if found and failed:
            found[0] += f" *(Rests on failed gates: {', '.join(failed)}: not a finding until they pass.)*"
        lines += found + ([""] if found else [])
    return lines


def curves_plot(scale: str) -> str:
    """The file name of a scale's pre-training curves in plots/."""
    return f"{scale}_pretrain_curves.png"
