//! Bearer-token authentication and RBAC authorization against the Role,
//! ClusterRole, RoleBinding and ClusterRoleBinding objects in the store.

use serde::Serialize;
use serde_json::Value;

use crate::status::group_resource;
use crate::store::Store;

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

const AUTHENTICATED: &str = "system:authenticated";

impl UserInfo {
    /// A user with the given groups (plus `system:authenticated`).
    pub fn user(name: impl Into<String>, groups: &[&str]) -> Self {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        UserInfo {
            name: name.into(),
            groups,
        }
    }

    /// The identity of a service account's token.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED.into(),
            ],
        }
    }

    /// The cluster administrator, which bypasses authorization.
    pub fn admin() -> Self {
        UserInfo::user("system:admin", &["system:masters"])
    }

    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// What a request does, in RBAC terms.
#[derive(Debug, Clone)]
pub(crate) struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

fn lists(list: Option<&Value>, item: &str) -> bool {
    list.and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|v| v == "*" || v == item))
}

/// Whether one PolicyRule grants the request.
pub(crate) fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if !lists(rule.get("verbs"), a.verb) || !lists(rule.get("apiGroups"), a.group) {
        return false;
    }
    let resources = rule.get("resources").and_then(Value::as_array);
    let resource_ok = resources.is_some_and(|rs| {
        rs.iter().filter_map(Value::as_str).any(|r| {
            if a.subresource.is_empty() {
                r == "*" || r == a.resource
            } else {
                r == "*"
                    || r == format!("{}/{}", a.resource, a.subresource)
                    || r == format!("*/{}", a.subresource)
            }
        })
    });
    if !resource_ok {
        return false;
    }
    match rule.get("resourceNames").and_then(Value::as_array) {
        Some(names) if !names.is_empty() => !a.name.is_empty() && names.iter().any(|n| n == a.name),
        _ => true,
    }
}

fn subject_matches(subject: &Value, user: &UserInfo, binding_namespace: &str) -> bool {
    let text = |k: &str| subject.get(k).and_then(Value::as_str).unwrap_or("");
    match text("kind") {
        "User" => text("name") == user.name,
        "Group" => user.groups.iter().any(|g| g == text("name")),
        "ServiceAccount" => {
            let ns = match text("namespace") {
                "" => binding_namespace,
                ns => ns,
            };
            user.name == format!("system:serviceaccount:{ns}:{}", text("name"))
        }
        _ => false,
    }
}

fn role_rules(store: &Store, kind: &str, namespace: &str, name: &str) -> Vec<Value> {
    let (bucket, ns) = match kind {
        "ClusterRole" => ("clusterroles.rbac.authorization.k8s.io", ""),
        "Role" => ("roles.rbac.authorization.k8s.io", namespace),
        _ => return Vec::new(),
    };
    store
        .get(bucket, &(ns.to_string(), name.to_string()))
        .and_then(|r| r.value().get("rules").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

fn binding_allows(store: &Store, binding: &Value, user: &UserInfo, a: &Attributes) -> bool {
    let binding_ns = crate::meta::namespace(binding);
    let bound = binding
        .get("subjects")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|s| subject_matches(s, user, binding_ns)));
    if !bound {
        return false;
    }
    let role_ref = binding.get("roleRef");
    let text = |k: &str| {
        role_ref
            .and_then(|r| r.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    role_rules(store, text("kind"), binding_ns, text("name"))
        .iter()
        .any(|rule| rule_allows(rule, a))
}

/// Evaluates RBAC for a resource request.
pub(crate) fn authorize(store: &Store, user: &UserInfo, a: &Attributes) -> bool {
    if user.is_admin() {
        return true;
    }
    let all = |_: &Value| true;
    let cluster = store.list(
        "clusterrolebindings.rbac.authorization.k8s.io",
        None,
        None,
        None,
        &all,
    );
    if cluster
        .items
        .iter()
        .any(|b| binding_allows(store, b.value(), user, a))
    {
        return true;
    }
    if a.namespace.is_empty() {
        return false;
    }
    let local = store.list(
        "rolebindings.rbac.authorization.k8s.io",
        Some(a.namespace),
        None,
        None,
        &all,
    );
    local
        .items
        .iter()
        .any(|b| binding_allows(store, b.value(), user, a))
}

/// The reason text of the API server's 403 (without the leading resource).
pub(crate) fn denial_reason(user: &UserInfo, a: &Attributes) -> String {
    let resource = if a.subresource.is_empty() {
        a.resource.to_string()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    format!(
        "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        user.name, a.verb, a.group
    )
}

/// The full message of the API server's 403.
pub(crate) fn forbidden_message(user: &UserInfo, a: &Attributes) -> String {
    let gr = group_resource(a.group, a.resource);
    let subject = if a.name.is_empty() {
        gr
    } else {
        format!("{gr} \"{}\"", a.name)
    };
    format!("{subject} is forbidden: {}", denial_reason(user, a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            group,
            resource,
            subresource: sub,
            namespace: "ns",
            name,
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let rule = json!({"apiGroups": ["ringfence.dev"], "resources": ["configrollouts", "configrollouts/status"], "verbs": ["get", "list", "patch"]});
        assert!(rule_allows(
            &rule,
            &attrs("get", "ringfence.dev", "configrollouts", "", "x")
        ));
        assert!(rule_allows(
            &rule,
            &attrs("patch", "ringfence.dev", "configrollouts", "status", "x")
        ));
        assert!(!rule_allows(
            &rule,
            &attrs("delete", "ringfence.dev", "configrollouts", "", "x")
        ));
        assert!(!rule_allows(
            &rule,
            &attrs("get", "", "configrollouts", "", "x")
        ));
        assert!(!rule_allows(
            &rule,
            &attrs("get", "ringfence.dev", "other", "", "x")
        ));

        let star = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]});
        assert!(rule_allows(
            &star,
            &attrs("delete", "apps", "deployments", "status", "")
        ));

        let named = json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["get", "list"]});
        assert!(rule_allows(
            &named,
            &attrs("get", "", "configmaps", "", "a")
        ));
        assert!(!rule_allows(
            &named,
            &attrs("get", "", "configmaps", "", "b")
        ));
        assert!(!rule_allows(
            &named,
            &attrs("list", "", "configmaps", "", "")
        ));

        let any_status =
            json!({"apiGroups": ["apps"], "resources": ["*/status"], "verbs": ["update"]});
        assert!(rule_allows(
            &any_status,
            &attrs("update", "apps", "deployments", "status", "")
        ));
        assert!(!rule_allows(
            &any_status,
            &attrs("update", "apps", "deployments", "", "")
        ));
    }

    #[test]
    fn subjects() {
        let sa = UserInfo::service_account("ops", "bot");
        assert!(subject_matches(
            &json!({"kind": "ServiceAccount", "name": "bot"}),
            &sa,
            "ops"
        ));
        assert!(!subject_matches(
            &json!({"kind": "ServiceAccount", "name": "bot"}),
            &sa,
            "other"
        ));
        assert!(subject_matches(
            &json!({"kind": "Group", "name": "system:serviceaccounts:ops"}),
            &sa,
            ""
        ));
        assert!(subject_matches(
            &json!({"kind": "User", "name": "system:serviceaccount:ops:bot"}),
            &sa,
            ""
        ));
    }

    #[test]
    fn messages_read_like_the_api_server() {
        let user = UserInfo::user("alice", &[]);
        let a = attrs("list", "", "configmaps", "", "");
        assert_eq!(
            forbidden_message(&user, &a),
            "configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"ns\""
        );
    }
}
