//! Each kube-apiserver rule, each format and each schema keyword family, with the
//! messages they give; and the promise that a Secret's values never show.

use serde_json::json;

use super::*;

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn rule(key: &str, format: ValueFormat, schema: Option<Value>) -> ValidationRule {
    ValidationRule {
        key: Some(key.into()),
        key_pattern: None,
        format,
        schema,
    }
}

fn glob(pattern: &str, format: ValueFormat) -> ValidationRule {
    ValidationRule {
        key: None,
        key_pattern: Some(pattern.into()),
        format,
        schema: None,
    }
}

/// Every problem as one line, with inline origins.
fn lines(
    kind: ConfigKind,
    data: &BTreeMap<String, Vec<u8>>,
    rules: &[ValidationRule],
) -> Vec<String> {
    check(kind, data, rules)
        .iter()
        .map(|p| p.describe(&Origin::INLINE))
        .collect()
}

fn config_map(pairs: &[(&str, &str)], rules: &[ValidationRule]) -> Vec<String> {
    lines(ConfigKind::ConfigMap, &data(pairs), rules)
}

#[test]
fn keys_follow_is_config_map_key() {
    assert!(key_problems("settings.json").is_empty());
    assert!(key_problems("A-b_c.9").is_empty());
    assert!(
        key_problems(".hidden").is_empty(),
        "one leading dot is allowed"
    );
    assert_eq!(key_problems(&"k".repeat(253)), Vec::<String>::new());
    assert_eq!(
        key_problems(&"k".repeat(254)),
        ["must be no more than 253 characters"]
    );
    assert_eq!(key_problems("."), ["must not be '.'"]);
    assert_eq!(key_problems(".."), ["must not be '..'"]);
    assert_eq!(key_problems("..data"), ["must not start with '..'"]);
    for bad in ["", "bad key/with slash", "a:b", "ünï", "tab\t"] {
        assert_eq!(key_problems(bad), [KEY_SYNTAX], "{bad:?}");
    }
    // Length counts bytes, as Go's len() does.
    assert_eq!(key_problems(&"é".repeat(127)).len(), 2);
}

#[test]
fn a_bad_key_is_named_in_the_message() {
    assert_eq!(
        config_map(&[("bad key/with slash", "1"), ("good", "2")], &[]),
        [format!(
            "spec.config.data[\"bad key/with slash\"]: {KEY_SYNTAX}"
        )]
    );
}

#[test]
fn values_may_total_one_mebibyte() {
    let full = "x".repeat(MAX_DATA_BYTES / 2);
    assert!(config_map(&[("a", &full), ("b", &full)], &[]).is_empty());
    let over = lines(
        ConfigKind::Secret,
        &data(&[("a", &full), ("b", &format!("{full}y"))]),
        &[],
    );
    assert_eq!(
        over,
        [
            "spec.config.data: Too long: the values total 1048577 bytes; a Secret holds at most 1048576 (1 MiB)"
        ]
    );
}

