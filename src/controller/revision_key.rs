//! The key for Secret revisions: read from a Secret in the operator's namespace, generated
//! into it by the first replica that finds none. Every replica and restart reads the same
//! Secret, so revisions stay stable; `helm uninstall` leaves it, as it is not a chart object.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};

use super::RunError;
use super::error::api_code;
use crate::engine::RevisionKey;

/// The Secret's data key holding the revision key.
pub const REVISION_KEY_FIELD: &str = "key";

/// Where the revision key comes from.
#[derive(Clone, Debug)]
pub enum RevisionKeySource {
    /// A key given directly (the demo, tests).
    Fixed(RevisionKey),
    /// A Secret in the operator's namespace, created with a fresh key if `create` and missing.
    Secret {
        namespace: String,
        name: String,
        create: bool,
    },
}

pub async fn load_revision_key(
    client: &Client,
    source: &RevisionKeySource,
) -> Result<RevisionKey, RunError> {
    let (namespace, name, create) = match source {
        RevisionKeySource::Fixed(key) => return Ok(key.clone()),
        RevisionKeySource::Secret {
            namespace,
            name,
            create,
        } => (namespace, name, *create),
    };
    let what = format!("revision key Secret {namespace}/{name}");
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let failed = |e: kube::Error| RunError::RevisionKey(format!("cannot read the {what}: {e}"));
    if let Some(secret) = api.get_opt(name).await.map_err(failed)? {
        return key_of(&what, &secret);
    }
    if !create {
        return Err(RunError::RevisionKey(format!(
            "the {what} does not exist: create it with at least {} random bytes under `{REVISION_KEY_FIELD}`, or let the controller generate it",
            RevisionKey::MIN_LEN
        )));
    }
    let key = RevisionKey::generate();
    match api
        .create(&PostParams::default(), &key_secret(name, &key))
        .await
    {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "generated the revision key");
            Ok(key)
        }
        // Another replica created it first: use theirs.
        Err(e) if api_code(&e) == Some(409) => match api.get_opt(name).await.map_err(failed)? {
            Some(secret) => key_of(&what, &secret),
            None => Err(RunError::RevisionKey(format!(
                "the {what} was created and deleted again while starting"
            ))),
        },
        Err(e) => Err(RunError::RevisionKey(format!(
            "cannot create the {what}: {e}"
        ))),
    }
}

fn key_of(what: &str, secret: &Secret) -> Result<RevisionKey, RunError> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(REVISION_KEY_FIELD))
        .map(|b| b.0.clone())
        .ok_or_else(|| {
            RunError::RevisionKey(format!("the {what} has no `{REVISION_KEY_FIELD}`"))
        })?;
    RevisionKey::new(bytes)
        .map_err(|e| RunError::RevisionKey(format!("the {what}: `{REVISION_KEY_FIELD}`: {e}")))
}

fn key_secret(name: &str, key: &RevisionKey) -> Secret {
    let mut secret = Secret {
        type_: Some("Opaque".into()),
        data: Some(
            [(
                REVISION_KEY_FIELD.to_string(),
                ByteString(key.as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Secret::default()
    };
    secret.metadata.name = Some(name.to_string());
    secret.metadata.labels = Some(
        [
            (
                "app.kubernetes.io/name".to_string(),
                "ringfence".to_string(),
            ),
            (
                "app.kubernetes.io/component".to_string(),
                "revision-key".to_string(),
            ),
        ]
        .into(),
    );
    secret.metadata.annotations = Some(
        [(
            "ringfence.dev/description".to_string(),
            "Keys the revisions of Secret rollouts. Deleting it changes every Secret rollout's revision.".to_string(),
        )]
        .into(),
    );
    secret
}
