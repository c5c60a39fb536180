#!/usr/bin/env python3
"""Link an EHR export to a practice roster with Python's recordlinkage and splink,
or score another tool's links (ferry's) on the same data.

    python compare.py DATA_DIR [--tool recordlinkage|splink|all] [--json]
    python compare.py DATA_DIR --evaluate LINKS.csv [--name ferry] [--json]

DATA_DIR holds ehr_patients.csv (UTF-8 with BOM), practice_roster.csv
(Windows-1252) and truth.csv (person_id,side,record_id). stdout gets one JSON
object per tool per line, and nothing else:

    {"tool": "recordlinkage", "seconds": 12.3, "links": N, "precision": p,
     "recall": r, "f1": f, "pairs_compared": K}

Without --json, a readable summary (blocking pass sizes, thresholds, the
libraries' own log lines) also goes to stderr; with --json stderr carries only
warnings and errors.

`seconds` is the wall time (time.perf_counter) of the linkage itself: reading
and normalising both files, blocking, comparing, training, classifying and
choosing the links. It excludes interpreter start-up, importing the library,
reading truth.csv, scoring, and the blocking report.

--evaluate needs only the standard library, so it runs with any python3: LINKS.csv
is a CSV with a header row and columns ehr_id,practice_id (others ignored, a
UTF-8 BOM allowed); its JSON line has "seconds" and "pairs_compared" null.

Scoring (the same for every tool):
  * a link is a pair (EHR PatientID, roster Chart Number); duplicates count once;
    it is correct when truth.csv gives both records the same person_id;
  * precision = correct links / links (0 when there are no links);
  * recall = people with at least one correct link / people with at least one
    record on each side;
  * f1 = 2pr / (p + r) (0 when p + r is 0).

Which links a tool reports (one policy, applied to both libraries): of the
candidate pairs that the library itself classifies as a match (recordlinkage:
the ECM classifier's prediction, i.e. match probability > 0.5; splink: match
probability >= SPLINK_THRESHOLD), each EHR record keeps its best-scoring
pair(s); pairs tied at that record's best score are all kept. So an EHR record
links to at most one roster person unless the library cannot tell two roster
records apart, and two EHR records of one person may both link to the same
roster record. Picking the best pair is what keeps a twin from being linked to
both twins' roster rows. (--policy all keeps every accepted pair instead, to
see how much the choice matters; the benchmark uses the default.)

Neither library sees the cross-reference columns (PracticeMRN, EHR Patient ID):
they link on demographics only.
"""

from __future__ import annotations

import os

# At most 2 threads anywhere (the benchmark machine has 2 cores). These must be
# set before numpy / scipy / scikit-learn are imported.
THREADS = 2
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMEXPR_MAX_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))

import argparse
import contextlib
import csv
import json
import logging
import sys
import time
import warnings
from pathlib import Path

# The threshold on splink's match probability (--splink-threshold). splink's
# docs give no universal value (its tutorial, on a small and very messy demo
# set, predicts at 0.1 and clusters at 0.2); the benchmark's setting is 0.9,
# i.e. a pair is linked only when splink is 90% sure.
SPLINK_THRESHOLD = 0.9

# Blocking passes shared by both libraries. A candidate pair must agree exactly
# on every column of at least one pass (a missing value never agrees); the
# candidate set is the union of the passes.
#  1. date of birth                   -- everything but date-of-birth errors
#  2. last-name Soundex + birth year  -- day/month swaps and day typos
#  3. ZIP + last-name initial         -- any date error, if the person did not move
#  4. phone                           -- date and name errors together
#  5. e-mail                          -- likewise
BLOCKING_PASSES = [
    ("dob",),
    ("last_soundex", "birth_year"),
    ("zip", "last_initial"),
    ("phone",),
    ("email",),
]

QUIET = False   # set by --json


def log(msg: str) -> None:
    if not QUIET:
        print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Reading and normalising (shared by both libraries)
# --------------------------------------------------------------------------

# Street-suffix words written in full -> the USPS abbreviation, so that
# "12 Maple Street" and "12 MAPLE ST" compare equal.
STREET_SUFFIXES = {
    "STREET": "ST", "ROAD": "RD", "AVENUE": "AVE", "LANE": "LN", "DRIVE": "DR",
    "COURT": "CT", "PLACE": "PL", "TERRACE": "TER", "BOULEVARD": "BLVD",
    "CIRCLE": "CIR", "PARKWAY": "PKWY", "HIGHWAY": "HWY", "SQUARE": "SQ",
    "NORTH": "N", "SOUTH": "S", "EAST": "E", "WEST": "W",
}

