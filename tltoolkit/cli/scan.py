"""`tltoolkit scan`: check a dataset: images per class and split, quarantined files and why,
duplicates and label conflicts; optionally a per-file report (CSV or Parquet)."""

from __future__ import annotations

import sys

from tltoolkit.cli.output import add_format_argument, check_output_file, print_table


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("scan", help="check a dataset and show its classes and splits", description=__doc__)
    parser.add_argument("--data", required=True, metavar="SRC", help="folder of class subfolders, a .csv/.parquet manifest (path,label[,split]) or tfds:NAME[:SPLIT]")
    parser.add_argument("--val-split", type=float, default=0.2, metavar="F", help="fraction for validation, by content hash (default: %(default)s)")
    parser.add_argument("--report", metavar="FILE", help="write one row per file to FILE.csv or FILE.parquet")
    parser.add_argument("--force", action="store_true", help="replace an existing report")
    parser.add_argument("--cache-dir", metavar="DIR", help="where scan results are cached (default: $XDG_CACHE_HOME/tltoolkit)")
    parser.add_argument("--no-cache", action="store_true", help="re-read every file")
    parser.add_argument("--splits-from", metavar="FILE", help="keep the splits of an earlier scan report or run "
                        "snapshot (.csv/.parquet with sha256,split) for the images it lists")
    parser.add_argument("--data-dir", metavar="DIR", help="TensorFlow Datasets data folder, for tfds: sources")
    parser.add_argument("--show", type=int, default=20, metavar="N", help="list at most N quarantined files (default: %(default)s)")
    add_format_argument(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from tltoolkit.data import scan

    if args.report:
        check_output_file(args.report, "--report", (".csv", ".parquet"), args.force)  # before the scan
    result = scan(args.data, args.val_split, data_dir=args.data_dir, cache=not args.no_cache,
                  cache_dir=args.cache_dir, check=False, splits_from=args.splits_from)
    if args.report:
        result.write_report(args.report, overwrite=args.force)
    summary = result.summary()
    table = summary.copy()
    table.loc[len(table)] = ["total", "", *summary.drop(columns=["class", "id"]).sum()]
    print_table(table, args.format)
    # Notes go to stdout for people, to stderr when stdout is CSV/JSON for a program.
    notes = sys.stdout if args.format == "table" else sys.stderr
    for line in _notes(result, summary, args.show, args.report):
        print(line, file=notes)
    result.check()
    return 0


def _notes(result, summary, show: int, report) -> list[str]:
    lines = []
    quarantined = result.quarantined
    if len(quarantined):
        lines.append(f"quarantined {len(quarantined)} file{'s' * (len(quarantined) != 1)} (not used):")
        lines += [f"  {row.path}: {row.reason}" + (f" ({row.detail})" if row.detail else "")
                  for row in quarantined.head(show).itertuples()]
        if len(quarantined) > show:
            lines.append(f"  ... and {len(quarantined) - show} more" + (f" (all in {report})" if report else " (use --report FILE.csv to list all)"))
    converted = result.table.loc[result.table["status"] == "converted", "reason"].str.split(",").explode()
    if len(converted):
        kinds = ", ".join(f"{kind} {n}" for kind, n in converted.value_counts().items())
        lines.append(f"converted {(result.table['status'] == 'converted').sum()} files on load ({kinds})")
    if len(result.duplicates):
        lines.append(f"duplicates: {len(result.duplicates)} files have the same bytes as another file and are counted once")
    if len(result.conflicts):
        lines.append(f"{result.conflicts['sha256'].nunique()} images appear under two or more labels: quarantined as 'label conflict'")
    no_train = summary.loc[(summary["train"] == 0) & (summary["usable"] > 0), "class"].tolist()
    if no_train:
        lines.append(f"warning: no training images in class {', '.join(map(repr, no_train))}: add images or lower --val-split")
    if result.ignored:
        lines.append(f"ignored {len(result.ignored)} hidden or non-image files")
    cached = f", {result.files_cached} unchanged files from the cache" if result.files_cached else ""
    lines.append(f"read {result.files_read} files{cached}")
    return lines
