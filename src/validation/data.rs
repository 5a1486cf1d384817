//! The configuration data itself, checked before any ring is touched.
//!
//! First what kube-apiserver refuses when a target is written (`ValidateConfigMap`
//! and `ValidateSecret` in `pkg/apis/core/validation`): every key must pass
//! `IsConfigMapKey`, and the values must total at most 1 MiB. Then the rollout's
//! own rules: a format per key and a JSON Schema for the value as read.
//!
//! Pure, shared by `ringfence validate` and the engine. For a Secret no message
//! holds a value or any part of one: a JSON Schema failure is told by its keyword
//! and schema location, never by the instance or its path.

use std::collections::BTreeMap;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, PatternOptions, ValidationError, Validator};
use serde_json::Value;

use crate::api::{ConfigKind, ValidationRule, ValueFormat};

/// `MaxConfigMapSize` and `MaxSecretSize` in `pkg/apis/core/types.go`: the sum of the values.
pub const MAX_DATA_BYTES: usize = 1024 * 1024;
/// `DNS1123SubdomainMaxLength`, the longest key `IsConfigMapKey` allows (in bytes).
pub const MAX_KEY_LENGTH: usize = 253;
/// Rules per rollout, inline or in a `validationRef` ConfigMap.
pub const MAX_RULES: usize = 64;
/// The key of a `validationRef` ConfigMap that holds the rules (a YAML list).
pub const RULES_KEY: &str = "validation.yaml";
/// Problems listed in a summary before "and N more".
const MAX_LISTED: usize = 5;
/// Schema violations kept per value: a 1 MiB document can break a rule a million times.
const MAX_PER_VALUE: usize = 20;
/// Characters of a value or message quoted in a problem.
const MAX_QUOTED: usize = 80;
const MAX_MESSAGE: usize = 240;

/// `configMapKeyErrMsg` with `RegexError`'s examples, as kube-apiserver words it.
const KEY_SYNTAX: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' \
     (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// What a problem is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// The data as a whole (its size).
    Data,
    /// One key of the data and its value.
    Key(String),
    /// A rule, by index, and its field at fault (empty for the rule as a whole).
    Rule { index: usize, field: &'static str },
}

/// One problem with the data or with a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataProblem {
    pub subject: Subject,
    /// JSON pointer to the part at fault: inside a json or yaml value (never for a
    /// Secret), or inside a rule's schema. None for the whole.
    pub pointer: Option<String>,
    pub message: String,
}

/// How problems name the data and the rules they are about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The data: `spec.config.data`, or e.g. `Secret creds data` for a `sourceRef`.
    pub data: &'a str,
    /// The rules: `spec.config.validation`, or e.g. `ConfigMap schemas validation.yaml`.
    pub rules: &'a str,
}

impl Origin<'static> {
    /// Inline data and inline rules.
    pub const INLINE: Self = Self {
        data: "spec.config.data",
        rules: "spec.config.validation",
    };
}

impl DataProblem {
    fn key(key: &str, message: String) -> Self {
        Self {
            subject: Subject::Key(key.to_string()),
            pointer: None,
            message,
        }
    }

    fn rule(index: usize, field: &'static str, message: String) -> Self {
        Self {
            subject: Subject::Rule { index, field },
            pointer: None,
            message,
        }
    }

    /// Whether the rule, not the data, is at fault: a spec error.
    pub fn is_rule_problem(&self) -> bool {
        matches!(self.subject, Subject::Rule { .. })
    }

    /// The field, e.g. `spec.config.data["settings.json"]` or `spec.config.validation[2].schema`.
    pub fn field(&self, origin: &Origin) -> String {
        match &self.subject {
            Subject::Data => origin.data.to_string(),
            Subject::Key(key) => format!("{}[{}]", origin.data, Value::from(key.as_str())),
            Subject::Rule { index, field: "" } => format!("{}[{index}]", origin.rules),
            Subject::Rule { index, field } => format!("{}[{index}].{field}", origin.rules),
        }
    }

