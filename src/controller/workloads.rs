//! Consumer workloads: observe rollout readiness and stamp the pod template with a revision.
//!
//! Stamping is a JSON merge patch of one pod-template annotation under field manager
//! `ringfence`: it touches nothing else, and a GitOps tool applying the workload without
//! that annotation neither owns nor removes it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::Selector;
use kube::{Api, Client};
use serde_json::json;

use super::calls::with_retries;
use super::error::Error;
use crate::api::{FIELD_MANAGER, REVISION_ANNOTATION};
use crate::engine::{WorkloadKind, WorkloadState};

fn stamped(template: Option<&PodTemplateSpec>) -> Option<String> {
    template?
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(REVISION_ANNOTATION)
        .cloned()
}

fn caught_up(meta: &ObjectMeta, observed_generation: Option<i64>) -> bool {
    observed_generation.unwrap_or(0) >= meta.generation.unwrap_or(0)
}

pub fn deployment_state(d: &Deployment) -> WorkloadState {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let s = d.status.clone().unwrap_or_default();
    let rolled_out = caught_up(&d.metadata, s.observed_generation)
        && s.updated_replicas.unwrap_or(0) == desired
        && s.ready_replicas.unwrap_or(0) == desired
        && s.available_replicas.unwrap_or(0) == desired;
    WorkloadState {
        kind: WorkloadKind::Deployment,
        name: d.metadata.name.clone().unwrap_or_default(),
        stamped_revision: stamped(d.spec.as_ref().map(|s| &s.template)),
        rolled_out,
    }
}

pub fn statefulset_state(st: &StatefulSet) -> WorkloadState {
    let desired = st.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let s = st.status.clone().unwrap_or_default();
    let rolled_out = caught_up(&st.metadata, s.observed_generation)
        && s.updated_replicas.unwrap_or(0) == desired
        && s.ready_replicas.unwrap_or(0) == desired
        && s.available_replicas.unwrap_or(0) == desired;
    WorkloadState {
        kind: WorkloadKind::StatefulSet,
        name: st.metadata.name.clone().unwrap_or_default(),
        stamped_revision: stamped(st.spec.as_ref().map(|s| &s.template)),
        rolled_out,
    }
}

pub fn daemonset_state(ds: &DaemonSet) -> WorkloadState {
    let s = ds.status.clone().unwrap_or_default();
    let desired = s.desired_number_scheduled;
    let rolled_out = caught_up(&ds.metadata, s.observed_generation)
        && s.updated_number_scheduled.unwrap_or(0) == desired
        && s.number_ready == desired
        && s.number_available.unwrap_or(0) == desired;
    WorkloadState {
        kind: WorkloadKind::DaemonSet,
        name: ds.metadata.name.clone().unwrap_or_default(),
        stamped_revision: stamped(ds.spec.as_ref().map(|s| &s.template)),
        rolled_out,
    }
}

/// The label selector as a query string; an unparsable selector is a spec error.
pub fn selector_string(selector: &LabelSelector) -> Result<String, Error> {
    Selector::try_from(selector.clone())
        .map(|s| s.to_string())
        .map_err(|e| Error::InvalidSpec(format!("spec.workloads.selector: {e}")))
}

/// Matching workloads in the given namespaces: three cluster-wide lists, whatever the ring size.
pub async fn observe(
    client: &Client,
    selector: &LabelSelector,
    namespaces: &BTreeSet<String>,
) -> Result<BTreeMap<String, Vec<WorkloadState>>, Error> {
    let lp = ListParams::default().labels(&selector_string(selector)?);
    let mut out: BTreeMap<String, Vec<WorkloadState>> =
        namespaces.iter().map(|n| (n.clone(), Vec::new())).collect();
    let mut add = |meta: &ObjectMeta, state: WorkloadState| {
        if let Some(list) = meta.namespace.as_ref().and_then(|ns| out.get_mut(ns)) {
            list.push(state);
        }
    };
    let deployments = Api::<Deployment>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| Error::kube("list deployments", e))?;
    for d in &deployments {
        add(&d.metadata, deployment_state(d));
    }
    let statefulsets = Api::<StatefulSet>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| Error::kube("list statefulsets", e))?;
    for s in &statefulsets {
        add(&s.metadata, statefulset_state(s));
    }
    let daemonsets = Api::<DaemonSet>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| Error::kube("list daemonsets", e))?;
    for d in &daemonsets {
        add(&d.metadata, daemonset_state(d));
    }
    for list in out.values_mut() {
        list.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    }
    Ok(out)
}

