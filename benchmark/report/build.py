"""Rebuild tables/, plots/ and REPORT.md from the runs' records.

    python -m benchmark.report [--runs-dir runs] [--report-dir .]

The report first copies the small files of every finished run below ``--runs-dir`` into the
records kept beside it (``records/``: :mod:`benchmark.report.records`), then builds from the
records alone. Every evaluation run directory holds ``run.json`` (written by the driver: artifact, scale, tags)
and ``result.json`` (written by the evaluation). For each artifact of the registry the report
writes ``tables/<artifact>.csv`` with one row per (method, pre-training data, arch, downstream
task, metric, scale): our mean and standard deviation across seeds with the number of runs, the
paper's value from ``tables/paper/reference.csv`` (beside each of our archs where the paper does not
state its arch: ``paper_arch`` "unknown") and the difference (at the paper's scale only), and the
seeds and run keys (config hashes) behind ours; in a table that holds pixel floors, whether each
row clears the best of them (``vs_floor``). A run shared by several artifacts counts in each
that the registry plans it for. A planned run without a result shows "—"; a paper value that is
not known shows "unknown". Nothing is filled in.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path

import pandas as pd

from benchmark import REPO
from benchmark.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, ResultError, SuiteError, error_line
from benchmark.experiments.registry import ARTIFACTS, every_plan
from benchmark.experiments.scales import MINI_SCALES
from benchmark.report.figures import draw, save
from benchmark.report.findings import curves_plot, mini_findings
from benchmark.report.gates import monitor_curves, plot_monitor_curves
from benchmark.report.layout import LEGEND, markdown
from benchmark.report.perf_section import perf_section, scale_speed_line
from benchmark.report.records import RECORDS, damaged_records, planned_scales, remove_superseded, save_records
from benchmark.stages.catalogue import kind_metrics, table_metrics
from benchmark.utils.io import atomic_path, write_text
from benchmark.utils.lock import exclusive
from benchmark.utils.results import load_result
from benchmark.utils.timing import read_invocations, summary_line

KEYS = ["method", "pretrain_data", "arch", "downstream", "epochs", "tokenizer", "hparams", "metric", "scale"]
# Tags an artifact may vary beyond the paper's columns; absent ones are "" (not part of the run).
OPTIONAL_TAGS = ("epochs", "tokenizer", "hparams")
PAPER_KEYS = ["method", "pretrain_data", "arch", "downstream", "metric"]
# reference.csv's metric names -> the names our result.json files use.
METRIC_ALIASES = {"bbox_ap": "bbox_mAP", "segm_ap": "segm_mAP", "miou": "mIoU"}
MISSING, UNKNOWN = "—", "unknown"
EARLIER_SCHEDULE = "timm-cosine/0"  # a result.json without lr_schedule: made before SCHEDULE_ID
NOT_COMPARABLE = "n/a (scale)"  # ours at a smaller scale than the paper's: no difference is computed
FLOOR_PREFIX = "pixels-"  # the trivial floors' methods (raw pixels), in the tables that hold them
PAPER_REFERENCE = REPO / "tables" / "paper" / "reference.csv"  # the paper's values, wherever a report is written


class ReportError(SuiteError):
    """A report that would replace the current one with nothing: no runs directory, or no results in it."""


def collect(runs_dir: Path) -> pd.DataFrame:
    """One row per metric of every finished evaluation below ``runs_dir`` (``run_scale``: the scale
    whose plan made the run, where ``scale`` may be another that plans it alike). A ``result.json``
    or ``run.json`` that cannot be read is skipped with one line saying so."""
    rows = []
    ran = _scales_that_ran(runs_dir)
    for result_path in sorted(runs_dir.rglob("result.json")):
        run_path = result_path.with_name("run.json")
        if not run_path.is_file():
            continue  # an evaluation run by hand, outside the registry
        try:
            result = load_result(result_path)
            run = json.loads(run_path.read_text())
            tags = run["tags"]
        except ResultError as err:
            print(f"[report] skipping {err}", file=sys.stderr)
            continue
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"[report] skipping {run_path}: not a readable run.json ({err})", file=sys.stderr)
            continue
        # A run several artifacts share (e.g. one fine-tuning in table 7, table 8 and fig. 2) counts in
        # each, whichever subset ran it, and a run several scales plan alike (a pixel floor) at each of
        # them: the registry says which artifacts at which scales plan it.
        rel = run_path.parent.relative_to(runs_dir).as_posix()
        for scale in [s for s in planned_scales().get(rel, ()) if s in ran] or [tags.get("scale")]:
            members = registry_members().get((scale, run["name"]), tags.get("artifacts", [tags.get("artifact")]))
            for artifact in members:
                for metric in table_metrics().get(result["kind"], sorted(result["metrics"])):
                    if metric in result["metrics"]:
                        rows.append({**_tag_values({**tags, "scale": scale}), "artifact": artifact, "metric": metric,
                                     "value": result["metrics"][metric], "seed": result["seed"],
                                     "created": result["created"], "run_key": run["key"],
                                     "lr_schedule": result.get("lr_schedule", EARLIER_SCHEDULE),
                                     "run_scale": str(tags.get("scale"))})
    return pd.DataFrame(rows, columns=["artifact", *KEYS, "value", "seed", "created", "run_key", "lr_schedule",
                                       "run_scale"])


def _scales_that_ran(runs_dir: Path) -> set[str]:
    """The scales at which some run below ``runs_dir`` was made (its ``run.json``'s tag): a run that
    several scales plan alike is shown at those of them that ran anything, not at every scale planning it."""
    scales = set()
    for run_path in runs_dir.glob("*/*/run.json"):
        try:
            scales.add(json.loads(run_path.read_text())["tags"]["scale"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return scales


def schedule_note(results: pd.DataFrame) -> list[str]:
    """A REPORT.md paragraph naming the results made with the learning-rate schedule used before
    the suite followed the reference code (their result.json has no ``lr_schedule``)."""
    earlier = results[results.lr_schedule == EARLIER_SCHEDULE]
    if earlier.empty:
        return []
    runs, artifacts = earlier.run_key.nunique(), ", ".join(sorted(set(earlier.artifact)))
    return [f"{runs} of the {results.run_key.nunique()} evaluation runs below ({artifacts}) were made with the "
            "learning-rate schedule used before 29 November 2026: timm's cosine over the steps after the warm-up, which "
            "stopped with about a tenth of the peak learning rate still on, from a warm-up starting at `min_lr` and "
            "peaking one step late. The suite now follows BEiT's, DINO's and MAE's schedules step for step "
            "(`benchmark/utils/schedule.py`, pinned by `tests/methods/test_parity.py`); these runs were not repeated "
            "with it.", ""]


@functools.lru_cache(maxsize=1)
def registry_members() -> dict[tuple[str, str], list[str]]:
    """(scale, run name) -> the artifacts of the registry that plan that run."""
    members: dict[tuple[str, str], list[str]] = {}
    for (name, scale), runs in every_plan().items():
        for run in runs:
            if name in run.tags["artifacts"]:
                members.setdefault((scale, run.name), []).append(name)
    return members


def _tag_values(tags: dict) -> dict[str, str]:
    def text(value: object) -> str:
        return f"{value:.6g}" if isinstance(value, float) else str(value)  # 3249.3, not 3249.3012757107713

    return {k: text(tags.get(k, "" if k in OPTIONAL_TAGS else UNKNOWN)) for k in KEYS if k != "metric"}


def expected_rows(artifact: str, scales: list[str]) -> pd.DataFrame:
    """The rows the registry plans for ``artifact`` at ``scales`` (results or not)."""
    rows = []
    for scale in scales:
        for run in every_plan().get((artifact, scale), ()):
            if artifact not in run.tags.get("artifacts", [run.tags["artifact"]]):
                continue
            for metric in kind_metrics(run.kind):
                rows.append({**_tag_values(run.tags), "metric": metric})
    # One row per comparison: the seeds of a row are its runs, averaged in artifact_table.
    return pd.DataFrame(rows, columns=KEYS).drop_duplicates(ignore_index=True)


def load_paper(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=["artifact", "method", "pretrain_data", "arch", "downstream", "metric", "value", "status"])
    paper = pd.read_csv(path, dtype=str)
    paper["metric"] = paper["metric"].replace(METRIC_ALIASES)
    return paper


def _paper_rows(refs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The paper's rows to join: one whose arch the paper does not state is set beside each of
    our archs for the same comparison (``paper_arch`` then says "unknown")."""
    refs = refs.assign(paper_arch=refs["arch"])
    known, vague = refs[refs.arch != UNKNOWN], refs[refs.arch == UNKNOWN]
    ours = table[[k for k in PAPER_KEYS]].drop_duplicates()
    spread = vague.drop(columns=["arch"]).merge(ours, on=[k for k in PAPER_KEYS if k != "arch"], how="left")
    spread["arch"] = spread["arch"].fillna(UNKNOWN)
    return pd.concat([known, spread], ignore_index=True)


def _joined(values: pd.Series) -> str:
    return " ".join(str(v) for v in sorted(values))


def artifact_table(artifact: str, results: pd.DataFrame, paper: pd.DataFrame, scales: list[str]) -> pd.DataFrame:
    """Ours (mean, std, n) beside the paper's value for every planned or finished row."""
    ours = results[results.artifact == artifact]
    # A run whose metric is not finite counts as a run (its row reads "nan", not "—": it happened),
    # and makes its row's mean and spread "nan" too.
    stats = (ours.groupby(KEYS).agg(mean=("value", lambda v: v.mean(skipna=False)),
                                    std=("value", lambda v: v.std(skipna=False)), count=("value", "size"),
                                    seeds=("seed", _joined), run_keys=("run_key", _joined)).reset_index()
             if len(ours) else pd.DataFrame(columns=[*KEYS, "mean", "std", "count", "seeds", "run_keys"]))
    table = expected_rows(artifact, scales).merge(stats, on=KEYS, how="outer")
    own = paper[paper.artifact == artifact]
    # The same comparison stated in another of the paper's tables (Fig. 1's COCO bars are Table 4's
    # rows) is the same number: borrowed for a row we plan, its status naming where it is from; not
    # where this artifact varies something the paper's keys do not hold (the epochs of a curve).
    planned = table[PAPER_KEYS].value_counts().reset_index()
    borrowed = (paper[paper.artifact != artifact].merge(planned[planned["count"] == 1][PAPER_KEYS], on=PAPER_KEYS)
                .drop_duplicates(PAPER_KEYS))
    borrowed = borrowed[~borrowed.set_index(PAPER_KEYS).index.isin(own.set_index(PAPER_KEYS).index)]
    borrowed = borrowed.assign(status=borrowed.status + ", from " + borrowed.artifact)
    refs = pd.concat([own, borrowed]).rename(columns={"value": "paper", "status": "paper_status"})
    # The paper's rows appear even where we have no run at this scale; the paper has no scale.
    table = table.merge(_paper_rows(refs.drop(columns=["artifact"]), table), on=PAPER_KEYS, how="outer")
    out = pd.DataFrame({k: table[k].fillna(MISSING if k == "scale" else "" if k in OPTIONAL_TAGS else UNKNOWN)
                        for k in KEYS})
    have = table["count"].fillna(0) > 0
    paper_value = pd.to_numeric(table["paper"], errors="coerce")
    out["ours_mean"] = [f"{v:.2f}" if h else MISSING for v, h in zip(table["mean"], have)]
    out["ours_std"] = [f"{v:.2f}" if n > 1 else MISSING for v, n in zip(table["std"], table["count"].fillna(0))]
    out["n_runs"] = table["count"].fillna(0).astype(int)
    out["seeds"] = table["seeds"].fillna(MISSING)
    out["run_keys"] = table["run_keys"].fillna(MISSING)  # config hashes: runs/<kind>/<name>-<key>/
    out["paper"] = [f"{v:.1f}" if pd.notna(v) else UNKNOWN for v in paper_value]
    out["paper_status"] = table["paper_status"].fillna(UNKNOWN)
    out["paper_arch"] = table["paper_arch"].fillna(UNKNOWN)
    # A difference is only meaningful at the paper's own scale; at smaller ones it says so.
    out["diff"] = [MISSING if not (h and pd.notna(p)) else f"{m - p:+.2f}" if sc == "paper" else NOT_COMPARABLE
                   for m, p, h, sc in zip(table["mean"], paper_value, have, out["scale"])]
    out = out.sort_values(KEYS).reset_index(drop=True)
    if out.method.str.startswith(FLOOR_PREFIX).any():
        out["vs_floor"] = floor_marks(out)
    return out


def floor_marks(table: pd.DataFrame) -> list[str]:
    """Beside each row of a table that holds pixel floors: whether its mean clears the best floor
    of its scale and metric ("above pixels-logistic 79.42", "BELOW ..."); "floor" on the floors'
    own rows, "—" where either side has no result. A number below its floor is not a finding."""
    means = pd.to_numeric(table.ours_mean, errors="coerce")
    floors = table.method.str.startswith(FLOOR_PREFIX)
    marks = []
    for index, row in table.iterrows():
        same = floors & (table.scale == row.scale) & (table.metric == row.metric) & means.notna()
        if floors[index]:
            marks.append("floor")
        elif pd.isna(means[index]) or not same.any():
            marks.append(MISSING)
        else:
            best = means[same].idxmax()
            side = "above" if means[index] > means[best] else "BELOW"
            marks.append(f"{side} {table.method[best]} {means[best]:.2f}")
    return marks


def artifact_scales(artifact: str, scales: list[str]) -> list[str]:
    """The scales whose planned rows an artifact's table lists: those with results, and always the
    paper's own (so that the paper's values stand in the table whatever runs exist)."""
    own = [scale for scale in scales if scale in ARTIFACTS[artifact].scales]
    return own + ["paper"] if "paper" in ARTIFACTS[artifact].scales and "paper" not in own else own


def dropped_rows(old_csv: Path, table: pd.DataFrame) -> list[str]:
    """The rows of an existing table that had a result and have none in its rebuild (one line each)."""
    if not old_csv.is_file():
        return []
    try:
        old = pd.read_csv(old_csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError):
        return []
    if not set(KEYS) <= set(old.columns) or "ours_mean" not in old.columns:
        return []
    had = old[old.ours_mean != MISSING]
    kept = {tuple(row) for row in table[table.ours_mean != MISSING][KEYS].astype(str).itertuples(index=False)}
    return [f"{' / '.join(v for v in row if v)}: {mean}" for row, mean in zip(had[KEYS].itertuples(index=False), had.ours_mean)
            if tuple(row) not in kept]


def build_report(runs_dir: Path, tables_dir: Path, plots_dir: Path, report_path: Path,
                 paper_path: Path = PAPER_REFERENCE) -> dict[str, pd.DataFrame]:
    """Rebuilds every table, plot and the report from the results below ``runs_dir``. A missing
    runs directory, or one without results, is a :class:`ReportError` and nothing is written; a
    table row that had a result and loses it is printed (``[report] ... dropped``)."""
    runs_dir, tables_dir, plots_dir = Path(runs_dir), Path(tables_dir), Path(plots_dir)
    if not runs_dir.is_dir():
        raise ReportError(f"{runs_dir}: no such runs directory; the report was left as it is")
    results = collect(runs_dir)
    if results.empty:
        raise ReportError(f"{runs_dir}: no finished evaluation (result.json with its run.json) below it; the report "
                          "was left as it is")
    scales = sorted(set(results.scale))
    paper = load_paper(paper_path)
    tables = {name: artifact_table(name, results, paper, artifact_scales(name, scales)) for name in ARTIFACTS}
    shown_dir = runs_dir.resolve().relative_to(REPO) if runs_dir.resolve().is_relative_to(REPO) else runs_dir
    lines = [
        "# Report", "",
        f"Rebuilt {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} by `python -m benchmark.report` from "
        f"{len(results)} metric values in `{shown_dir}`, scales: {', '.join(scales)}. Each run's `run.json` (config, "
        "tags, wall time), log and `result.json` (seed, versions, device) are in its directory there, "
        "`<kind>/<name>-<key>/`.", "",
        f"{LEGEND} \"nan\": it happened and its metric is not a number. Paper values are from "
        "`tables/paper/reference.csv` (status `secondary`: quoted from notes, not read off the PDF); a paper value "
        f"that is not known is left out of a cell (\"{UNKNOWN}\" in the CSVs).", "",
    ]
    lines += schedule_note(results)
    lines += mini_findings(results, runs_dir)  # what the mini runs found, before the tables
    mini_scales = [s for s in MINI_SCALES if s in scales]
    lines += missing_mini_line(tables, mini_scales)
    for scale in mini_scales:  # each scale's curves apart: their monitors differ (bank, queries, steps)
        curves = monitor_curves(runs_dir, {scale})
        if curves:
            save(plot_monitor_curves(curves), plots_dir / curves_plot(scale))
    lines += timing_section(runs_dir)  # where the driver's time went
    for scale in mini_scales:
        lines += scale_speed_line(tables_dir, scale)
    lines += perf_section(tables_dir)  # what python -m benchmark.perf measured, if it ran
    for name, table in tables.items():
        for row in dropped_rows(tables_dir / f"{name}.csv", table):
            print(f"[report] {name}: dropped {row} (no result for it below {runs_dir})", file=sys.stderr)
        with atomic_path(tables_dir / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False)
        artifact = ARTIFACTS[name]
        save(draw(name, artifact.title, table, artifact.layout), plots_dir / f"{name}.png")
        runs = results[results.artifact == name]
        when = f"runs from {runs.created.min()} to {runs.created.max()}" if len(runs) else "no runs yet"
        missing = int((table.ours_mean == MISSING).sum())
        figure = Path(os.path.relpath(plots_dir / f"{name}.png", report_path.parent)).as_posix()
        lines += [f"## {name}: {artifact.title}", "", f"![{name}]({figure})", "",
                  f"{when}; {missing} of {len(table)} rows missing. Every column (run keys, seeds, the floor "
                  f"comparison): `tables/{name}.csv`.", "", *markdown(table, artifact.layout)]
    write_text(report_path, "\n".join(lines))
    return tables


def missing_mini_line(tables: dict[str, pd.DataFrame], scales: list[str]) -> list[str]:
    """Per scale of the miniature that ran: its artifacts with planned rows that no run has filled
    (at the current settings: a run made with others has another key and is not among the records),
    and how to run them."""
    lines = []
    for scale in scales:
        missing = [name for name, table in tables.items() if scale in ARTIFACTS[name].scales
                   and (table[table.scale.astype(str) == scale].ours_mean == MISSING).any()]
        if missing:
            lines += [f"At scale {scale}, not yet run at the current settings, so absent from its findings (their "
                      f"tables show \"{MISSING}\"): {', '.join(f'`{name}`' for name in missing)}; each runs with "
                      f"`./run_all.sh --subset NAME --scale {scale}`, all of them with `--subset mini-all --scale {scale}`.", ""]
    return lines


def timing_section(runs_dir: Path) -> list[str]:
    """The latest driver invocation of each plan (subset, scale) that ran something: its wall time,
    start-up and the wall time of its runs by kind (``RUNS_DIR/driver.jsonl``)."""
    latest: dict[tuple[str, str], dict] = {}
    for record in read_invocations(runs_dir):
        latest[(record.get("subset", "?"), record.get("scale", "?"))] = record
    if not latest:
        return []
    lines = ["## Where the time went", "",
             "The latest driver invocation of each plan (`RUNS_DIR/driver.jsonl`); runs' wall times summed by kind "
             "(with `--jobs N` they overlap, so they add up to more than the wall time).", ""]
    for (subset, scale), record in sorted(latest.items()):
        lines.append(f"- `--subset {subset} --scale {scale}`, finished {record.get('finished', '?')}: "
                     + summary_line(record).removeprefix("time by run kind: ")
                     + f"; {record.get('runs', '?')} of {record.get('planned', '?')} planned runs finished.")
    return [*lines, ""]


def report_paths(report_dir: Path) -> tuple[Path, Path, Path]:
    """(tables, plots, REPORT.md) below ``report_dir``."""
    return report_dir / "tables", report_dir / "plots", report_dir / "REPORT.md"


def rebuild(runs_dir: Path, report_dir: Path, wait: bool = False) -> dict[str, pd.DataFrame]:
    """Records the finished runs below ``runs_dir`` (if it exists) in ``report_dir/records``, then
    rebuilds the report in ``report_dir`` from the records (:func:`build_report`), holding the
    report directory's lock: while another report holds it, :class:`~benchmark.utils.lock.Busy`,
    or with ``wait`` a wait. A record that cannot be read is a :class:`ReportError` naming it, and
    nothing is built."""
    records_dir = report_dir / RECORDS
    if not runs_dir.is_dir() and not records_dir.is_dir():
        raise ReportError(f"{runs_dir}: no such runs directory, and no records in {records_dir}; the report was left as it is")
    with ExitStack() as held:
        try:
            held.enter_context(exclusive(report_dir, "report directory", wait=wait))
        except OSError as err:  # a report directory below a file, or read-only
            raise ReportError(f"{report_dir}: {error_line(err)}; the report was left as it is") from err
        try:
            saved = save_records(runs_dir, records_dir) if runs_dir.is_dir() else 0
            removed = remove_superseded(records_dir) if records_dir.is_dir() else []
        except OSError as err:  # a full disk, a read-only checkout: the records and the report stay as they were
            raise ReportError(f"{records_dir}: {error_line(err)}; the report was left as it is") from err
        if saved or removed:
            print(f"[report] {saved} finished runs of {runs_dir} recorded in {records_dir}"
                  + (f"; {len(removed)} superseded records removed" if removed else ""), file=sys.stderr)
        if not records_dir.is_dir():
            raise ReportError(f"{runs_dir}: no finished evaluation (result.json with its run.json) below it, and no "
                              f"records in {records_dir}; the report was left as it is")
        damaged = damaged_records(records_dir)
        if damaged:
            more = f" (and {len(damaged) - 1} more damaged records)" if len(damaged) > 1 else ""
            raise ReportError(f"damaged record: {damaged[0]}{more}; restore it from git or run "
                              "that run again; the report was left as it is")
        return build_report(records_dir, *report_paths(report_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.report", description="Rebuild tables, plots and REPORT.md.")
    parser.add_argument("--runs-dir", default=str(REPO / "runs"),
                        help="the run directories whose finished runs are recorded first (default: %(default)s)")
    parser.add_argument("--report-dir", default=str(REPO),
                        help=f"where {RECORDS}/, tables/, plots/ and REPORT.md go (default: the repository, %(default)s)")
    parser.add_argument("--wait", action="store_true",
                        help="if another report holds --report-dir, wait for it instead of stopping")
    args = parser.parse_args(argv)
    tables_dir, plots_dir, report_path = report_paths(Path(args.report_dir))
    try:
        tables = rebuild(Path(args.runs_dir), Path(args.report_dir), wait=args.wait)
    except SuiteError as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"interrupted by Ctrl-C: every file in {args.report_dir} is whole, each of this rebuild or the one "
              "before; run the same command again", file=sys.stderr)
        return EXIT_INTERRUPTED
    for name, table in tables.items():
        print(f"{name}: {int((table.ours_mean != MISSING).sum())}/{len(table)} rows with results -> {tables_dir}/{name}.csv")
    print(f"wrote {report_path}")
    return 0
