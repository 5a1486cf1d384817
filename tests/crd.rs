//! The committed CRD is the generated one, and every CEL rule in it is one a
//! real API server compiles and can afford to run.

use kube_cel::{CompiledSchema, ScopeContext, WarningKind, analyze_rule};
use kube_emulator::validation::CompiledCrd;

const CRD_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crds/configrollouts.ringfence.dev.yaml"
);

#[test]
fn committed_crd_is_up_to_date() {
    let committed = std::fs::read_to_string(CRD_PATH).unwrap_or_default();
    assert!(
        committed == ringfence::api::crd_yaml(),
        "crds/configrollouts.ringfence.dev.yaml is out of date with the Rust types; \
         run `cargo run -- crd > crds/configrollouts.ringfence.dev.yaml`"
    );
}

#[test]
fn ringfence_crd_prints_the_committed_crd() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringfence"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        ringfence::api::crd_yaml()
    );
}

fn rules(node: &CompiledSchema, path: &str, out: &mut Vec<(String, String)>) {
    for rule in node.validations.iter().flatten() {
        out.push((path.to_string(), rule.rule.rule.clone()));
    }
    for (name, child) in &node.properties {
        rules(child, &format!("{path}.{name}"), out);
    }
    if let Some(items) = &node.items {
        rules(items, &format!("{path}[*]"), out);
    }
    if let Some(values) = &node.additional_properties {
        rules(values, &format!("{path}[*]"), out);
    }
}

/// Every rule compiles (CompiledCrd refuses a CRD with one that does not) and
/// kube-cel's analysis finds no scope or cost problem in it.
#[test]
fn every_cel_rule_compiles_and_fits_the_cost_budget() {
    let crd = serde_json::to_value(ringfence::api::crd()).unwrap();
    let compiled =
        CompiledCrd::new(&crd).unwrap_or_else(|e| panic!("the CRD does not compile: {e}"));
    let cel = compiled.cel("v1alpha1").expect("version v1alpha1");
    let mut all = Vec::new();
    rules(cel, "", &mut all);
    assert!(all.len() >= 15, "expected the CRD's rules, found {all:?}");

    let mut problems = Vec::new();
    check_node(cel, "", &mut problems);
    assert!(
        problems.is_empty(),
        "CEL analysis:\n{}",
        problems.join("\n")
    );
}

fn check_node(node: &CompiledSchema, path: &str, problems: &mut Vec<String>) {
    for rule in node.validations.iter().flatten() {
        let bound = comprehension_variables(&rule.rule.rule);
        for warning in analyze_rule(&rule.rule.rule, node, ScopeContext::CrdValidation) {
            // kube-cel 0.8 reports a macro's iteration variable as out of scope.
            let bound_variable = warning.kind == WarningKind::WrongScope
                && bound
                    .iter()
                    .any(|v| warning.message.starts_with(&format!("variable '{v}' ")));
            if !bound_variable {
                problems.push(format!("{path}: {}: {}", rule.rule.rule, warning.message));
            }
        }
        // A rule that walks a list, a map or a string needs it bounded, or the API
        // server's cost estimate assumes the largest request it accepts.
        let walks = rule.rule.rule.contains(".all(")
            || rule.rule.rule.contains(".exists")
            || rule.rule.rule.contains(".map(");
        if walks && node.max_items.is_none() && node.max_properties.is_none() {
            problems.push(format!(
                "{path}: {}: list without maxItems or map without maxProperties",
                rule.rule.rule
            ));
        }
        let scans = rule.rule.rule.starts_with("self.matches")
            || rule.rule.rule.starts_with("self.startsWith");
        if scans && node.max_length.is_none() {
            problems.push(format!(
                "{path}: {}: string without maxLength",
                rule.rule.rule
            ));
        }
    }
    for (name, child) in &node.properties {
        check_node(child, &format!("{path}.{name}"), problems);
    }
    if let Some(items) = &node.items {
        check_node(items, &format!("{path}[*]"), problems);
    }
    if let Some(values) = &node.additional_properties {
        check_node(values, &format!("{path}[*]"), problems);
    }
}

/// The variables `x` bound by `.all(x, ...)`, `.exists(x, ...)` and the like.
fn comprehension_variables(rule: &str) -> Vec<String> {
    let macros =
        regex::Regex::new(r"\.(all|exists|exists_one|map|filter)\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
            .unwrap();
    macros
        .captures_iter(rule)
        .map(|c| c[2].to_string())
        .collect()
}

#[test]
fn comprehension_variables_are_found() {
    assert_eq!(
        comprehension_variables("self.all(r, self.exists_one(o, o.name == r.name))"),
        ["r", "o"]
    );
    assert!(comprehension_variables("has(self.a)").is_empty());
}
