"""The miniature's gates and its pre-training curves: is every number in its tables a finding?

A comparison means something only if its models learned. The gates, each pass or fail with its
numbers, are computed from the runs and printed at the top of the miniature's section of
REPORT.md (a finding that rests on a failed gate says so beside it):

- **learned**: every pre-training's online k-NN (``knn_top1`` in its ``log.jsonl``,
  :mod:`benchmark.training.monitor`) ended above its value at step 0, the random-init features;
- **no collapse**: DINO's teacher entropy ended clearly below ln K (a uniform head), and the
  features of DINO and BYOL are not constant (their final k-NN well above chance);
- **floor**: the best fine-tuned model's mean beats the best pixel floor's on the same labels
  (the line says whether the margin exceeds the seed noise too);
- **grids**: every chosen setting (the fine-tuning sweep's, each pixel floor's) lies inside the grid
  it was chosen from, not at an edge; a sweep's choice at an edge counts only when it beats its
  neighbour by more than the seed noise of the scale's fine-tunings (twice the standard error of
  the difference, from the runs of several seeds; where none has run, every edge counts);
- at a scale that claims trained models (:attr:`~benchmark.experiments.scales.Scale.converged`):
  **flattened**, every pre-training's online k-NN gained less than ``flat_within`` points over the
  last fifth of its steps (read from a line through the fifth's points, :func:`gained_late`; the
  line names the verdicts within twice their noise of the limit);
  **fine-tuned**, likewise every fine-tuning's top-1 on val (``val_top1`` in its log, where its
  ``monitor_every`` asked for it); and **ceiling**, supervised training on all labels reaches
  ``ceiling_min``.

The curves (``plots/<scale>_pretrain_curves.png``, one figure per scale of the miniature): the
monitor's k-NN against the step for each method, one panel per pre-training subset, the random-init
features as the flat reference line.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy.stats import linregress

from benchmark.experiments.mini import CEILING, FINETUNE
from benchmark.experiments.mini import FLOORS as FLOOR_EVALS
from benchmark.experiments.scales import SCALE_SPECS, Scale
from benchmark.methods.base import JOINT_EMBEDDING, methods_of
from benchmark.report import names
from benchmark.report.records import planned_scales
from benchmark.stages.pixels import at_edge
from benchmark.utils.io import read_log

COLLAPSE_SHARE = 0.9     # a teacher entropy above this share of ln K counts as collapsed
CHANCE_FACTOR = 2.0      # constant features score about chance (10%): a k-NN below twice chance fails
EVERY = frozenset({"*"})  # a gate failed by the whole section (the floor, a grid), not by some pre-trainings


class Stat:
    """Mean, standard deviation and count of one row's seeds."""

    def __init__(self, values: pd.Series) -> None:
        self.n = int(values.count())
        self.mean = float(values.mean()) if self.n else math.nan
        self.std = float(values.std()) if self.n > 1 else 0.0

    def __str__(self) -> str:
        return f"{self.mean:.1f} ± {self.std:.1f} (n={self.n})"


def seed_verdict(a: Stat, b: Stat) -> tuple[float, str]:
    """(a - b, "higher" | "lower" | "within the seed noise" | "not testable (one seed)"): a difference
    counts when it exceeds twice its standard error."""
    diff = a.mean - b.mean
    se = math.sqrt(a.std ** 2 / max(a.n, 1) + b.std ** 2 / max(b.n, 1))
    if a.n > 1 and b.n > 1 and abs(diff) > 2 * se:
        return diff, "higher" if diff > 0 else "lower"
    if a.n < 2 or b.n < 2:
        return diff, "not testable (one seed)"
    return diff, "within the seed noise"


def with_seed(name: str, seed: int) -> str:
    """A pre-training's name in the report, with its seed beyond 0 (where each seed pre-trains:
    Scale.seeded_pretraining), so that a method's pre-trainings are told apart."""
    return f"{name} (seed {seed})" if seed else name


