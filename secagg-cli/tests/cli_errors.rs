//! How failures reach scripts: with `--format json` (or `--error-format json`) a failure is one
//! JSON document on stderr — kind, exit code, message, hint — and nothing on stdout, so scripts
//! and the Python side never parse prose; an explicit `--error-format text` wins.

#[path = "../../tests/support/mod.rs"]
mod support;

use secagg_core::ErrorKind;
use support::secagg;

#[test]
fn format_json_turns_a_failure_into_one_json_document_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-home");
    for args in [
        &["certificate", "list", "--format", "json"][..],
        &["certificate", "list", "--format=json"][..],
        &["identity", "show", "--error-format", "json"][..],
    ] {
        let run = secagg(&missing, args);
        assert_eq!(
            run.code,
            ErrorKind::NotFound.exit_code(),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{args:?}: stdout {}", run.stdout);
        let line = run.stderr.trim();
        assert_eq!(line.lines().count(), 1, "{args:?}: {line}");
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(j["kind"], "not_found");
        assert_eq!(j["exit_code"], 4);
        assert!(
            j["message"]
                .as_str()
                .unwrap()
                .contains("no secagg identity"),
            "{j}"
        );
        assert!(j["hint"].as_str().unwrap().contains("secagg init"), "{j}");
    }
    // Text for people, unless asked otherwise.
    let text = secagg(&missing, &["certificate", "list"]);
    assert!(
        text.stderr.starts_with("error: no secagg identity"),
        "{}",
        text.stderr
    );
    let explicit = secagg(
        &missing,
        &[
            "certificate",
            "list",
            "--format",
            "json",
            "--error-format",
            "text",
        ],
    );
    assert!(
        explicit.stderr.starts_with("error: "),
        "{}",
        explicit.stderr
    );
    // A value refused while parsing the arguments follows the same rule.
    let bad = secagg(
        &missing,
        &["context", "show", "not-a-uuid", "--format", "json"],
    );
    assert_eq!(
        bad.code,
        ErrorKind::InvalidInput.exit_code(),
        "{}",
        bad.stderr
    );
    let j: serde_json::Value = serde_json::from_str(bad.stderr.trim()).unwrap();
    assert_eq!(j["kind"], "invalid_input");
}