/// Sets the pod-template revision annotation on each workload.
pub async fn stamp(
    client: &Client,
    namespace: &str,
    revision: &str,
    workloads: &[(WorkloadKind, String)],
) -> Result<(), Error> {
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {REVISION_ANNOTATION: revision}}}}});
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    for (kind, name) in workloads {
        let what = format!("stamp {kind:?} {namespace}/{name}");
        let merge = Patch::Merge(&patch);
        match kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
                with_retries(&what, || api.patch(name, &pp, &merge)).await?;
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
                with_retries(&what, || api.patch(name, &pp, &merge)).await?;
            }
            WorkloadKind::DaemonSet => {
                let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
                with_retries(&what, || api.patch(name, &pp, &merge)).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DaemonSetStatus, DeploymentSpec, DeploymentStatus};
    use serde_json::from_value;

    fn deployment(generation: i64, replicas: i32, status: DeploymentStatus) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                template: from_value(
                    json!({"metadata": {"annotations": {REVISION_ANNOTATION: "r1"}}}),
                )
                .unwrap(),
                ..DeploymentSpec::default()
            }),
            status: Some(status),
        }
    }

    fn status(observed: i64, updated: i32, ready: i32, available: i32) -> DeploymentStatus {
        DeploymentStatus {
            observed_generation: Some(observed),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            ..DeploymentStatus::default()
        }
    }

    #[test]
    fn deployment_readiness() {
        let ok = deployment_state(&deployment(2, 3, status(2, 3, 3, 3)));
        assert!(ok.rolled_out);
        assert_eq!(ok.stamped_revision.as_deref(), Some("r1"));
        assert!(
            !deployment_state(&deployment(3, 3, status(2, 3, 3, 3))).rolled_out,
            "stale generation"
        );
        assert!(
            !deployment_state(&deployment(2, 3, status(2, 2, 3, 3))).rolled_out,
            "not all updated"
        );
        assert!(
            !deployment_state(&deployment(2, 3, status(2, 3, 2, 2))).rolled_out,
            "not ready"
        );
        let mut no_status = deployment(1, 1, DeploymentStatus::default());
        no_status.status = None;
        assert!(!deployment_state(&no_status).rolled_out);
    }

    #[test]
    fn daemonset_readiness_uses_scheduled_numbers() {
        let mut ds = DaemonSet::default();
        ds.metadata.generation = Some(1);
        ds.status = Some(DaemonSetStatus {
            observed_generation: Some(1),
            desired_number_scheduled: 4,
            updated_number_scheduled: Some(4),
            number_ready: 4,
            number_available: Some(4),
            ..DaemonSetStatus::default()
        });
        assert!(daemonset_state(&ds).rolled_out);
        ds.status.as_mut().unwrap().number_ready = 3;
        assert!(!daemonset_state(&ds).rolled_out);
    }

    #[test]
    fn statefulset_without_status_is_not_rolled_out() {
        let st = StatefulSet::default();
        assert!(!statefulset_state(&st).rolled_out);
    }

    #[test]
    fn selectors_render_or_fail_cleanly() {
        let s: LabelSelector = from_value(json!({"matchLabels": {"app": "checkout"}})).unwrap();
        assert_eq!(selector_string(&s).unwrap(), "app=checkout");
        let bad: LabelSelector =
            from_value(json!({"matchExpressions": [{"key": "app", "operator": "Bogus"}]})).unwrap();
        assert!(matches!(selector_string(&bad), Err(Error::InvalidSpec(_))));
    }
}