@dataclass
class Curve:
    method: str
    pretrain_data: str
    scale: str
    steps: list[int]
    knn: list[float]
    teacher_entropy: float | None = None
    out_dim: int | None = None
    seed: int = 0  # the pre-training's own

    @property
    def label(self) -> str:
        """Which pre-training, in a gate's text: its method and data, and its seed beyond 0."""
        return with_seed(f"{self.method} on {self.pretrain_data}", self.seed)


def monitor_curves(runs_dir: Path, scales: set[str]) -> list[Curve]:
    """The online k-NN of every pre-training at ``scales`` that logged one."""
    curves = []
    for run_json in sorted(Path(runs_dir).glob("pretrain/*/run.json")):
        try:
            run = json.loads(run_json.read_text())
            records = read_log(run_json.parent)
        except (OSError, json.JSONDecodeError):
            continue
        if run.get("tags", {}).get("scale") not in scales:
            continue
        points = [(r["step"], r["knn_top1"]) for r in records if "knn_top1" in r]
        if not points:
            continue
        entropy = [r["teacher_entropy"] for r in records if "teacher_entropy" in r]
        curves.append(Curve(run["tags"].get("method", "?"), run["tags"].get("pretrain_data", "?"), run["tags"]["scale"],
                            [p[0] for p in points], [p[1] for p in points], entropy[-1] if entropy else None,
                            run["config"].get("method_args", {}).get("out_dim"), run["config"].get("seed", 0)))
    return curves


def plot_monitor_curves(curves: list[Curve]):
    """One panel per pre-training data set, a line per method (save with :func:`benchmark.report.figures.save`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({c.pretrain_data for c in curves}, key=lambda d: -_percent(d))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False, layout="constrained")
    for ax, data in zip(axes[0], panels):
        shown = [c for c in curves if c.pretrain_data == data]
        for curve in sorted(shown, key=lambda c: (names.method_rank(c.method), c.seed)):
            # the method's colour and marker in every figure; its further pre-training seeds fainter, unlabelled
            ax.plot(curve.steps, curve.knn, markersize=3, alpha=0.4 if curve.seed else 1.0,
                    label="_nolegend_" if curve.seed else names.method_name(curve.method), **names.method_style(curve.method))
        start = [c.knn[0] for c in shown if c.steps[0] == 0]
        if start:
            ax.axhline(sum(start) / len(start), color="grey", linestyle="--", label="random-init features")
        ax.set_title(names.value_name("pretrain_data", data), fontsize=9)
        ax.set_xlabel("pre-training step", fontsize=8)
        ax.set_ylabel("online k-NN top-1 on val (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    return fig


def _percent(pretrain_data: str) -> float:
    """The subset share of a tag such as "fashion-mnist-10%" (0 when it has none)."""
    match = re.search(r"-([\d.]+)%$", pretrain_data)
    return float(match.group(1)) if match else 0.0


FLOORS = {ev.method: ev.downstream for ev in FLOOR_EVALS}  # the miniature's pixel floors: method -> downstream


def pixel_floors(results: pd.DataFrame) -> pd.Series:
    """The pixel floors' mean test top-1 on the 1,000 labels, by method (each run once)."""
    runs = results[results.metric == "top1"].drop_duplicates("run_key")
    return runs[runs.downstream.isin(FLOORS.values())].groupby("method").value.mean()


