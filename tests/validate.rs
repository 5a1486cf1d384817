//! `ringfence validate` on the shared table of manifests under
//! `tests/fixtures/manifests/`: each invalid file holds one mistake and says in
//! its header which field must be reported and with what words.

#[path = "support/tempdir.rs"]
mod tempdir;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ringfence::validation::ManifestValidator;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/manifests");

struct Expectation {
    path: PathBuf,
    text: String,
    field: String,
    message: String,
    name: String,
}

fn files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(FIXTURES).join(dir))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn header(text: &str, key: &str) -> Option<String> {
    text.lines()
        .take_while(|line| line.starts_with('#'))
        .find_map(|line| line.strip_prefix(&format!("# {key}: ")).map(str::to_string))
}

fn invalid_cases() -> Vec<Expectation> {
    files("invalid")
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let field = header(&text, "field")
                .unwrap_or_else(|| panic!("{}: no `# field:` header", path.display()));
            let message = header(&text, "message")
                .unwrap_or_else(|| panic!("{}: no `# message:` header", path.display()));
            let name = header(&text, "name").unwrap_or_else(|| "checkout-flags".into());
            Expectation {
                path,
                text,
                field,
                message,
                name,
            }
        })
        .collect()
}

fn ringfence(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringfence"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn validate(paths: &[&Path]) -> (i32, String, String) {
    let mut args = vec!["validate", "-f"];
    args.extend(paths.iter().map(|p| p.to_str().unwrap()));
    let output = ringfence(&args, None);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn the_table_is_big_enough_and_every_mistake_is_different() {
    let cases = invalid_cases();
    assert!(cases.len() >= 30, "{} invalid manifests", cases.len());
    assert!(files("valid").len() >= 5);
    let mut seen: Vec<(&str, &str)> = cases
        .iter()
        .map(|c| (c.field.as_str(), c.message.as_str()))
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        cases.len(),
        "two invalid manifests expect the same field and message"
    );
}

