//! Query templates: `{{ name }}` placeholders filled per evaluation.
//!
//! `{{ namespaces }}` becomes a regex alternation meant for `namespace=~"..."`;
//! the other placeholders are inserted verbatim. An unknown placeholder is an
//! error rather than being left in place, so a typo never reaches Prometheus.

use std::sync::LazyLock;

use regex::Regex;

static PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}").expect("valid regex"));

/// Values for the placeholders of one evaluation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateVars {
    pub namespaces: Vec<String>,
    pub ring: String,
    pub revision: String,
    pub rollout: String,
    pub namespace: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error(
        "unknown placeholder {{{{ {0} }}}} (known: namespaces, ring, revision, rollout, namespace)"
    )]
    UnknownPlaceholder(String),
}

/// Fills every placeholder of `query`.
pub fn render(query: &str, vars: &TemplateVars) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(query.len());
    let mut last = 0;
    for caps in PLACEHOLDER.captures_iter(query) {
        let whole = caps.get(0).expect("group 0 always matches");
        out.push_str(&query[last..whole.start()]);
        match &caps[1] {
            "namespaces" => out.push_str(&alternation(&vars.namespaces)),
            "ring" => out.push_str(&vars.ring),
            "revision" => out.push_str(&vars.revision),
            "rollout" => out.push_str(&vars.rollout),
            "namespace" => out.push_str(&vars.namespace),
            other => return Err(TemplateError::UnknownPlaceholder(other.to_string())),
        }
        last = whole.end();
    }
    out.push_str(&query[last..]);
    Ok(out)
}

/// `a|b|c` with regex metacharacters escaped for use inside a PromQL
/// double-quoted string (so the backslash itself is doubled).
fn alternation(namespaces: &[String]) -> String {
    let escaped: Vec<String> = namespaces
        .iter()
        .map(|ns| {
            let mut s = String::with_capacity(ns.len());
            for c in ns.chars() {
                if r".+*?()|[]{}^$\".contains(c) {
                    s.push_str(r"\\");
                }
                s.push(c);
            }
            s
        })
        .collect();
    escaped.join("|")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> TemplateVars {
        TemplateVars {
            namespaces: vec!["cell-1".into(), "cell-2".into()],
            ring: "early".into(),
            revision: "abc123".into(),
            rollout: "flags".into(),
            namespace: "platform".into(),
        }
    }

    #[test]
    fn fills_every_placeholder() {
        let q = r#"x{namespace=~"{{ namespaces }}",ring="{{ring}}",rev="{{ revision }}",r="{{ rollout }}/{{ namespace }}"}"#;
        assert_eq!(
            render(q, &vars()).unwrap(),
            r#"x{namespace=~"cell-1|cell-2",ring="early",rev="abc123",r="flags/platform"}"#
        );
    }

    #[test]
    fn escapes_regex_metacharacters_for_a_promql_string() {
        let v = TemplateVars {
            namespaces: vec!["a.b".into()],
            ..vars()
        };
        assert_eq!(render("{{ namespaces }}", &v).unwrap(), r"a\\.b");
    }

    #[test]
    fn rejects_unknown_placeholders() {
        assert_eq!(
            render("{{ cluster }}", &vars()),
            Err(TemplateError::UnknownPlaceholder("cluster".into()))
        );
    }
}