def _mark(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def _records(runs_dir: Path, pattern: str, scale: str) -> list[tuple[Path, dict]]:
    """``(file, its JSON)`` of the records matching ``pattern`` whose run ``scale`` plans (a run that
    several scales plan alike is theirs, whichever ran it)."""
    found = []
    for path in sorted(Path(runs_dir).glob(pattern)):
        try:
            tag = json.loads((path.parent / "run.json").read_text()).get("tags", {}).get("scale")
            if scale not in planned_scales().get(path.parent.relative_to(runs_dir).as_posix(), (tag,)):
                continue
            found.append((path, json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError):
            continue
    return found


def seed_noise(results: pd.DataFrame) -> float | None:
    """The fine-tunings' standard deviation over seeds, pooled over the rows that ran several seeds
    (each run once); None where no row has."""
    runs = results[(results.metric == "top1") & (results.downstream == FINETUNE)].drop_duplicates("run_key")
    variances = [group.value.var() for _, group in runs.groupby(["method", "pretrain_data"]) if group.value.count() > 1]
    return math.sqrt(sum(variances) / len(variances)) if variances else None


def sweep_edge(record: dict, key: str, noise: float | None) -> tuple[str, bool]:
    """Whether a select run's choice of ``key`` is at an edge of its grid that counts: the chosen
    edge beats its neighbour by more than twice the standard error of their difference (``noise``
    the seed noise of one run; unknown: every edge counts). Returns (the gate's text, at an edge)."""
    value = record["chosen"][key]
    means = {row["values"][key]: (row["mean"], row.get("runs", 1)) for row in record.get("scores", [])}
    grid = sorted(means)
    text = f"{key} = {value:g} of {grid}"
    if not at_edge(key, value, grid):
        return text, False
    neighbour = grid[1] if value == grid[0] else grid[-2]
    (edge_mean, edge_n), (next_mean, next_n) = means[value], means[neighbour]
    if noise is None:
        return f"{text} (no seed noise measured at this scale)", True
    margin = 2 * noise * math.sqrt(1 / edge_n + 1 / next_n)
    gap = edge_mean - next_mean
    if gap > margin:
        return f"{text} ({gap:+.1f} points over {neighbour:g}, beyond the noise {margin:.1f})", True
    return f"{text} at the edge by {gap:+.1f} points over {neighbour:g}, within the noise {margin:.1f}", False


def gate_lines(results: pd.DataFrame, curves: list[Curve], runs_dir: Path, scale: str
               ) -> tuple[list[str], dict[str, frozenset[str]]]:
    """The gates of ``scale`` as REPORT.md lines (``results`` and ``curves`` of that scale), and what
    each gate failed on (name -> (method, pre-training data) of the pre-trainings that failed it,
    :data:`EVERY` for a gate of the whole section, empty where it passed), so that a finding is
    marked by the gates its own runs failed."""
    spec = SCALE_SPECS.get(scale)
    lines, failures = [], {}
    if curves:
        rose = [c for c in curves if c.steps[0] == 0 and len(c.knn) > 1]
        fell = [c for c in rose if c.knn[-1] <= c.knn[0]]
        failures["learned"] = frozenset((c.method, c.pretrain_data) for c in fell) if rose else EVERY
        lines.append(f"- {_mark(not failures['learned'])} learned: online k-NN at the end vs at step 0 (random-init "
                     "features): " + ", ".join(f"{c.label} {c.knn[0]:.1f} -> {c.knn[-1]:.1f}" for c in rose)
                     + (f"; did not rise: {', '.join(c.label for c in fell)}" if fell else "")
                     + ".")
        joint_methods = methods_of(JOINT_EMBEDDING)
        joint = [c for c in curves if c.method in joint_methods]
        if joint:
            problems, collapsed = [], set()
            for c in joint:
                if c.knn[-1] < CHANCE_FACTOR * 10:
                    problems.append(f"{c.label}: k-NN {c.knn[-1]:.1f}, near chance (constant features)")
                    collapsed.add((c.method, c.pretrain_data))
                if c.teacher_entropy is not None and c.out_dim:
                    if c.teacher_entropy > COLLAPSE_SHARE * math.log(c.out_dim):
                        problems.append(f"{c.label}: teacher entropy {c.teacher_entropy:.2f} of "
                                        f"ln {c.out_dim} = {math.log(c.out_dim):.2f}")
                        collapsed.add((c.method, c.pretrain_data))
            entropies = [f"{c.label} {c.teacher_entropy:.2f} of ln {c.out_dim} = "
                         f"{math.log(c.out_dim):.2f}" for c in joint if c.teacher_entropy is not None and c.out_dim]
            failures["no collapse"] = frozenset(collapsed)
            lines.append(f"- {_mark(not collapsed)} no collapse: "
                         + ("; ".join(problems) if problems else
                            "teacher entropies " + (", ".join(entropies) or "not logged") + "; final k-NN above twice chance")
                         + ".")
    # each run once (a run in several artifacts has a row in each), so that every seed weighs the same
    runs = results[results.metric == "top1"].drop_duplicates("run_key")
    finetune = runs[runs.downstream == FINETUNE]
    floor = pixel_floors(results)
    if not finetune.empty and not floor.empty:
        stats = {key: Stat(group.value) for key, group in finetune.groupby(["method", "pretrain_data"])}
        best = max(stats, key=lambda key: stats[key].mean)
        top_floor = str(floor.idxmax())
        diff, how = seed_verdict(stats[best], Stat(runs[runs.downstream == FLOORS[top_floor]].value))
        ok = bool(stats[best].mean > floor.max())
        failures["floor"] = frozenset() if ok else EVERY
        lines.append(f"- {_mark(ok)} floor: the best fine-tuned model, {best[0]} ({best[1]}), {stats[best].mean:.1f} vs the "
                     "pixel floors " + ", ".join(f"{m} {v:.1f}" for m, v in floor.items()) + " (test top-1, means over "
                     f"seeds; {diff:+.1f} points vs {top_floor}: {how}).")
    edges = []
    noise = seed_noise(results)
    for _, record in _records(runs_dir, "select/*/choice.json", scale):
        edges += [sweep_edge(record, key, noise) for key in record.get("chosen", {})]
    for _, result in _records(runs_dir, "pixels/*/result.json", scale):
        choice = result.get("config", {}).get("choice")
        if not choice:
            continue
        # judged again here, not read from the record: runs made before the rule knew k's floor of 1
        edges.append((f"pixels {choice['setting']} = {choice['chosen']:g} of {choice['grid']}",
                      at_edge(choice["setting"], choice["chosen"], choice["grid"])))
    if edges:
        ok = not any(edge for _, edge in edges)
        failures["grids"] = frozenset() if ok else EVERY  # the chosen lr serves every fine-tuning
        outside = [text for text, edge in edges if edge]
        within = [text for text, edge in edges if not edge and "within the noise" in text]
        lines.append(f"- {_mark(ok)} grids: {len(edges)} chosen settings"
                     + (f"; at an edge: {', '.join(dict.fromkeys(outside))}" if outside else ", each inside its grid")
                     + (f"; {'; '.join(within)}" if within else "") + ".")
    if spec is not None and spec.converged:
        lines += _convergence_gates(results, curves, runs_dir, spec, failures)
    if lines:
        lines = ["**Gates** (is a number a finding? computed from the runs):", *lines, ""]
    return lines, failures


@dataclass(frozen=True)
class Gain:
    """What a curve gained over the last fifth of its steps, and how sure that is."""

    points: float
    noise: float | None  # the standard error of ``points`` (None where the fifth holds under 3 points)

    def __str__(self) -> str:
        return f"{self.points:+.1f}" + (f" ± {self.noise:.1f}" if self.noise is not None else "")

    def near(self, limit: float) -> bool:
        """Whether ``limit`` lies within twice the noise of the gain: its verdict is one that
        another seed could turn."""
        return self.noise is not None and abs(self.points - limit) <= 2 * self.noise


def _near_limit(gains: list[tuple[str, Gain]], limit: float) -> str:
    """The gate line's note on the verdicts that noise could turn (empty where there are none)."""
    near = [f"{name} {gain}" for name, gain in gains if gain.near(limit)]
    return f"; within twice their noise of the limit: {', '.join(near)}" if near else ""


def gained_late(steps: list[int], values: list[float]) -> Gain:
    """The points a curve gained over the last fifth of its steps: the slope of a least-squares line
    through its points from the last one at or before 80% of the steps to the end, times that span.
    A line, not the difference of two points: a val curve read every 2 epochs jitters by about 0.3
    between points (the ceiling's gain was 0.46 read at epoch 92 and 0.83 at 96, of 120), so two
    points would let that jitter flip the gate; the line's standard error says how far it can."""
    start = max((i for i, step in enumerate(steps) if step <= 0.8 * steps[-1]), default=0)
    x, y = steps[start:], values[start:]
    if len(x) < 2 or x[-1] == x[0]:
        return Gain(0.0, None)
    fit = linregress(x, y)
    span = x[-1] - x[0]
    return Gain(fit.slope * span, fit.stderr * span if len(x) > 2 else None)


def val_curves(runs_dir: Path, scale: str) -> list[tuple[str, dict, list[int], list[float]]]:
    """(run directory, tags, steps, val top-1) of every fine-tuning of ``scale`` whose log holds its
    top-1 on val at two points or more (its ``monitor_every``)."""
    curves = []
    for path, run in _records(runs_dir, "finetune/*/run.json", scale):
        try:
            points = [(r["step"], r["val_top1"]) for r in read_log(path.parent) if "val_top1" in r]
        except (OSError, json.JSONDecodeError):
            continue
        if len(points) > 1:
            curves.append((path.parent.name, run.get("tags", {}), [p[0] for p in points], [p[1] for p in points]))
    return curves


def _convergence_gates(results: pd.DataFrame, curves: list[Curve], runs_dir: Path, spec: Scale,
                       failures: dict[str, frozenset]) -> list[str]:
    """The gates of a scale whose models are trained to convergence: flattened curves, fine-tunings
    whose val stopped rising, the ceiling."""
    lines, flat_within, ceiling_min = [], spec.flat_within, spec.ceiling_min
    if curves:
        gains = [(c, gained_late(c.steps, c.knn)) for c in curves if len(c.knn) > 1]
        rising = [c for c, gain in gains if gain.points >= flat_within]
        failures["flattened"] = frozenset((c.method, c.pretrain_data) for c in rising)
        lines.append(f"- {_mark(not rising)} flattened: online k-NN gained over the last fifth of the steps (less than "
                     f"{flat_within:g} points each): " + ", ".join(
                         f"{c.label} {gain}" for c, gain in gains)
                     + _near_limit([(c.label, gain) for c, gain in gains], flat_within) + ".")
    tuned = [(name, tags, gained_late(steps, top1)) for name, tags, steps, top1 in val_curves(runs_dir, spec.name)]
    if tuned:
        rising = [(name, tags, gain) for name, tags, gain in tuned if gain.points >= flat_within]
        pairs = {(tags.get("method"), tags.get("pretrain_data", "none")) for _, tags, _ in rising}
        # random init (and the ceiling) is every comparison's reference: still rising, it concerns them all
        failures["fine-tuned"] = EVERY if any(data == "none" for _, data in pairs) else frozenset(pairs)
        most = max(tuned, key=lambda item: item[2].points)
        still = ", ".join(f"{name} {gain}" for name, _, gain in rising)
        lines.append(f"- {_mark(not rising)} fine-tuned: top-1 on val gained over the last fifth of each fine-tuning's "
                     f"steps (less than {flat_within:g} points each): {len(tuned)} fine-tunings, at most "
                     f"{most[2]} ({most[0]})" + (f"; still rising: {still}" if rising else "")
                     + _near_limit([(name, gain) for name, _, gain in tuned], flat_within) + ".")
    runs = results[(results.metric == "top1") & (results.downstream == CEILING.downstream)].drop_duplicates("run_key")
    if not runs.empty:
        stat = Stat(runs.value)
        ok = stat.mean >= ceiling_min
        failures["ceiling"] = frozenset() if ok else EVERY
        lines.append(f"- {_mark(ok)} ceiling: supervised training from random init on all 50,000 labels, {stat} test "
                     f"top-1 (at least {ceiling_min:g}: a ViT trained fully on Fashion-MNIST's labels gets there).")
    return lines