#[test]
fn each_invalid_manifest_fails_naming_its_field() {
    let mut failures = Vec::new();
    for case in invalid_cases() {
        let (code, stdout, stderr) = validate(&[&case.path]);
        let prefix = format!("{}: {}: {}: ", case.path.display(), case.name, case.field);
        let reported = stdout
            .lines()
            .any(|line| line.starts_with(&prefix) && line.contains(&case.message));
        if code != 1 || !reported {
            failures.push(format!(
                "{}: exit {code}, expected a line starting {prefix:?} containing {:?}\nstdout:\n{stdout}stderr:\n{stderr}",
                case.path.display(),
                case.message
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_library_reports_the_same_violations() {
    let validator = ManifestValidator::new().unwrap();
    let mut failures = Vec::new();
    for case in invalid_cases() {
        let reports = validator.check_text(&case.text).unwrap();
        let field = if case.field == "(object)" {
            ""
        } else {
            case.field.as_str()
        };
        let found = reports
            .iter()
            .filter(|r| r.name == case.name)
            .flat_map(|r| &r.violations)
            .any(|v| v.field == field && v.message.contains(&case.message));
        if !found {
            failures.push(format!("{}: {reports:#?}", case.path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_manifests_pass() {
    let validator = ManifestValidator::new().unwrap();
    let valid = files("valid");
    for path in &valid {
        let (code, stdout, stderr) = validate(&[path]);
        let expected = if path.ends_with("04-two-documents.yaml") {
            "2 manifests valid\n"
        } else {
            "1 manifest valid\n"
        };
        assert_eq!(
            (code, stdout.as_str(), stderr.as_str()),
            (0, expected, ""),
            "{}",
            path.display()
        );
        let text = std::fs::read_to_string(path).unwrap();
        for report in validator.check_text(&text).unwrap() {
            assert!(
                report.violations.is_empty(),
                "{}: {report:?}",
                path.display()
            );
        }
    }
    let all: Vec<&Path> = valid.iter().map(PathBuf::as_path).collect();
    let (code, stdout, _) = validate(&all);
    assert_eq!(
        (code, stdout.as_str()),
        (0, format!("{} manifests valid\n", valid.len() + 1).as_str())
    );
}

#[test]
fn a_multi_document_file_reports_only_the_bad_document() {
    let dir = tempdir::tempdir().unwrap();
    let path = dir.path().join("rollouts.yaml");
    let good = std::fs::read_to_string(Path::new(FIXTURES).join("valid/02-minimal.yaml")).unwrap();
    let bad = good
        .replace("name: minimal", "name: broken")
        .replace("namespaces: [default]", "namespaces: []");
    let other_kind = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: not-a-rollout}\n";
    std::fs::write(&path, format!("{good}---\n{bad}---\n{other_kind}")).unwrap();
    let (code, stdout, stderr) = validate(&[&path]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let file = path.display().to_string();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{file}: broken: spec.rings[0].namespaces: Invalid value: \"array\": should have at least 1 items"
            ),
            format!(
                "{file}: not-a-rollout: apiVersion: Unsupported value: \"v1\": supported values: \"ringfence.dev/v1alpha1\""
            ),
            format!(
                "{file}: not-a-rollout: kind: Unsupported value: \"ConfigMap\": supported values: \"ConfigRollout\""
            ),
        ]
    );
    assert_eq!(stderr, "3 problems in 2 of 3 manifests\n");
}

#[test]
fn stdin_is_read_for_a_dash() {
    let good =
        std::fs::read_to_string(Path::new(FIXTURES).join("valid/01-design-example.yaml")).unwrap();
    let output = ringfence(&["validate", "-f", "-"], Some(&good));
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "1 manifest valid\n"
    );

    let bad = good.replace("bake: 15m", "bake: \"15\"");
    let output = ringfence(&["validate", "-f", "-"], Some(&bad));
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "<stdin>: checkout-flags: spec.rings[1].bake: Invalid value: \"15\": must be a duration such as 30s, 5m or 1h30m\n"
    );
}

#[test]
fn broken_yaml_exits_2_with_line_and_column() {
    let output = ringfence(
        &["validate", "-f", "-"],
        Some("apiVersion: ringfence.dev/v1alpha1\nkind: ConfigRollout\nspec: {rings: [\n"),
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("<stdin>: invalid YAML at line 3, column "),
        "{stderr}"
    );

    let output = ringfence(&["validate", "-f", "-"], Some("a: 1\na: 2\n"));
    assert_eq!(
        output.status.code(),
        Some(2),
        "duplicate keys are an error, as with kubectl"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("line 2"),
        "{output:?}"
    );
}

#[test]
fn unreadable_files_exit_2_and_the_rest_is_still_checked() {
    let dir = tempdir::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let bad = Path::new(FIXTURES).join("invalid/06-bake-not-a-duration.yaml");
    let (code, stdout, stderr) = validate(&[&missing, dir.path(), &bad]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(&format!("{}: cannot read: ", missing.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}: cannot read: ", dir.path().display())),
        "{stderr}"
    );
    assert!(stdout.contains("spec.rings[1].bake"), "{stdout}");

    let binary = dir.path().join("binary.yaml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
    assert_eq!(validate(&[&binary]).0, 2);
}

#[test]
fn an_empty_file_is_a_problem() {
    let dir = tempdir::tempdir().unwrap();
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "---\n# nothing\n---\n").unwrap();
    let (code, stdout, _) = validate(&[&empty]);
    assert_eq!(
        (code, stdout),
        (
            1,
            format!("{}: no manifest in this file\n", empty.display())
        )
    );
}

#[test]
fn validate_requires_a_file() {
    let output = ringfence(&["validate"], None);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--filename"));
}

const SECRET_ROLLOUT: &str = "apiVersion: ringfence.dev/v1alpha1\nkind: ConfigRollout\n\
metadata: {name: creds, namespace: platform}\n\
spec:\n  config:\n    kind: Secret\n    name: creds\n    sourceRef: {name: creds-source}\n    validationRef: {name: creds-schema}\n  \
rings: [{name: canary, namespaces: [cell-eu-1]}]\n";

fn sources(creds_json: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(creds_json);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds-source, namespace: platform}}\n\
         data: {{creds.json: {encoded}}}\nstringData: {{timeout: 30s}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: creds-schema, namespace: platform}}\n\
         data:\n  validation.yaml: |\n    - key: creds.json\n      format: json\n      schema:\n        \
         type: object\n        properties: {{port: {{type: integer, maximum: 10}}}}\n    \
         - {{key: timeout, format: duration}}\n"
    )
}

#[test]
fn sources_give_the_data_and_rules_and_a_secret_never_shows() {
    let dir = tempdir::tempdir().unwrap();
    let rollout = dir.path().join("rollout.yaml");
    let source = dir.path().join("sources.yaml");
    std::fs::write(&rollout, SECRET_ROLLOUT).unwrap();
    let args = |source: &Path| {
        vec![
            "validate".to_string(),
            "-f".into(),
            rollout.display().to_string(),
            "--source".into(),
            source.display().to_string(),
        ]
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = ringfence(&args, None);
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };

    std::fs::write(
        &source,
        sources(r#"{"password": "hunter2-s3cr3t", "port": 9999}"#),
    )
    .unwrap();
    let (code, stdout, stderr) = run(args(&source));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        format!(
            "{}: creds: Secret creds-source data[\"creds.json\"]: violates \"maximum\" (schema location /properties/port/maximum)\n",
            rollout.display()
        )
    );
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("hunter2") && !text.contains("9999"),
            "{text}"
        );
    }

    std::fs::write(
        &source,
        sources(r#"{"password": "hunter2-s3cr3t", "port": 8}"#),
    )
    .unwrap();
    assert_eq!(
        run(args(&source)),
        (0, "1 manifest valid\n".into(), String::new())
    );

    // Without the sources, that data and those rules cannot be checked offline.
    let output = ringfence(&["validate", "-f", rollout.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(0));

    std::fs::write(&source, "a: [1\n").unwrap();
    let (code, _, stderr) = run(args(&source));
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with(&format!("{}: invalid YAML at line", source.display())),
        "{stderr}"
    );
}