def _read_csv(path: Path, encoding: str):
    import pandas as pd
    # Every column as a string: IDs keep their leading zeros, ZIPs too.
    # encoding_errors="replace": a byte Windows-1252 leaves undefined (0x81...)
    # must not abort the run.
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding=encoding,
                       encoding_errors="replace")


def _blank_to_na(s):
    import numpy as np
    s = s.str.strip()
    return s.where(s != "", np.nan)


def norm_name(s):
    """Upper-case A-Z only: accents folded (José -> JOSE), punctuation and spaces
    removed (O'Brien -> OBRIEN, Smith-Jones -> SMITHJONES)."""
    s = (s.fillna("").str.normalize("NFKD").str.encode("ascii", "ignore").str.decode("ascii")
         .str.upper().str.replace(r"[^A-Z]", "", regex=True))
    return _blank_to_na(s)


def norm_date(s, fmt: str):
    """To ISO YYYY-MM-DD; anything that does not parse becomes missing."""
    import pandas as pd
    return pd.to_datetime(s.str.strip(), format=fmt, errors="coerce").dt.strftime("%Y-%m-%d")


def norm_sex(s):
    s = s.str.strip().str.upper().str[:1]
    return s.where(s.isin(["M", "F"]))


def norm_phone(s):
    """10 digits (a leading country code 1 dropped); anything else missing."""
    d = s.fillna("").str.replace(r"\D", "", regex=True)
    d = d.where(~((d.str.len() == 11) & d.str.startswith("1")), d.str[1:])
    return d.where(d.str.len() == 10)


def norm_zip(s):
    """5 digits: ZIP+4 cut, and a 4-digit ZIP (a leading zero eaten by a
    spreadsheet) padded back."""
    d = s.fillna("").str.split("-").str[0].str.replace(r"\D", "", regex=True)
    d = d.where(d.str.len() != 9, d.str[:5])
    d = d.where(d.str.len() != 4, d.str.zfill(5))
    return d.where(d.str.len() == 5)


def norm_email(s):
    s = _blank_to_na(s.str.lower())
    return s.where(s.str.contains("@", na=False))


def norm_address(s):
    """Upper-case words, punctuation dropped, street suffixes abbreviated."""
    words = (s.fillna("").str.normalize("NFKD").str.encode("ascii", "ignore").str.decode("ascii")
             .str.upper().str.replace(r"[^A-Z0-9 ]", " ", regex=True).str.split())
    return _blank_to_na(words.map(lambda ws: " ".join(STREET_SUFFIXES.get(w, w) for w in ws)))


def norm_city(s):
    return _blank_to_na(s.fillna("").str.upper().str.replace(r"[^A-Z ]", "", regex=True)
                        .str.split().str.join(" "))


def _finish(df, side: str):
    """Drop rows without an ID (they cannot be reported as links) and repeats of
    an ID (splink needs unique IDs; the first row wins), add the derived
    blocking keys, and index by record ID."""
    import jellyfish   # a dependency of recordlinkage, installed by setup.sh
    has_id = df["record_id"].notna() & (df["record_id"] != "")
    repeated = has_id & df["record_id"].duplicated()
    if (~has_id).sum() or repeated.sum():
        print(f"compare.py: {side}: ignoring {(~has_id).sum()} row(s) without an ID and "
              f"{repeated.sum()} repeating an earlier row's ID", file=sys.stderr)
    df = df[has_id & ~repeated].copy()
    df["last_soundex"] = df["last_name"].map(
        lambda v: jellyfish.soundex(v) if isinstance(v, str) else None)
    df["birth_year"] = df["dob"].str[:4]
    df["last_initial"] = df["last_name"].str[:1]
    return df.set_index("record_id")


def load_sides(data_dir: Path):
    """Read both files and reduce them to the same normalised columns.
    Returns (ehr, practice), each indexed by its record ID (a string)."""
    import pandas as pd
    e = _read_csv(data_dir / "ehr_patients.csv", "utf-8-sig")
    ehr = pd.DataFrame({
        "record_id": e["PatientID"].str.strip(),
        "first_name": norm_name(e["FirstName"]),
        "last_name": norm_name(e["LastName"]),
        "dob": norm_date(e["DOB"], "%m/%d/%Y"),
        "sex": norm_sex(e["Gender"]),
        "address": norm_address(e["Address1"]),
        "city": norm_city(e["City"]),
        "zip": norm_zip(e["Zip"]),
        "phone": norm_phone(e["Phone"]),
        "email": norm_email(e["Email"]),
    })
    p = _read_csv(data_dir / "practice_roster.csv", "cp1252")
    home, cell = norm_phone(p["Home Phone"]), norm_phone(p["Cell Phone"])
    prac = pd.DataFrame({
        "record_id": p["Chart Number"].str.strip(),
        "first_name": norm_name(p["First Name"]),
        "last_name": norm_name(p["Last Name"]),
        "dob": norm_date(p["Date of Birth"], "%Y-%m-%d"),
        "sex": norm_sex(p["Sex"]),
        "address": norm_address(p["Street"]),
        "city": norm_city(p["City"]),
        "zip": norm_zip(p["ZIP Code"]),
        "phone": home.fillna(cell),          # the home phone, else the cell phone
        "email": norm_email(p["E-mail"]),
    })
    return _finish(ehr, "ehr_patients.csv"), _finish(prac, "practice_roster.csv")