    /// The message after the field: `/retries: 11 is greater than the maximum of 10`.
    pub fn detail(&self) -> String {
        match &self.pointer {
            Some(pointer) => format!("{pointer}: {}", self.message),
            None => self.message.clone(),
        }
    }

    /// One line: `spec.config.data["settings.json"] /retries: 11 is greater than the maximum of 10`.
    pub fn describe(&self, origin: &Origin) -> String {
        let field = self.field(origin);
        match &self.pointer {
            Some(pointer) => format!("{field} {pointer}: {}", self.message),
            None => format!("{field}: {}", self.message),
        }
    }
}

/// The first problems, `; `-separated, then `and N more`: a bounded condition message.
pub fn summary(problems: &[DataProblem], origin: &Origin) -> String {
    let mut out: Vec<String> = problems
        .iter()
        .take(MAX_LISTED)
        .map(|p| p.describe(origin))
        .collect();
    if problems.len() > MAX_LISTED {
        out.push(format!("and {} more", problems.len() - MAX_LISTED));
    }
    out.join("; ")
}

/// Why kube-apiserver refuses `key` as a ConfigMap or Secret key (`IsConfigMapKey`).
pub fn key_problems(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    if key.len() > MAX_KEY_LENGTH {
        out.push(format!("must be no more than {MAX_KEY_LENGTH} characters"));
    }
    let syntax_ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !syntax_ok {
        out.push(KEY_SYNTAX.to_string());
    }
    if key == "." {
        out.push("must not be '.'".to_string());
    } else if key == ".." {
        out.push("must not be '..'".to_string());
    } else if key.starts_with("..") {
        out.push("must not start with '..'".to_string());
    }
    out
}

/// A rule ready to check values.
struct Compiled<'a> {
    index: usize,
    rule: &'a ValidationRule,
    schema: Option<Validator>,
}

/// Problems with the rules themselves (spec errors): too many, neither or both of
/// `key` and `keyPattern`, a glob with other characters, a schema that is not one.
pub fn check_rules(rules: &[ValidationRule]) -> Vec<DataProblem> {
    compile(rules).err().unwrap_or_default()
}

fn compile(rules: &[ValidationRule]) -> Result<Vec<Compiled<'_>>, Vec<DataProblem>> {
    let mut problems = Vec::new();
    if rules.len() > MAX_RULES {
        problems.push(DataProblem::rule(
            MAX_RULES,
            "",
            format!(
                "Too many: {}: must have at most {MAX_RULES} rules",
                rules.len()
            ),
        ));
    }
    let mut compiled = Vec::new();
    for (index, rule) in rules.iter().enumerate().take(MAX_RULES) {
        match (&rule.key, &rule.key_pattern) {
            (Some(_), Some(_)) | (None, None) => problems.push(DataProblem::rule(
                index,
                "",
                "set exactly one of key and keyPattern".into(),
            )),
            (None, Some(glob)) if !glob_is_valid(glob) => problems.push(DataProblem::rule(
                index,
                "keyPattern",
                format!(
                    "Invalid value: {}: a glob of key characters ('-', '_', '.', letters, digits), '*' and '?'",
                    quote(glob)
                ),
            )),
            _ => {}
        }
        let schema = match &rule.schema {
            None => None,
            Some(schema) => match build_schema(schema) {
                Ok(validator) => Some(validator),
                Err(error) => {
                    let pointer = error.instance_path().to_string();
                    problems.push(DataProblem {
                        pointer: (!pointer.is_empty()).then_some(pointer),
                        ..DataProblem::rule(
                            index,
                            "schema",
                            format!("not a valid JSON Schema: {}", bounded(&error.to_string())),
                        )
                    });
                    None
                }
            },
        };
        compiled.push(Compiled {
            index,
            rule,
            schema,
        });
    }
    if problems.is_empty() {
        Ok(compiled)
    } else {
        Err(problems)
    }
}

