use std::collections::{HashMap, HashSet};

use crate::util::{Dir, assert_exit, count, read_csv, stderr, summary};

/// Every case planted in sample-data/ (listed in sample-data/planted.csv and
/// its README) shows up in the demo's reports where it should.
#[test]
fn demo_reports_find_every_planted_case() {
    let d = Dir::with_project();
    let out = d.ferry(&["run", "jobs/demo.toml"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("Reports: "), "{}", stderr(&out));
    let dir = d.latest_report("demo");

    // Linked pairs and how each was linked (`external_id` or `demographics`).
    let how: HashMap<(String, String), String> = read_csv(&dir.join("matched.csv"))
        .into_iter()
        .map(|r| ((r["ehr_id"].clone(), r["practice_mrn"].clone()), r["how"].clone()))
        .collect();
    let matched: HashSet<(String, String)> = how.keys().cloned().collect();
    let diffs: Vec<(String, String, String)> = read_csv(&dir.join("field_differences.csv"))
        .into_iter()
        .map(|r| (r["ehr_id"].clone(), r["practice_mrn"].clone(), r["field"].clone()))
        .collect();
    let unmatched_ehr: HashSet<String> =
        read_csv(&dir.join("unmatched_ehr.csv")).into_iter().map(|r| r["ehr_id"].clone()).collect();
    let unmatched_practice: HashSet<String> = read_csv(&dir.join("unmatched_practice.csv"))
        .into_iter()
        .map(|r| r["practice_mrn"].clone())
        .collect();
    let conflicts: HashSet<(String, String, String)> = read_csv(&dir.join("external_id_conflicts.csv"))
        .into_iter()
        .map(|r| (r["kind"].clone(), r["side"].clone(), r["id"].clone()))
        .collect();
    let rejects: Vec<HashMap<String, String>> = read_csv(&dir.join("rejects.csv"));
    let merges: HashSet<(String, String)> = read_csv(&dir.join("merges.csv"))
        .into_iter()
        .map(|r| (r["surviving_ehr_id"].clone(), r["merged_ehr_id"].clone()))
        .collect();
    // Pairs for review, with why each was not linked.
    let possible: HashMap<(String, String), String> = read_csv(&dir.join("possible_matches.csv"))
        .into_iter()
        .map(|r| ((r["ehr_id"].clone(), r["practice_mrn"].clone()), r["why_not_linked"].clone()))
        .collect();
    // Possible duplicates as (side, lower ID, higher ID).
    let duplicates: HashSet<(String, String, String)> = read_csv(&dir.join("possible_duplicates.csv"))
        .into_iter()
        .map(|r| duplicate_key(&r["side"], &r["id_a"], &r["id_b"]))
        .collect();
    let id_updates: HashSet<(String, String)> = read_csv(&dir.join("id_updates.csv"))
        .into_iter()
        .map(|r| (r["PatientID"].clone(), r["PracticeMRN"].clone()))
        .collect();
    let db = rusqlite::Connection::open(d.home().join("ferry.db")).unwrap();

    let planted = read_csv(&d.path("sample-data/planted.csv"));
    assert!(planted.len() >= 50, "planted.csv lists {} cases", planted.len());
    // The fields a pair is planted to differ in; a matched pair may differ in these only.
    let planted_diffs: HashSet<(String, String, String)> = planted
        .iter()
        .filter(|c| c["expect"] == "field_difference")
        .map(|c| (c["ehr_id"].clone(), c["practice_mrn"].clone(), c["field"].clone()))
        .collect();
    let mut kinds_seen = HashSet::new();
    for case in &planted {
        let what = format!("{case:?}");
        let (ehr, mrn) = (case["ehr_id"].clone(), case["practice_mrn"].clone());
        kinds_seen.insert(case["expect"].clone());
        match case["expect"].as_str() {
            "matched" => {
                let pair = (ehr.clone(), mrn.clone());
                assert!(matched.contains(&pair), "not matched: {what}");
                // `kind`, when set, says how the pair must be linked.
                if !case["kind"].is_empty() {
                    assert_eq!(how[&pair], case["kind"], "linked the wrong way: {what}");
                }
                let unplanted: Vec<_> = diffs
                    .iter()
                    .filter(|d| d.0 == ehr && d.1 == mrn && !planted_diffs.contains(*d))
                    .collect();
                assert!(unplanted.is_empty(), "differences listed for {what}: {unplanted:?}");
            }
            "field_difference" => {
                assert!(matched.contains(&(ehr.clone(), mrn.clone())), "not matched: {what}");
                assert!(diffs.contains(&(ehr, mrn, case["field"].clone())), "difference missing: {what}");
            }
            "unmatched_ehr" => assert!(unmatched_ehr.contains(&ehr), "not in unmatched_ehr: {what}"),
            "unmatched_practice" => {
                assert!(unmatched_practice.contains(&mrn), "not in unmatched_practice: {what}")
            }
            "conflict" => assert!(
                conflicts.contains(&(case["kind"].clone(), case["side"].clone(), case["id_value"].clone())),
                "conflict missing: {what}\nhave: {conflicts:?}"
            ),
            "rejected" | "warning" => {
                let severity = case["expect"].as_str();
                assert!(
                    rejects.iter().any(|r| r["file"] == case["file"]
                        && r["line"] == case["line"]
                        && r["severity"] == severity
                        && (case["field"].is_empty() || r["field"] == case["field"])),
                    "{severity} row missing: {what}"
                );
            }
            "possible_match" => {
                let pair = (ehr.clone(), mrn.clone());
                assert!(!matched.contains(&pair), "linked, should be for review: {what}");
                let why = possible.get(&pair).unwrap_or_else(|| panic!("not in possible_matches: {what}"));
                // `kind` names the reason, where it is certain.
                let reason = match case["kind"].as_str() {
                    "below_link" => "between the review and link thresholds",
                    "ambiguous" => "another candidate scores nearly as well",
                    "first_names_differ" => "first names differ",
                    "" => "",
                    other => panic!("planted.csv has a possible_match kind this test does not know: {other}"),
                };
                assert!(why.contains(reason), "why_not_linked {why:?}, want {reason:?}: {what}");
            }
            "possible_duplicate" => {
                let own = if case["side"] == "ehr" { &ehr } else { &mrn };
                assert!(
                    duplicates.contains(&duplicate_key(&case["side"], own, &case["id_value"])),
                    "not in possible_duplicates: {what}\nhave: {duplicates:?}"
                );
            }
            "id_update" => assert!(id_updates.contains(&(ehr.clone(), mrn.clone())), "no ID update: {what}"),
            "merge" => {
                assert!(merges.contains(&(ehr.clone(), case["id_value"].clone())), "merge missing: {what}")
            }
            "appointment" => {
                let got: (String, String) = db
                    .query_row(
                        "SELECT status, patient_ehr_id FROM appointments WHERE appt_id = ?1",
                        [&case["id_value"]],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .unwrap_or_else(|e| panic!("appointment missing ({e}): {what}"));
                assert_eq!(got, (case["note"].clone(), ehr.clone()), "{what}");
            }
            other => panic!("planted.csv has an expectation this test does not know: {other}"),
        }
    }
    for expect in [
        "matched",
        "field_difference",
        "unmatched_ehr",
        "unmatched_practice",
        "conflict",
        "rejected",
        "warning",
        "possible_match",
        "possible_duplicate",
        "id_update",
    ] {
        assert!(kinds_seen.contains(expect), "planted.csv has no {expect} case");
    }
    // Demographics link, review and flag nobody beyond the planted cases:
    // look-alike strangers and one-sided people stay apart.
    let planted_pairs = |expect: &str, kind: &str| -> HashSet<(String, String)> {
        planted
            .iter()
            .filter(|c| c["expect"] == expect && (kind.is_empty() || c["kind"] == kind))
            .map(|c| (c["ehr_id"].clone(), c["practice_mrn"].clone()))
            .collect()
    };
    let by_demographics: HashSet<(String, String)> =
        how.iter().filter(|(_, h)| *h == "demographics").map(|(p, _)| p.clone()).collect();
    assert_eq!(by_demographics, planted_pairs("matched", "demographics"), "linked by demographics");
    let review = planted_pairs("possible_match", "");
    for (pair, why) in &possible {
        // A record in an ID conflict waits for a person whatever its score.
        assert!(
            review.contains(pair) || why.contains("external-ID conflict"),
            "possible match nobody planted: {pair:?} ({why})"
        );
    }
    let planted_duplicates: HashSet<(String, String, String)> = planted
        .iter()
        .filter(|c| c["expect"] == "possible_duplicate")
        .map(|c| {
            let own = if c["side"] == "ehr" { &c["ehr_id"] } else { &c["practice_mrn"] };
            duplicate_key(&c["side"], own, &c["id_value"])
        })
        .collect();
    assert_eq!(duplicates, planted_duplicates, "possible duplicates");
    assert_eq!(id_updates, planted_pairs("id_update", ""), "ID updates");
    // Nothing beyond the planted cases is rejected.
    let planted_rejects =
        planted.iter().filter(|c| c["expect"] == "rejected" || c["expect"] == "warning").count();
    assert_eq!(rejects.len(), planted_rejects, "rejects.csv: {rejects:?}");

    // Counts add up for every input file.
    let s = summary(&dir);
    for file in [
        "ehr/ehr_patients_20261120.csv",
        "ehr/ehr_adt_siu_20261120.hl7",
        "ehr/ehr_adt_20261121.hl7",
        "practice/roster_20261120.csv",
    ] {
        let scope = format!("file:{file}");
        let read = count(&s, &scope, "read");
        assert!(read >= 3, "{file}: only {read} rows");
        assert_eq!(read, count(&s, &scope, "accepted") + count(&s, &scope, "rejected"), "{file}");
    }
    let metric = |name: &str| count(&s, "reconcile", name) as usize;
    assert_eq!(metric("matched"), matched.len());
    assert_eq!(
        metric("matched"),
        metric("matched_by_practice_mrn") + metric("matched_by_ehr_id") + metric("matched_by_demographics")
    );
    assert_eq!(metric("matched_by_demographics"), by_demographics.len());
    assert_eq!(metric("possible_matches"), possible.len());
    assert_eq!(metric("possible_duplicates"), duplicates.len());
    assert_eq!(metric("id_updates"), id_updates.len());
    assert_eq!(metric("unmatched_ehr"), unmatched_ehr.len());
    assert_eq!(metric("unmatched_practice"), unmatched_practice.len());
    assert_eq!(metric("ehr_patients"), metric("matched") + metric("unmatched_ehr"), "EHR patients");
    assert_eq!(
        metric("practice_patients"),
        metric("matched") + metric("unmatched_practice"),
        "practice patients"
    );
}

/// A possible duplicate as (side, lower ID, higher ID): the report may list the pair either way round.
fn duplicate_key(side: &str, a: &str, b: &str) -> (String, String, String) {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    (side.to_string(), lo.to_string(), hi.to_string())
}

/// Running the demo twice loads nothing twice: the ledger refuses files it has.
#[test]
fn demo_twice_loads_nothing_twice() {
    let d = Dir::with_project();
    assert_exit(&d.ferry(&["run", "demo"]), 0);
    let first = summary(&d.latest_report("demo"));
    let second_run = d.ferry(&["run", "demo"]);
    assert_exit(&second_run, 0);
    assert!(stderr(&second_run).contains("already loaded"), "{}", stderr(&second_run));
    let dirs = d.report_dirs("demo");
    assert_eq!(dirs.len(), 2, "each run writes its own folder");
    let second = summary(&dirs[1]);
    for file in [
        "ehr/ehr_patients_20261120.csv",
        "ehr/ehr_adt_siu_20261120.hl7",
        "ehr/ehr_adt_20261121.hl7",
        "practice/roster_20261120.csv",
    ] {
        let scope = format!("file:{file}");
        assert_eq!(second[&(scope.clone(), "status".to_string())], "already loaded");
        assert_eq!(count(&second, &scope, "read"), 0);
        assert_eq!(count(&second, &scope, "accepted"), 0);
    }
    // The store holds the same patients, so the reconciliation is the same.
    for metric in ["ehr_patients", "practice_patients", "matched", "external_id_conflicts"] {
        assert_eq!(count(&first, "reconcile", metric), count(&second, "reconcile", metric), "{metric}");
    }
    // And the history says the second run loaded no files.
    let hist = d.ferry(&["history", "demo", "--json"]);
    assert_exit(&hist, 0);
    let runs: Vec<serde_json::Value> =
        crate::util::stdout(&hist).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["files"], 0, "newest run first: {runs:?}");
    assert_eq!(runs[1]["files"], 4);
}