POLICY = "best"  # set by --policy


def choose_links(ehr_ids, prac_ids, scores) -> set[tuple[str, str]]:
    """The link policy (see the module docstring), given the pairs the library
    accepted and their scores: by default, for each EHR record the pair(s) with
    its highest score, ties kept; with --policy all, every accepted pair."""
    import pandas as pd
    df = pd.DataFrame({"e": ehr_ids, "p": prac_ids, "s": scores})
    if df.empty:
        return set()
    if POLICY == "best":
        df = df[df["s"] >= df.groupby("e")["s"].transform("max")]
    return set(zip(df["e"].astype(str), df["p"].astype(str)))


# --------------------------------------------------------------------------
# recordlinkage
# --------------------------------------------------------------------------

def run_recordlinkage(data_dir: Path) -> dict:
    """Following the recordlinkage docs: an Index of several blocking passes
    (their union), a Compare of binary features, the unsupervised ECM
    classifier."""
    import recordlinkage as rl

    t0 = time.perf_counter()
    ehr, prac = load_sides(data_dir)

    # Blocking: several passes added to one Index give the union of their pairs.
    indexer = rl.Index()
    for keys in BLOCKING_PASSES:
        indexer.block(list(keys))
    pairs = indexer.index(ehr, prac)

    # Comparison vectors. ECM needs binary features: string similarities are
    # thresholded to 0/1, and a missing value on either side scores 0.
    cmp = rl.Compare(n_jobs=1)
    cmp.string("first_name", "first_name", method="jarowinkler", threshold=0.85, label="first_name")
    cmp.string("last_name", "last_name", method="jarowinkler", threshold=0.85, label="last_name")
    cmp.exact("dob", "dob", label="dob")
    cmp.exact("sex", "sex", label="sex")
    cmp.exact("zip", "zip", label="zip")
    cmp.exact("phone", "phone", label="phone")
    cmp.exact("email", "email", label="email")
    cmp.string("address", "address", method="levenshtein", threshold=0.85, label="address")
    features = cmp.compute(pairs, ehr, prac)

    # Unsupervised Fellegi-Sunter via expectation-conditional maximisation.
    ecm = rl.ECMClassifier(binarize=None)
    matches = ecm.fit_predict(features)              # a MultiIndex of (ehr, practice)
    prob = ecm.prob(features).loc[matches]
    links = choose_links(matches.get_level_values(0), matches.get_level_values(1),
                         prob.to_numpy())
    seconds = time.perf_counter() - t0

    # Report (not timed): pairs per blocking pass, and what ECM learned.
    if not QUIET:
        for keys in BLOCKING_PASSES:
            n = len(_single_pass(rl, keys).index(ehr, prac))
            log(f"recordlinkage: block on {'+'.join(keys)}: {n} pairs")
        log(f"recordlinkage: {len(pairs)} candidate pairs after the union; "
            f"ECM classified {len(matches)} as matches, {len(links)} kept as links")
        log("recordlinkage: ECM m-probabilities: "
            + ", ".join(f"{k}={v[1]:.3f}" for k, v in ecm.m_probs.items()))
        log("recordlinkage: ECM u-probabilities: "
            + ", ".join(f"{k}={v[1]:.3f}" for k, v in ecm.u_probs.items()))
        log(f"recordlinkage: ECM p (share of pairs that match) = {ecm.p:.4f}")
    return {"seconds": seconds, "links": links, "pairs_compared": len(pairs)}


def _single_pass(rl, keys):
    ix = rl.Index()
    ix.block(list(keys))
    return ix


# --------------------------------------------------------------------------
# splink 4 (DuckDB)
# --------------------------------------------------------------------------

