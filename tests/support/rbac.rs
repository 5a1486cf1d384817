//! RBAC bookkeeping for the chart tests: what rendered roles grant and what a
//! user asked for, as comparable `(apiGroup, resource[/subresource], verb)` triples.

use std::collections::BTreeSet;

use kube_emulator::RequestRecord;
use serde_json::Value;

pub type Permissions = BTreeSet<(String, String, String)>;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What `roles` grant, every list expanded.
pub fn granted(roles: &[&Value]) -> Permissions {
    let mut out = Permissions::new();
    for rule in roles
        .iter()
        .flat_map(|r| r["rules"].as_array().cloned().unwrap_or_default())
    {
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    out.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    out
}

pub fn describe(r: &RequestRecord) -> String {
    format!(
        "{} {}/{} {}/{} {} ({})",
        r.verb, r.resource, r.subresource, r.namespace, r.name, r.code, r.path
    )
}

/// What `user` asked for, by the emulator's request log; panics listing every
/// request that was denied.
pub fn used(log: &[RequestRecord], user: &str) -> Permissions {
    let mine: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| r.user.as_deref() == Some(user) && !r.verb.is_empty())
        .collect();
    let denied: Vec<String> = mine
        .iter()
        .filter(|r| r.code == 403)
        .map(|r| describe(r))
        .collect();
    assert!(
        denied.is_empty(),
        "{user} was denied:\n{}",
        denied.join("\n")
    );
    mine.iter()
        .map(|r| {
            let resource = match r.subresource.as_str() {
                "" => r.resource.clone(),
                sub => format!("{}/{sub}", r.resource),
            };
            (r.group.clone(), resource, r.verb.clone())
        })
        .collect()
}
