//! The `ConfigRollout` API (group `ringfence.dev`, version `v1alpha1`).

mod spec;
mod status;

pub use spec::*;
pub use status::*;

use kube::CustomResourceExt;

/// Field manager for every write the controller makes.
pub const FIELD_MANAGER: &str = "ringfence";
/// Label on every object the controller manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Annotation naming the rollout (`namespace/name`) that wrote a target.
pub const ROLLOUT_ANNOTATION: &str = "ringfence.dev/rollout";
/// Annotation with the revision a target or pod template holds.
pub const REVISION_ANNOTATION: &str = "ringfence.dev/revision";
/// Namespace label that lets rollouts from the named namespace write into it.
pub const ALLOW_FROM_LABEL: &str = "ringfence.dev/allow-from";
/// Manual control annotations on a ConfigRollout; the value is a request id.
pub const PROMOTE_ANNOTATION: &str = "ringfence.dev/promote";
pub const ABORT_ANNOTATION: &str = "ringfence.dev/abort";
pub const RETRY_ANNOTATION: &str = "ringfence.dev/retry";

/// The CRD as YAML, exactly as committed under `crds/`.
pub fn crd_yaml() -> String {
    let crd = ConfigRollout::crd();
    serde_saphyr::to_string(&crd).expect("the CRD always serializes")
}