def _duckdb_connection():
    """An in-memory DuckDB that uses 2 threads and can never reach the network:
    no automatic extension install/load (the only thing in DuckDB that would
    download), and no external access at all (no httpfs, no remote files).
    splink itself has no telemetry; it downloads only when its example
    datasets (splink.datasets) are used, which this script does not do."""
    import duckdb
    return duckdb.connect(":memory:", config={
        "threads": THREADS,
        "async_threads": 1,              # I/O threads: there is no I/O here
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "enable_external_access": False,
    })


def run_splink(data_dir: Path) -> dict:
    """Following splink 4's tutorials: a link_only model on the DuckDB backend,
    lambda from deterministic rules, u by random sampling, m by EM on two
    blocking rules, then predict."""
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on
    from splink.blocking_analysis import cumulative_comparisons_to_be_scored_from_blocking_rules_data

    t0 = time.perf_counter()
    ehr, prac = load_sides(data_dir)
    tables = [ehr.rename_axis("unique_id").reset_index(),
              prac.rename_axis("unique_id").reset_index()]
    db_api = DuckDBAPI(connection=_duckdb_connection())

    prediction_rules = [block_on(*keys) for keys in BLOCKING_PASSES]
    settings = SettingsCreator(
        link_type="link_only",
        unique_id_column_name="unique_id",
        blocking_rules_to_generate_predictions=prediction_rules,
        comparisons=[
            # Exact, then Jaro-Winkler >= 0.92 / 0.88 / 0.70; common names weigh less.
            cl.NameComparison("first_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("last_name").configure(term_frequency_adjustments=True),
            # Exact, Damerau-Levenshtein <= 1, within 1 month / 1 year / 10 years.
            cl.DateOfBirthComparison("dob", input_is_string=True, datetime_format="%Y-%m-%d"),
            cl.ExactMatch("sex"),
            cl.ExactMatch("zip"),
            cl.ExactMatch("phone"),
            cl.ExactMatch("email"),
            cl.LevenshteinAtThresholds("address", [1, 3]),
        ],
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
    )
    linker = Linker(tables, settings, db_api, input_table_aliases=["ehr", "practice"],
                    set_up_basic_logging=not QUIET)

    # lambda (the prior that two random records match), from deterministic rules
    # and a guess of their recall, as splink's tutorial does (it guesses 0.7 for
    # looser rules; ours each need the birth date and two more fields, so 0.8).
    linker.training.estimate_probability_two_random_records_match(
        [block_on("first_name", "last_name", "dob"),
         block_on("last_name", "dob", "phone"),
         block_on("email", "dob")],
        recall=0.8,
    )
    # u from 1e6 random pairs. splink warns that this may be too few (its docs
    # suggest 1e7+ for large inputs); on the 10,000 x 10,000 fixture 1e7 moved
    # F1 by 0.0001 and made the run 7 times slower. A fixed seed makes runs
    # repeatable.
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    # m by EM; each rule leaves its own columns untrained, the other trains them.
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("first_name", "last_name"))

    pred = linker.inference.predict(threshold_match_probability=SPLINK_THRESHOLD)
    df = pred.as_pandas_dataframe()
    # With two inputs in link_only mode each pair has one record of each side;
    # which side is _l is splink's choice, so read it from source_dataset.
    l_is_ehr = df["source_dataset_l"] == "ehr"
    e_ids = df["unique_id_l"].where(l_is_ehr, df["unique_id_r"])
    p_ids = df["unique_id_r"].where(l_is_ehr, df["unique_id_l"])
    links = choose_links(e_ids, p_ids, df["match_probability"].to_numpy())
    seconds = time.perf_counter() - t0

    # Not timed: how many candidate pairs the prediction rules generate.
    counts = cumulative_comparisons_to_be_scored_from_blocking_rules_data(
        table_or_tables=tables, blocking_rules=prediction_rules, link_type="link_only",
        db_api=db_api, unique_id_column_name="unique_id")
    pairs_compared = int(counts["row_count"].sum())
    if not QUIET:
        for rule, n in zip(counts["blocking_rule"], counts["row_count"]):
            log(f"splink: {rule}: {n} new pairs")
        log(f"splink: {pairs_compared} candidate pairs; {len(df)} scored >= "
            f"{SPLINK_THRESHOLD}, {len(links)} kept as links")
    return {"seconds": seconds, "links": links, "pairs_compared": pairs_compared}


# --------------------------------------------------------------------------
# Scoring (standard library only)
# --------------------------------------------------------------------------

