//! Kubeconfig files pointing kubectl (or any client) at the emulator.

/// A kubeconfig with one cluster, one token user and a current context
/// whose default namespace is `default`. kubectl drops credentials for
/// plain-HTTP servers, so the server URL also carries the token
/// (`/_token/{token}`), which the emulator strips and honours.
pub(crate) fn render(url: &str, user: &str, token: &str) -> String {
    let server = format!("{url}{}{token}", crate::server::TOKEN_PREFIX);
    // JSON strings are valid YAML double-quoted scalars.
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: kube-emulator\n  cluster:\n    server: {server}\n\
         users:\n\
         - name: {user}\n  user:\n    token: {token}\n\
         contexts:\n\
         - name: kube-emulator\n  context:\n    cluster: kube-emulator\n    user: {user}\n    namespace: default\n\
         current-context: kube-emulator\n\
         preferences: {{}}\n",
        server = q(&server),
        user = q(user),
        token = q(token),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_reads_it() {
        let yaml = render(
            "http://127.0.0.1:1234",
            "system:serviceaccount:a:b",
            "t0k3n",
        );
        let config = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(config.current_context.as_deref(), Some("kube-emulator"));
        let cluster = config.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(
            cluster.server.as_deref(),
            Some("http://127.0.0.1:1234/_token/t0k3n")
        );
        assert_eq!(config.auth_infos[0].name, "system:serviceaccount:a:b");
    }
}
