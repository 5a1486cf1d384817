//! Placeholders in a Prometheus gate's query template: `{{ namespaces }}`,
//! `{{ cluster }}`, `{{ clusters }}`, `{{ ring }}`, `{{ revision }}`, `{{ rollout }}` and
//! `{{ namespace }}` (whitespace inside the braces optional).
//!
//! Values are rendered for use inside a PromQL string literal, as in
//! `namespace=~"{{ namespaces }}"`: `{{ namespaces }}` becomes a regex alternation
//! of the regex-escaped namespace names, and every value is then escaped for the
//! double- or single-quoted literal it sits in (PromQL rejects `\-`, so the
//! regex's backslashes are doubled).

use std::fmt;

use crate::api::LOCAL_CLUSTER;
use crate::engine::split_target;

/// A placeholder a query template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placeholder {
    /// The ring's target namespaces (without their clusters), as a regex alternation.
    Namespaces,
    /// The ring's cluster (`local` for the hub); several joined by `|`.
    Cluster,
    /// The ring's clusters, as a regex alternation.
    Clusters,
    /// The ring's name.
    Ring,
    /// The revision being rolled out.
    Revision,
    /// The ConfigRollout's name.
    Rollout,
    /// The ConfigRollout's namespace.
    Namespace,
}

impl Placeholder {
    const ALL: [Placeholder; 7] = [
        Self::Namespaces,
        Self::Cluster,
        Self::Clusters,
        Self::Ring,
        Self::Revision,
        Self::Rollout,
        Self::Namespace,
    ];

    /// The name written between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Self::Namespaces => "namespaces",
            Self::Cluster => "cluster",
            Self::Clusters => "clusters",
            Self::Ring => "ring",
            Self::Revision => "revision",
            Self::Rollout => "rollout",
            Self::Namespace => "namespace",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{{ {} }}}}", self.name())
    }
}

/// A template that cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown placeholder {{{{ {name} }}}} at byte {offset} (use {{{{ namespaces }}}}, {{{{ cluster }}}}, {{{{ clusters }}}}, {{{{ ring }}}}, {{{{ revision }}}}, {{{{ rollout }}}} or {{{{ namespace }}}})"
    )]
    Unknown { name: String, offset: usize },
    #[error("unclosed {{{{ at byte {offset}: a placeholder ends with }}}}")]
    Unclosed { offset: usize },
}

/// What the placeholders stand for when a gate is evaluated for one ring.
#[derive(Debug, Clone, Copy)]
pub struct TemplateVars<'a> {
    /// The ring's target keys (`namespace`, or `cluster/namespace` in a member cluster).
    /// Never empty in practice: an empty alternation renders as `""`, which in
    /// `=~""` matches series that lack the label altogether.
    pub namespaces: &'a [String],
    pub ring: &'a str,
    pub revision: &'a str,
    pub rollout: &'a str,
    pub namespace: &'a str,
}

/// One piece of a parsed template.
enum Piece<'a> {
    Text(&'a str),
    Placeholder(Placeholder),
}

fn parse(query: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = query;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        pieces.push(Piece::Text(&rest[..open]));
        let start = offset + open;
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or(TemplateError::Unclosed { offset: start })?;
        let name = after[..close].trim();
        let placeholder = Placeholder::from_name(name).ok_or_else(|| TemplateError::Unknown {
            name: name.to_string(),
            offset: start,
        })?;
        pieces.push(Piece::Placeholder(placeholder));
        let consumed = open + 2 + close + 2;
        rest = &rest[consumed..];
        offset += consumed;
    }
    pieces.push(Piece::Text(rest));
    Ok(pieces)
}

/// The placeholders `query` uses, in order of appearance (repeats included).
pub fn placeholders(query: &str) -> Result<Vec<Placeholder>, TemplateError> {
    Ok(parse(query)?
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Placeholder(p) => Some(p),
            Piece::Text(_) => None,
        })
        .collect())
}

/// `query` with every placeholder replaced by its value (see the module docs).
pub fn render(query: &str, vars: &TemplateVars<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(query.len());
    for piece in parse(query)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Placeholder(p) => {
                let value = match p {
                    Placeholder::Namespaces => distinct(vars.namespaces, |key| split_target(key).1)
                        .into_iter()
                        .map(escape_regex)
                        .collect::<Vec<_>>()
                        .join("|"),
                    Placeholder::Cluster => distinct(vars.namespaces, cluster_of).join("|"),
                    Placeholder::Clusters => distinct(vars.namespaces, cluster_of)
                        .into_iter()
                        .map(escape_regex)
                        .collect::<Vec<_>>()
                        .join("|"),
                    Placeholder::Ring => vars.ring.to_string(),
                    Placeholder::Revision => vars.revision.to_string(),
                    Placeholder::Rollout => vars.rollout.to_string(),
                    Placeholder::Namespace => vars.namespace.to_string(),
                };
                out.push_str(&escape_string_literal(&value));
            }
        }
    }
    Ok(out)
}

