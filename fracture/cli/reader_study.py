"""``python -m fracture reader-study``: create a classroom reading session, summarise it, export it."""
from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("reader-study", help="classroom reader studies: create, summary, export")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    create = verbs.add_parser("create", help="build a case set and print its session code")
    create.add_argument("--pin", required=True,
                        help="instructor PIN (4-32 characters): opens the dashboard, the truth and the CSV in the app")
    create.add_argument("--source", choices=("gallery", "dataset"), default="gallery",
                        help="the built-in real gallery (default) or a dataset's split")
    create.add_argument("--data", help="dataset folder (with --source dataset)")
    create.add_argument("--split", default="test", help="dataset split (default test)")
    create.add_argument("--cases", type=int, default=10, help="number of cases (default 10)")
    create.add_argument("--seed", type=int, default=0)
    create.add_argument("--prevalence", choices=("balanced", "natural"), default="balanced")
    create.add_argument("--body-part", help="only this body part")
    create.add_argument("--checkpoint", help="model to compare with (default: the app's default model)")
    create.add_argument("--dir", help="sessions folder (default $FRACTURE_HOME/reader_studies)")
    create.set_defaults(func=run_create)
    summary = verbs.add_parser("summary", help="every reader's figures and Fleiss' kappa")
    summary.add_argument("code")
    summary.add_argument("--json", action="store_true", help="print JSON")
    summary.add_argument("--dir", help="sessions folder")
    summary.set_defaults(func=run_summary)
    export = verbs.add_parser("export", help="one CSV row per reader and answered case")
    export.add_argument("code")
    export.add_argument("--out", required=True, help="CSV file to write")
    export.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    export.add_argument("--dir", help="sessions folder")
    export.set_defaults(func=run_export)


def run_create(args: argparse.Namespace) -> int:
    from fracture.serve.predictor import default_checkpoint
    from fracture.reader_study import create_session

    checkpoint = args.checkpoint or default_checkpoint()
    session = create_session(
        pin=args.pin, source=args.source, data_root=args.data, split=args.split, n_cases=args.cases, seed=args.seed,
        prevalence=args.prevalence, body_part=args.body_part, checkpoint=checkpoint, root=args.dir,
    )
    positives = sum(c.label for c in session.cases)
    print(f"session {session.code}: {len(session.cases)} cases ({positives} fractured) from {session.source_detail}")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    from fracture.util.jsonio import json_default
    from fracture.reader_study import load_session, session_summary

    summary = session_summary(load_session(args.code, args.dir), args.dir)
    if args.json:
        print(json.dumps(summary, indent=2, default=json_default))
        return 0

    def fmt(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    print(f"session {summary['code']}: {summary['cases']} cases, {len(summary['readers'])} readers "
          f"({len(summary['finished'])} finished), Fleiss' kappa {fmt(summary['fleiss_kappa'])} over the "
          f"{summary['fleiss_readers']} readers who finished (needs 2 and 5 cases)")
    if summary["unfinished"]:
        print(f"  unfinished (not in Fleiss' kappa): {', '.join(summary['unfinished'])}")
    for problem in summary["problems"] + summary["notes"]:
        print(f"  note: {problem}")
    for row in summary["readers"]:
        print(f"  {row['reader'][:30]:30s} answered {row['answered']:3d}  sens {fmt(row['sensitivity'])}  "
              f"spec {fmt(row['specificity'])}  acc {fmt(row['accuracy'])}  kappa(truth) {fmt(row['kappa_truth'])}  "
              f"kappa(model) {fmt(row['kappa_model'])}")
    model = summary["model"]
    if model:
        print(f"  {'model':30s} answered {model['n']:3d}  sens {fmt(model['sensitivity'])}  "
              f"spec {fmt(model['specificity'])}  acc {fmt(model['accuracy'])}  kappa(truth) {fmt(model['kappa_truth'])}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from fracture.reader_study import export_csv, load_session

    out = export_csv(load_session(args.code, args.dir), args.out, args.dir, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0