#[test]
fn json_with_a_schema_names_key_pointer_and_rule() {
    let schema = json!({
        "type": "object",
        "required": ["retries"],
        "properties": {"retries": {"type": "integer", "minimum": 0, "maximum": 10}},
    });
    let rules = [rule("settings.json", ValueFormat::Json, Some(schema))];
    assert!(config_map(&[("settings.json", r#"{"retries": 3}"#)], &rules).is_empty());
    assert_eq!(
        config_map(&[("settings.json", r#"{"retries": 11}"#)], &rules),
        ["spec.config.data[\"settings.json\"] /retries: 11 is greater than the maximum of 10"]
    );
    assert_eq!(
        config_map(&[("settings.json", r#"{}"#)], &rules),
        ["spec.config.data[\"settings.json\"]: \"retries\" is a required property"]
    );
    assert_eq!(
        config_map(&[("settings.json", r#"{"retries": "3"}"#)], &rules),
        ["spec.config.data[\"settings.json\"] /retries: \"3\" is not of type \"integer\""]
    );
    let broken = config_map(&[("settings.json", r#"{"retries": 3"#)], &rules);
    assert_eq!(broken.len(), 1);
    assert!(
        broken[0].starts_with(
            "spec.config.data[\"settings.json\"]: is not valid JSON: EOF while parsing"
        ),
        "{broken:?}"
    );
}

#[test]
fn yaml_is_read_as_a_document_for_the_schema() {
    let schema = json!({"type": "object", "properties": {"replicas": {"type": "integer", "enum": [1, 3, 5]}}});
    let rules = [ValidationRule {
        schema: Some(schema),
        ..glob("*.yaml", ValueFormat::Yaml)
    }];
    assert!(
        config_map(
            &[("app.yaml", "replicas: 3\n"), ("notes.txt", ": [")],
            &rules
        )
        .is_empty()
    );
    let got = config_map(
        &[("app.yaml", "replicas: 4\n"), ("b.yaml", "a: [1\n")],
        &rules,
    );
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[0],
        "spec.config.data[\"app.yaml\"] /replicas: 4 is not one of 1, 3 or 5"
    );
    assert!(
        got[1].starts_with("spec.config.data[\"b.yaml\"]: is not valid YAML: "),
        "{got:?}"
    );
}

/// A format, values it reads, and values it refuses with (part of) the message.
type FormatCase = (
    ValueFormat,
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

#[test]
fn scalar_formats_read_their_values() {
    let cases: &[FormatCase] = &[
        (
            ValueFormat::Int,
            &["0", "-12", "+7", "9223372036854775807"],
            &[
                ("3.5", "\"3.5\" is not a 64-bit integer"),
                ("9223372036854775808", "is not a 64-bit integer"),
                (" 1", "is not a 64-bit integer"),
            ],
        ),
        (
            ValueFormat::Float,
            &["0.5", "-1e3", "2"],
            &[
                ("NaN", "\"NaN\" is not a finite number"),
                ("inf", "is not a finite number"),
                ("1,5", "is not a finite number"),
            ],
        ),
        (
            ValueFormat::Bool,
            &["true", "false"],
            &[
                ("yes", "\"yes\" is not true or false"),
                ("True", "is not true or false"),
            ],
        ),
        (
            ValueFormat::Duration,
            &[
                "30s", "1h30m", "1.5h", "300ms", "-2us", "5\u{b5}s", "0", ".5s", "1.s",
            ],
            &[
                ("5 minutes", "\"5 minutes\" is not a duration"),
                ("30", "is not a duration"),
                ("1d", "is not a duration"),
                (".s", "is not a duration"),
                ("3000000h", "is not a duration"),
                ("", "is not a duration"),
            ],
        ),
        (
            ValueFormat::Url,
            &["https://example.com/a?b=c", "http://[::1]:8080"],
            &[
                (
                    "/relative/path",
                    "\"/relative/path\" is not an absolute URL: relative URL without a base",
                ),
                ("http://exa mple.com", "is not an absolute URL"),
            ],
        ),
        (
            ValueFormat::Regex,
            &["^v[0-9]+$", "a|b"],
            &[(
                "(unclosed",
                "\"(unclosed\" is not a regular expression: error: unclosed group",
            )],
        ),
        (ValueFormat::String, &["", "anything at all"], &[]),
    ];
    for (format, good, bad) in cases {
        let rules = [rule("k", *format, None)];
        for value in *good {
            assert_eq!(
                config_map(&[("k", value)], &rules),
                Vec::<String>::new(),
                "{format:?} {value:?}"
            );
        }
        for (value, message) in *bad {
            let got = config_map(&[("k", value)], &rules);
            assert_eq!(got.len(), 1, "{format:?} {value:?}: {got:?}");
            assert!(got[0].starts_with("spec.config.data[\"k\"]: "), "{got:?}");
            assert!(got[0].contains(message), "{format:?} {value:?}: {got:?}");
        }
    }
}

#[test]
fn scalar_schemas_apply_to_the_value_as_read() {
    let rules = [
        rule(
            "retries",
            ValueFormat::Int,
            Some(json!({"minimum": 0, "maximum": 10})),
        ),
        rule(
            "ratio",
            ValueFormat::Float,
            Some(json!({"exclusiveMaximum": 1})),
        ),
        rule(
            "mode",
            ValueFormat::String,
            Some(json!({"enum": ["fast", "safe"]})),
        ),
        rule(
            "region",
            ValueFormat::String,
            Some(json!({"pattern": "^[a-z]+-[0-9]$"})),
        ),
        rule("dark", ValueFormat::Bool, Some(json!({"const": false}))),
    ];
    let good = [
        ("retries", "10"),
        ("ratio", "0.5"),
        ("mode", "safe"),
        ("region", "eu-1"),
        ("dark", "false"),
    ];
    assert!(config_map(&good, &rules).is_empty());
    let bad = [
        ("retries", "11"),
        ("ratio", "1"),
        ("mode", "slow"),
        ("region", "EU"),
        ("dark", "true"),
    ];
    assert_eq!(
        config_map(&bad, &rules),
        [
            "spec.config.data[\"retries\"]: 11 is greater than the maximum of 10",
            "spec.config.data[\"ratio\"]: 1.0 is greater than or equal to the maximum of 1",
            "spec.config.data[\"mode\"]: \"slow\" is not one of \"fast\" or \"safe\"",
            "spec.config.data[\"region\"]: \"EU\" does not match \"^[a-z]+-[0-9]$\"",
            "spec.config.data[\"dark\"]: false was expected",
        ]
    );
}

#[test]
fn a_key_rule_requires_its_key_and_a_glob_checks_every_match() {
    assert_eq!(
        config_map(
            &[("other", "1")],
            &[rule("timeout", ValueFormat::Duration, None)]
        ),
        ["spec.config.data[\"timeout\"]: Required value: validation rule 0 checks this key"]
    );
    let rules = [glob("*-timeout", ValueFormat::Duration)];
    assert!(
        config_map(&[("timeouts", "x")], &rules).is_empty(),
        "no match, no check"
    );
    assert_eq!(
        config_map(&[("read-timeout", "1s"), ("write-timeout", "soon")], &rules),
        [
            "spec.config.data[\"write-timeout\"]: \"soon\" is not a duration (e.g. 300ms, 1.5h, 2h45m)"
        ]
    );
}

#[test]
fn globs() {
    for (glob, key) in [
        ("*", ""),
        ("*", "a.yaml"),
        ("*.yaml", "a.yaml"),
        ("a?c", "abc"),
        ("a*b*c", "aXbYbZc"),
        ("**x", "x"),
        ("exact", "exact"),
    ] {
        assert!(glob_matches(glob, key), "{glob} {key}");
    }
    for (glob, key) in [
        ("*.yaml", "a.yml"),
        ("a?c", "ac"),
        ("a*b*c", "aXbY"),
        ("exact", "exactly"),
        ("?", ""),
    ] {
        assert!(!glob_matches(glob, key), "{glob} {key}");
    }
}

#[test]
fn rules_themselves_are_checked() {
    let both = ValidationRule {
        key_pattern: Some("*".into()),
        ..rule("a", ValueFormat::String, None)
    };
    let neither = ValidationRule {
        key: None,
        ..rule("a", ValueFormat::String, None)
    };
    let bad_glob = glob("conf/*", ValueFormat::String);
    let bad_schema = rule("a", ValueFormat::Json, Some(json!({"type": "integr"})));
    let bad_max = rule(
        "a",
        ValueFormat::Json,
        Some(json!({"properties": {"n": {"maximum": "ten"}}})),
    );
    let problems: Vec<String> = check_rules(&[both, neither, bad_glob, bad_schema, bad_max])
        .iter()
        .map(|p| p.describe(&Origin::INLINE))
        .collect();
    assert_eq!(problems.len(), 5, "{problems:#?}");
    assert_eq!(
        problems[0],
        "spec.config.validation[0]: set exactly one of key and keyPattern"
    );
    assert_eq!(
        problems[1],
        "spec.config.validation[1]: set exactly one of key and keyPattern"
    );
    assert!(
        problems[2].starts_with("spec.config.validation[2].keyPattern: Invalid value: \"conf/*\""),
        "{problems:#?}"
    );
    assert!(
        problems[3]
            .starts_with("spec.config.validation[3].schema /type: not a valid JSON Schema: "),
        "{problems:#?}"
    );
    assert!(
        problems[4].starts_with(
            "spec.config.validation[4].schema /properties/n/maximum: not a valid JSON Schema: "
        ),
        "{problems:#?}"
    );
    // A rule problem stops the data checks: the data is not judged by a broken rule.
    let got = check(
        ConfigKind::ConfigMap,
        &data(&[("bad key", "1")]),
        &[glob("a/b", ValueFormat::Int)],
    );
    assert!(got.iter().all(DataProblem::is_rule_problem), "{got:?}");

    let many = vec![glob("*", ValueFormat::String); MAX_RULES + 1];
    assert_eq!(
        check_rules(&many)
            .iter()
            .map(|p| p.describe(&Origin::INLINE))
            .collect::<Vec<_>>(),
        ["spec.config.validation[64]: Too many: 65: must have at most 64 rules"]
    );
}

#[test]
fn a_schema_never_fetches_a_reference() {
    for reference in [
        "https://example.com/schema.json",
        "file:///etc/schema.json",
        "other.json",
    ] {
        let rules = [rule(
            "a",
            ValueFormat::Json,
            Some(json!({"$ref": reference})),
        )];
        let problems = check_rules(&rules);
        assert_eq!(problems.len(), 1, "{reference}: {problems:?}");
        assert_eq!(
            problems[0].subject,
            Subject::Rule {
                index: 0,
                field: "schema"
            }
        );
    }
    let local =
        json!({"$defs": {"n": {"type": "integer"}}, "properties": {"n": {"$ref": "#/$defs/n"}}});
    let rules = [rule("a", ValueFormat::Json, Some(local))];
    assert_eq!(
        config_map(&[("a", r#"{"n": "x"}"#)], &rules),
        ["spec.config.data[\"a\"] /n: \"x\" is not of type \"integer\""]
    );
}

#[test]
fn a_secret_value_never_shows() {
    const SECRET: &str = "hunter2-s3cr3t";
    let schema = json!({
        "type": "object",
        "required": ["user", "password"],
        "properties": {
            "password": {"type": "string", "minLength": 32, "pattern": "^[A-Z]+$"},
            "port": {"type": "integer"},
        },
        "additionalProperties": false,
    });
    let rules = [
        rule("creds.json", ValueFormat::Json, Some(schema)),
        rule("port", ValueFormat::Int, Some(json!({"maximum": 10}))),
        rule("mode", ValueFormat::Bool, None),
        rule("ttl", ValueFormat::Duration, None),
        rule("re", ValueFormat::Regex, None),
        rule("url", ValueFormat::Url, None),
        rule("float", ValueFormat::Float, None),
        rule("doc.yaml", ValueFormat::Yaml, None),
        rule("broken.json", ValueFormat::Json, None),
    ];
    let secret_data = data(&[
        (
            "creds.json",
            &format!(r#"{{"password": "{SECRET}", "port": "{SECRET}", "{SECRET}": 1}}"#),
        ),
        ("port", "99"),
        ("mode", SECRET),
        ("ttl", SECRET),
        ("re", &format!("({SECRET}")),
        ("url", SECRET),
        ("float", SECRET),
        ("doc.yaml", &format!("a: [{SECRET}\n")),
        ("broken.json", &format!("{{\"{SECRET}\"")),
    ]);
    let problems = check(ConfigKind::Secret, &secret_data, &rules);
    let text = summary(&problems, &Origin::INLINE)
        + &problems
            .iter()
            .map(|p| p.describe(&Origin::INLINE))
            .collect::<String>();
    assert!(
        !text.contains(SECRET) && !text.contains("hunter") && !text.contains("99"),
        "{text}"
    );
    assert!(problems.iter().all(|p| p.pointer.is_none()), "{problems:?}");
    let lines: Vec<String> = problems
        .iter()
        .map(|p| p.describe(&Origin::INLINE))
        .collect();
    for expected in [
        "spec.config.data[\"creds.json\"]: violates required property \"user\" (schema location /required)",
        "spec.config.data[\"creds.json\"]: violates \"minLength\" (schema location /properties/password/minLength)",
        "spec.config.data[\"creds.json\"]: violates \"pattern\" (schema location /properties/password/pattern)",
        "spec.config.data[\"creds.json\"]: violates \"type\" (schema location /properties/port/type)",
        "spec.config.data[\"creds.json\"]: violates \"additionalProperties\" (schema location /additionalProperties)",
        "spec.config.data[\"port\"]: violates \"maximum\" (schema location /maximum)",
        "spec.config.data[\"mode\"]: is not true or false",
        "spec.config.data[\"ttl\"]: is not a duration (e.g. 300ms, 1.5h, 2h45m)",
        "spec.config.data[\"re\"]: is not a regular expression",
        "spec.config.data[\"float\"]: is not a finite number",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected}\n{lines:#?}"
        );
    }
    for prefix in [
        "spec.config.data[\"url\"]: is not an absolute URL: ",
        "spec.config.data[\"doc.yaml\"]: is not valid YAML (line ",
        "spec.config.data[\"broken.json\"]: is not valid JSON (line 1, column ",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(prefix)),
            "{prefix}\n{lines:#?}"
        );
    }
    // The same data in a ConfigMap does show: the test would catch a silent mask.
    let shown = lines_of(ConfigKind::ConfigMap, &secret_data, &rules);
    assert!(shown.contains(SECRET), "{shown}");
}

fn lines_of(
    kind: ConfigKind,
    data: &BTreeMap<String, Vec<u8>>,
    rules: &[ValidationRule],
) -> String {
    lines(kind, data, rules).join("\n")
}

#[test]
fn values_that_are_not_text_fail_a_format() {
    let binary: BTreeMap<String, Vec<u8>> = [("blob".to_string(), vec![0xff, 0x00])].into();
    assert!(
        check(ConfigKind::Secret, &binary, &[]).is_empty(),
        "no rule, no format"
    );
    assert_eq!(
        lines(
            ConfigKind::Secret,
            &binary,
            &[glob("*", ValueFormat::String)]
        ),
        ["spec.config.data[\"blob\"]: is not UTF-8 text, as format string needs"]
    );
}

#[test]
fn summaries_list_five_and_count_the_rest() {
    let pairs: Vec<(String, String)> = (0..8)
        .map(|i| (format!("bad key {i}"), "v".to_string()))
        .collect();
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let problems = check(ConfigKind::ConfigMap, &data(&refs), &[]);
    assert_eq!(problems.len(), 8);
    let text = summary(&problems, &Origin::INLINE);
    assert_eq!(text.matches("a valid config key").count(), 5);
    assert!(
        text.starts_with("spec.config.data[\"bad key 0\"]: "),
        "{text}"
    );
    assert!(text.ends_with("; and 3 more"), "{text}");
    assert_eq!(
        summary(&problems[..1], &Origin::INLINE)
            .matches(';')
            .count(),
        0
    );
}

#[test]
fn one_value_reports_a_bounded_number_of_schema_violations() {
    let many = serde_json::to_string(&vec!["x"; 500]).unwrap();
    let rules = [rule(
        "list.json",
        ValueFormat::Json,
        Some(json!({"items": {"type": "integer"}})),
    )];
    let problems = check(
        ConfigKind::ConfigMap,
        &data(&[("list.json", &many)]),
        &rules,
    );
    assert_eq!(problems.len(), MAX_PER_VALUE + 1);
    assert!(
        problems[MAX_PER_VALUE]
            .message
            .starts_with("more than 20 schema violations")
    );
}

#[test]
fn origins_name_a_source_object() {
    let origin = Origin {
        data: "Secret creds data",
        rules: "ConfigMap schemas validation.yaml",
    };
    let problem = &check(
        ConfigKind::Secret,
        &data(&[("a", "x")]),
        &[rule("a", ValueFormat::Int, None)],
    )[0];
    assert_eq!(
        problem.describe(&origin),
        "Secret creds data[\"a\"]: is not a 64-bit integer"
    );
    let rule_problem = &check_rules(&[glob("a b", ValueFormat::Int)])[0];
    assert_eq!(
        rule_problem.field(&origin),
        "ConfigMap schemas validation.yaml[0].keyPattern"
    );
}