fn cluster_of(key: &str) -> &str {
    split_target(key).0.unwrap_or(LOCAL_CLUSTER)
}

/// What `part` takes from each key, each once, in order of first appearance.
fn distinct<'a>(keys: &'a [String], part: impl Fn(&'a str) -> &'a str) -> Vec<&'a str> {
    let mut seen = std::collections::BTreeSet::new();
    keys.iter()
        .map(|k| part(k))
        .filter(|v| seen.insert(*v))
        .collect()
}

/// Escapes regex metacharacters, leaving `-` alone: outside a character class
/// it is literal, and namespace names are full of it, so queries stay readable.
fn escape_regex(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escapes a value for a PromQL double- or single-quoted string literal.
fn escape_string_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' | '"' | '\'' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(namespaces: &[String]) -> TemplateVars<'_> {
        TemplateVars {
            namespaces,
            ring: "canary",
            revision: "abc123",
            rollout: "checkout-flags",
            namespace: "platform",
        }
    }

    #[test]
    fn finds_every_placeholder_with_or_without_spaces() {
        let q = r#"sum(x{namespace=~"{{ namespaces }}",ring="{{ring}}",rev="{{  revision }}"}) by ({{rollout }}) {{ namespace}}"#;
        assert_eq!(
            placeholders(q).unwrap(),
            [
                Placeholder::Namespaces,
                Placeholder::Ring,
                Placeholder::Revision,
                Placeholder::Rollout,
                Placeholder::Namespace
            ]
        );
        assert_eq!(placeholders("up").unwrap(), []);
        assert_eq!(
            placeholders("x{a=\"b\"} }}").unwrap(),
            [],
            "a stray }} is PromQL's business"
        );
    }

    #[test]
    fn names_unknown_and_unclosed_placeholders() {
        let err = placeholders(r#"x{ns="{{ namespcaes }}"}"#).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Unknown {
                name: "namespcaes".into(),
                offset: 6
            }
        );
        assert!(
            err.to_string()
                .contains("unknown placeholder {{ namespcaes }}"),
            "{err}"
        );
        assert_eq!(
            placeholders("a {{ ring").unwrap_err(),
            TemplateError::Unclosed { offset: 2 }
        );
        assert!(
            matches!(placeholders("{{}}"), Err(TemplateError::Unknown { name, .. }) if name.is_empty())
        );
        assert!(matches!(
            placeholders("{{ Ring }}"),
            Err(TemplateError::Unknown { .. })
        ));
    }

    #[test]
    fn member_targets_render_their_namespaces_and_clusters_apart() {
        let keys = [
            "eu-west-1/checkout".to_string(),
            "us-east-1/checkout".to_string(),
            "eu-west-1/cart".to_string(),
        ];
        let q = r#"x{cluster=~"{{ clusters }}",namespace=~"{{ namespaces }}",c="{{ cluster }}"}"#;
        assert_eq!(
            render(q, &vars(&keys)).unwrap(),
            r#"x{cluster=~"eu-west-1|us-east-1",namespace=~"checkout|cart",c="eu-west-1|us-east-1"}"#
        );
        let local = ["checkout".to_string()];
        assert_eq!(
            render("{{ cluster }} {{ namespaces }}", &vars(&local)).unwrap(),
            "local checkout"
        );
    }

    #[test]
    fn renders_namespaces_as_an_escaped_regex_alternation() {
        let ns = ["cell-eu-1".to_string(), "cell.us".to_string()];
        let q =
            r#"sum(rate(http_requests_total{namespace=~"{{ namespaces }}",ring="{{ring}}"}[1m]))"#;
        assert_eq!(
            render(q, &vars(&ns)).unwrap(),
            r#"sum(rate(http_requests_total{namespace=~"cell-eu-1|cell\\.us",ring="canary"}[1m]))"#
        );
        let all = "{{revision}} {{rollout}} {{namespace}}";
        assert_eq!(
            render(all, &vars(&ns)).unwrap(),
            "abc123 checkout-flags platform"
        );
        assert_eq!(
            render("{{ nope }}", &vars(&ns)),
            Err(TemplateError::Unknown {
                name: "nope".into(),
                offset: 0
            })
        );
    }

    #[test]
    fn rendered_alternation_matches_exactly_the_namespaces() {
        let ns = ["a.b".to_string(), "c-d".to_string()];
        let rendered = render("{{ namespaces }}", &vars(&ns)).unwrap();
        // Undo the string-literal layer the way PromQL's lexer does, then match as Prometheus does.
        let regex =
            regex::Regex::new(&format!("^(?:{})$", rendered.replace("\\\\", "\\"))).unwrap();
        assert!(regex.is_match("a.b") && regex.is_match("c-d"));
        assert!(!regex.is_match("axb") && !regex.is_match("a.bc-d"));
    }

    proptest! {
        #[test]
        fn never_panics(q in "[{} a-z\\PC]{0,40}") {
            let ns = ["x".to_string()];
            let parsed = placeholders(&q);
            prop_assert_eq!(parsed.is_ok(), render(&q, &vars(&ns)).is_ok());
        }
    }
}