/// Draft 2020-12, never fetching a `$ref` (remote and file references are errors), with
/// linear-time `pattern`s: the controller runs schemas that rollout authors write.
fn build_schema(schema: &Value) -> Result<Validator, ValidationError<'static>> {
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .offline()
        .with_pattern_options(PatternOptions::regex())
        .build(schema)
}

/// Every problem with `data` (raw bytes per key) under kube-apiserver's rules and `rules`.
/// Problems with the rules themselves come first and stop the data checks.
pub fn check(
    kind: ConfigKind,
    data: &BTreeMap<String, Vec<u8>>,
    rules: &[ValidationRule],
) -> Vec<DataProblem> {
    let compiled = match compile(rules) {
        Ok(compiled) => compiled,
        Err(problems) => return problems,
    };
    let mut out = Vec::new();
    for key in data.keys() {
        out.extend(
            key_problems(key)
                .into_iter()
                .map(|m| DataProblem::key(key, m)),
        );
    }
    let total: usize = data.values().map(Vec::len).sum();
    if total > MAX_DATA_BYTES {
        out.push(DataProblem {
            subject: Subject::Data,
            pointer: None,
            message: format!(
                "Too long: the values total {total} bytes; a {kind:?} holds at most {MAX_DATA_BYTES} (1 MiB)"
            ),
        });
    }
    let secret = kind == ConfigKind::Secret;
    for rule in &compiled {
        match (&rule.rule.key, &rule.rule.key_pattern) {
            (Some(key), _) => match data.get(key) {
                Some(value) => out.extend(check_value(secret, key, value, rule)),
                None => out.push(DataProblem::key(
                    key,
                    format!(
                        "Required value: validation rule {} checks this key",
                        rule.index
                    ),
                )),
            },
            (None, Some(glob)) => {
                for (key, value) in data.iter().filter(|(k, _)| glob_matches(glob, k)) {
                    out.extend(check_value(secret, key, value, rule));
                }
            }
            (None, None) => {}
        }
    }
    out
}

fn check_value(secret: bool, key: &str, bytes: &[u8], rule: &Compiled) -> Vec<DataProblem> {
    let format = rule.rule.format;
    let Ok(text) = std::str::from_utf8(bytes) else {
        return vec![DataProblem::key(
            key,
            format!("is not UTF-8 text, as format {} needs", format_name(format)),
        )];
    };
    let value = match read(format, text, secret) {
        Ok(value) => value,
        Err(message) => return vec![DataProblem::key(key, message)],
    };
    let Some(schema) = &rule.schema else {
        return Vec::new();
    };
    let mut errors = schema.iter_errors(&value);
    let mut out: Vec<DataProblem> = errors
        .by_ref()
        .take(MAX_PER_VALUE)
        .map(|error| schema_problem(secret, key, &error))
        .collect();
    if errors.next().is_some() {
        out.push(DataProblem::key(
            key,
            format!("more than {MAX_PER_VALUE} schema violations; the others are not listed"),
        ));
    }
    out
}

fn schema_problem(secret: bool, key: &str, error: &ValidationError) -> DataProblem {
    if secret {
        let rule = match error.kind() {
            // The property names a required list holds come from the schema, not the value.
            ValidationErrorKind::Required { property } => format!("required property {property}"),
            kind => format!("{:?}", kind.keyword()),
        };
        return DataProblem::key(
            key,
            format!("violates {rule} (schema location {})", error.schema_path()),
        );
    }
    let pointer = error.instance_path().to_string();
    DataProblem {
        subject: Subject::Key(key.to_string()),
        pointer: (!pointer.is_empty()).then_some(pointer),
        message: bounded(&error.to_string()),
    }
}

