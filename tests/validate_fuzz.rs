//! Property tests that throw random input at `ringfence validate`: YAML-ish
//! text, and valid manifests with random JSON values in random places. Nothing
//! may panic, the exit code is 0, 1 or 2, and whatever the schema accepts, the
//! controller can deserialize.
//!
//! Bounded for CI (2,000 cases each, 64 runs of the binary); set `PROPTEST_CASES`
//! for a longer session.

use std::path::Path;
use std::sync::LazyLock;

use kube_emulator::validation::CompiledCrd;
use proptest::prelude::*;
use proptest::test_runner::Config;
use ringfence::api::ConfigRollout;
use ringfence::cli::validate::{Outcome, validate_sources};
use ringfence::validation::{ManifestValidator, manifest::parse_documents};
use serde_json::Value;

static VALIDATOR: LazyLock<ManifestValidator> = LazyLock::new(|| ManifestValidator::new().unwrap());
static CRD: LazyLock<CompiledCrd> = LazyLock::new(|| {
    CompiledCrd::new(&serde_json::to_value(ringfence::api::crd()).unwrap()).unwrap()
});
static VALID: LazyLock<Vec<Value>> = LazyLock::new(|| {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifests/valid");
    let mut documents = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        documents.extend(parse_documents(&text).unwrap());
    }
    documents
});

fn config(default_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

const WORDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "spec",
    "status",
    "config",
    "data",
    "sourceRef",
    "rings",
    "namespaces",
    "namespaceSelector",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "bake",
    "maxConcurrent",
    "gates",
    "interval",
    "failureLimit",
    "prometheus",
    "webhook",
    "address",
    "query",
    "max",
    "maxIncrease",
    "maxRatio",
    "compareTo",
    "onNoData",
    "timeout",
    "url",
    "workloads",
    "selector",
    "restart",
    "progressDeadline",
    "rollback",
    "automatic",
    "paused",
    "ConfigRollout",
    "ringfence.dev/v1alpha1",
    "ConfigMap",
    "Secret",
    "In",
    "NotIn",
    "Exists",
    "0s",
    "1h30m",
    "1.5s",
    "25%",
    "100%",
    "0",
    "-1",
    "1e400",
    "{{ namespaces }}",
    "{{",
    "}}",
    "http://x",
    "https://",
    "null",
    "~",
    "true",
    "yes",
    "é",
    "\u{0}",
    "\u{202e}",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![4 => proptest::sample::select(WORDS).prop_map(str::to_string), 1 => "\\PC{0,12}"]
}

/// Text made of YAML's structure and ConfigRollout's vocabulary.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        3 => word(),
        3 => proptest::sample::select(&[
            ": ", "\n", "\n  ", "\n    ", "- ", "---\n", "{", "}", "[", "]", ", ", "'", "\"", "#", "&a ", "*a",
            "!!str ", "!!map ", "? ", "|\n  ", ">-\n  ", "\t", "<<: *a\n", "%YAML 1.2\n", "...\n",
        ][..])
        .prop_map(str::to_string),
    ];
    prop::collection::vec(token, 0..80).prop_map(|tokens| tokens.concat())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        (-3i64..200).prop_map(Value::from),
        word().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(word(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(Value),
    Insert(String, Value),
    Remove,
    Push(Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        json_value().prop_map(Mutation::Replace),
        (word(), json_value()).prop_map(|(k, v)| Mutation::Insert(k, v)),
        Just(Mutation::Remove),
        json_value().prop_map(Mutation::Push),
    ]
}

/// Walks `path` (indexes taken modulo each node's size) and applies `mutation` there.
fn mutate(value: &mut Value, path: &[usize], mutation: Mutation) {
    let next = match (value, path.split_first()) {
        (Value::Object(map), Some((i, rest))) if !map.is_empty() => {
            let key = map.keys().nth(i % map.len()).cloned();
            match (mutation, rest.is_empty()) {
                (Mutation::Remove, true) => {
                    key.and_then(|k| map.remove(&k));
                    return;
                }
                (mutation, _) => {
                    if let Some(child) = key.and_then(|k| map.get_mut(&k)) {
                        mutate(child, rest, mutation);
                    }
                    return;
                }
            }
        }
        (Value::Array(items), Some((i, rest))) if !items.is_empty() => {
            let len = items.len();
            if rest.is_empty() && matches!(mutation, Mutation::Remove) {
                items.remove(i % len);
                return;
            }
            (&mut items[i % len], rest, mutation)
        }
        (value, _) => {
            match mutation {
                Mutation::Replace(new) => *value = new,
                Mutation::Insert(key, new) => {
                    if let Value::Object(map) = value {
                        map.insert(key, new);
                    } else {
                        *value = new;
                    }
                }
                Mutation::Push(new) => {
                    if let Value::Array(items) = value {
                        items.push(new);
                    } else {
                        *value = new;
                    }
                }
                Mutation::Remove => *value = Value::Null,
            }
            return;
        }
    };
    mutate(next.0, next.1, next.2);
}

fn run(text: String) -> Outcome {
    validate_sources(&VALIDATOR, [("fuzz.yaml".to_string(), Ok(text))]).outcome
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn random_yamlish_text_never_panics(text in yamlish()) {
        let code = run(text).code();
        prop_assert!(code <= 2);
    }

    #[test]
    fn mutated_manifests_never_panic_and_accepted_ones_deserialize(
        which in any::<prop::sample::Index>(),
        mutations in prop::collection::vec((prop::collection::vec(any::<usize>(), 0..7), mutation()), 1..4),
    ) {
        let mut document = which.get(&VALID).clone();
        for (path, m) in mutations {
            mutate(&mut document, &path, m);
        }
        let report = VALIDATOR.check_document(1, &document);
        if report.violations.is_empty() {
            let mut object = document.as_object().cloned().unwrap_or_default();
            object.remove("status");
            let (stored, violations) = CRD.validate("v1alpha1", &Value::Object(object)).unwrap();
            prop_assert!(violations.is_empty(), "{violations:?}");
            let typed = serde_json::from_value::<ConfigRollout>(stored.clone());
            prop_assert!(typed.is_ok(), "accepted {stored} but it does not deserialize: {typed:?}");
        }
        // The same document as text, through the parser.
        if let Ok(text) = serde_saphyr::to_string(&document) {
            let outcome = run(text);
            prop_assert!(outcome != Outcome::Valid || report.violations.is_empty(), "{report:?}");
        }
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// The binary itself, on random text from stdin: an exit code, never a panic.
    #[test]
    fn the_binary_exits_0_1_or_2(text in yamlish()) {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringfence"))
            .args(["validate", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        prop_assert!(matches!(output.status.code(), Some(0..=2)), "{:?}: {stderr}", output.status);
        prop_assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