def read_truth(data_dir: Path) -> dict[str, dict[str, str]]:
    """{'ehr': {record_id: person_id}, 'practice': {...}}"""
    truth: dict[str, dict[str, str]] = {"ehr": {}, "practice": {}}
    with open(data_dir / "truth.csv", encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            side = row["side"].strip().lower()
            if side in truth:
                truth[side][row["record_id"].strip()] = row["person_id"].strip()
    return truth


def read_links(path: Path) -> set[tuple[str, str]]:
    """ferry's (or anyone's) links: a header row with ehr_id and practice_id."""
    links = set()
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        fields = {(name or "").strip(): name for name in (reader.fieldnames or [])}
        if "ehr_id" not in fields or "practice_id" not in fields:
            raise SystemExit(f"{path}: the header must have ehr_id and practice_id "
                             f"(it has {reader.fieldnames})")
        for row in reader:
            e = (row[fields["ehr_id"]] or "").strip()
            p = (row[fields["practice_id"]] or "").strip()
            if e and p:
                links.add((e, p))
    return links


def write_links(path: Path, links: set[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["ehr_id", "practice_id"])
        w.writerows(sorted(links))


def score(links: set[tuple[str, str]], truth: dict[str, dict[str, str]]) -> dict:
    ehr_person, prac_person = truth["ehr"], truth["practice"]
    correct = [(e, p) for e, p in links
               if e in ehr_person and ehr_person[e] == prac_person.get(p)]
    linkable = set(ehr_person.values()) & set(prac_person.values())
    found = {ehr_person[e] for e, _ in correct}
    precision = len(correct) / len(links) if links else 0.0
    recall = len(found) / len(linkable) if linkable else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"links": len(links), "precision": round(precision, 6),
            "recall": round(recall, 6), "f1": round(f1, 6)}


# --------------------------------------------------------------------------

TOOLS = {"recordlinkage": run_recordlinkage, "splink": run_splink}


def main() -> int:
    global QUIET, POLICY, SPLINK_THRESHOLD
    ap = argparse.ArgumentParser(
        description="Compare record linkage of recordlinkage, splink (and ferry) on one data set.",
        epilog="stdout: one JSON object per tool per line. See the module docstring for details.")
    ap.add_argument("data_dir", type=Path, help="folder with ehr_patients.csv, "
                    "practice_roster.csv and truth.csv")
    ap.add_argument("--tool", choices=["recordlinkage", "splink", "all"], default="all")
    ap.add_argument("--json", action="store_true",
                    help="machine mode: JSON lines on stdout only, no summary on stderr")
    ap.add_argument("--policy", choices=["best", "all"], default="best",
                    help="links kept from the pairs a library accepts: each EHR record's best "
                    "(default, the benchmark's setting) or all of them")
    ap.add_argument("--splink-threshold", type=float, default=SPLINK_THRESHOLD, metavar="P",
                    help=f"splink's match-probability threshold (default {SPLINK_THRESHOLD})")
    ap.add_argument("--evaluate", type=Path, metavar="LINKS.csv",
                    help="score the links in this CSV (ehr_id,practice_id) instead of running a tool")
    ap.add_argument("--name", default="ferry", help="the tool name for --evaluate (default ferry)")
    ap.add_argument("--write-links", type=Path, metavar="DIR",
                    help="also write each tool's links to DIR/TOOL_links.csv (ehr_id,practice_id), "
                    "the format --evaluate reads")
    args = ap.parse_args()
    QUIET, POLICY, SPLINK_THRESHOLD = args.json, args.policy, args.splink_threshold
    if not QUIET:
        logging.basicConfig(format="%(message)s", stream=sys.stderr)
    for name in ("ehr_patients.csv", "practice_roster.csv", "truth.csv"):
        if not (args.data_dir / name).is_file():
            ap.error(f"{args.data_dir / name} not found")

    truth = read_truth(args.data_dir)
    if args.evaluate:
        result = {"tool": args.name, "seconds": None, **score(read_links(args.evaluate), truth),
                  "pairs_compared": None}
        print(json.dumps(result), flush=True)
        return 0

    for tool in (TOOLS if args.tool == "all" else [args.tool]):
        log(f"--- {tool}")
        # Libraries may print; keep stdout for the JSON lines only.
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            if QUIET:
                warnings.simplefilter("ignore", FutureWarning)
            try:
                out = TOOLS[tool](args.data_dir)
            except ModuleNotFoundError as e:
                print(f"compare.py: {e}; run this with the python of the venv that "
                      "benches/linkage/setup.sh creates", file=sys.stderr)
                return 1
        if args.write_links:
            write_links(args.write_links / f"{tool}_links.csv", out["links"])
        result = {"tool": tool, "seconds": round(out["seconds"], 3),
                  **score(out["links"], truth), "pairs_compared": out["pairs_compared"]}
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