/// The value as the format reads it, as JSON for the schema; or why it cannot be read.
fn read(format: ValueFormat, text: &str, secret: bool) -> Result<Value, String> {
    // A Secret's value is never quoted back.
    let shown = |what: &str| {
        if secret {
            format!("is not {what}")
        } else {
            format!("{} is not {what}", quote(text))
        }
    };
    match format {
        ValueFormat::Json => serde_json::from_str(text).map_err(|e| {
            if secret {
                format!(
                    "is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                )
            } else {
                format!("is not valid JSON: {}", bounded(&e.to_string()))
            }
        }),
        ValueFormat::Yaml => serde_saphyr::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                .unwrap_or_default();
            if secret {
                format!("is not valid YAML{at}")
            } else {
                format!(
                    "is not valid YAML: {}",
                    bounded(&e.without_snippet().to_string())
                )
            }
        }),
        ValueFormat::Int => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| shown("a 64-bit integer")),
        ValueFormat::Float => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| shown("a finite number")),
        ValueFormat::Bool => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(shown("true or false")),
        },
        ValueFormat::Duration => go_duration(text)
            .map(|()| Value::from(text))
            .map_err(|()| shown("a duration (e.g. 300ms, 1.5h, 2h45m)")),
        ValueFormat::Url => match url::Url::parse(text) {
            Ok(_) => Ok(Value::from(text)),
            Err(e) => Err(format!("{}: {e}", shown("an absolute URL"))),
        },
        ValueFormat::Regex => match regex::Regex::new(text) {
            Ok(_) => Ok(Value::from(text)),
            Err(_) if secret => Err(shown("a regular expression")),
            Err(e) => {
                // The error's last line is the reason; the lines above repeat the pattern.
                let text = e.to_string();
                let reason = text.lines().last().unwrap_or_default().trim().to_string();
                Err(format!("{}: {reason}", shown("a regular expression")))
            }
        },
        ValueFormat::String => Ok(Value::from(text)),
    }
}

fn format_name(format: ValueFormat) -> String {
    serde_json::to_value(format)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Go's `time.ParseDuration`: `[-+]` then one or more `<number><unit>` (units `ns`, `us`,
/// `µs`, `ms`, `s`, `m`, `h`; numbers with an optional fraction), or `0`; at most
/// `math.MaxInt64` nanoseconds.
fn go_duration(text: &str) -> Result<(), ()> {
    let mut rest = text.strip_prefix(['-', '+']).unwrap_or(text);
    if rest == "0" {
        return Ok(());
    }
    if rest.is_empty() {
        return Err(());
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => after.split_at(after.bytes().take_while(u8::is_ascii_digit).count()),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(());
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(()),
        };
        let number: f64 = format!("0{whole}.{fraction}0").parse().map_err(|_| ())?;
        nanos += number * scale;
        rest = after;
    }
    if nanos > i64::MAX as f64 {
        return Err(());
    }
    Ok(())
}

fn glob_is_valid(glob: &str) -> bool {
    !glob.is_empty()
        && glob.len() <= MAX_KEY_LENGTH
        && glob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*' | b'?'))
}

/// `*` matches any run of characters, `?` one character, anything else itself.
pub fn glob_matches(glob: &str, key: &str) -> bool {
    let (glob, key): (Vec<char>, Vec<char>) = (glob.chars().collect(), key.chars().collect());
    let (mut g, mut k) = (0, 0);
    // The last `*` seen and the key position it was tried at: on a mismatch it takes one more.
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        match glob.get(g) {
            Some('*') => {
                star = Some((g, k));
                g += 1;
            }
            Some(&c) if c == '?' || c == key[k] => {
                g += 1;
                k += 1;
            }
            _ => match star {
                Some((star_g, star_k)) => {
                    star = Some((star_g, star_k + 1));
                    g = star_g + 1;
                    k = star_k + 1;
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|c| *c == '*')
}

fn quote(text: &str) -> String {
    if text.chars().count() > MAX_QUOTED {
        let short: String = text.chars().take(MAX_QUOTED).collect();
        format!("{}...", Value::from(short))
    } else {
        Value::from(text).to_string()
    }
}

fn bounded(message: &str) -> String {
    if message.chars().count() > MAX_MESSAGE {
        let short: String = message.chars().take(MAX_MESSAGE).collect();
        format!("{short}...")
    } else {
        message.to_string()
    }
}

#[cfg(test)]
mod tests;
