//! Kubernetes Events about a rollout, through one shared recorder (it groups repeats).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};

use crate::engine::{EventNote, EventType};

const CONTROLLER: &str = "ringfence";
/// events.k8s.io/v1 `note` limit, in bytes.
const NOTE_LIMIT: usize = 1024;

pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// `instance` names this replica (the pod name in a cluster).
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER.to_string(),
            instance,
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Publishes the notes about `regarding`. An event that cannot be written is logged and
    /// dropped: events inform, the rollout's status is the record.
    pub async fn publish(&self, regarding: &ObjectReference, notes: &[EventNote]) {
        for note in notes {
            let event = Event {
                type_: match note.type_ {
                    EventType::Normal => KubeEventType::Normal,
                    EventType::Warning => KubeEventType::Warning,
                },
                reason: note.reason.to_string(),
                // The API server refuses a note over 1 KiB.
                note: Some(super::error::bounded_text(&note.note, NOTE_LIMIT)),
                action: "Reconcile".to_string(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&event, regarding).await {
                tracing::warn!(reason = note.reason, error = %e, "could not publish event");
            }
        }
    }
}
