//! Watch streams: newline-delimited JSON events over a chunked response.
//!
//! Every watcher holds a receiver of one broadcast channel fed by the store.
//! A watcher that falls further behind than the channel holds is ended (its
//! client re-watches from its last resourceVersion, as after a server
//! restart), so a slow client never holds up writers.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, Interval};

use crate::meta;
use crate::objects::Objects;
use crate::registry::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{EventType, ObjRef, StoreEvent};
use crate::table::Table;

/// Which objects a list or watch selects.
pub(crate) struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && meta::namespace(obj) != ns
        {
            return false;
        }
        if let Some(name) = self.fields.required_name()
            && meta::name(obj) != name
        {
            return false;
        }
        self.labels.matches(meta::labels(obj)) && self.fields.matches(obj)
    }
}

pub(crate) struct WatchRequest {
    pub rt: Arc<ResourceType>,
    pub version: String,
    pub filter: Filter,
    /// Events after this resourceVersion; `None` starts with the current objects.
    pub from: Option<u64>,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub table: Option<Table>,
    /// Objects go out as `PartialObjectMetadata`.
    pub metadata_only: bool,
    /// Answer with a 410 event instead of watching (fault injection).
    pub force_expired: bool,
}

struct Watcher {
    rt: Arc<ResourceType>,
    version: String,
    resource: String,
    filter: Filter,
    table: Option<Table>,
    metadata_only: bool,
    receiver: broadcast::Receiver<Arc<StoreEvent>>,
    pending: VecDeque<Bytes>,
    last_rv: u64,
    deadline: Option<Instant>,
    bookmarks: Option<Interval>,
    closer: watch::Receiver<u64>,
    done: bool,
    last_flush: Option<Instant>,
    /// Objects go out exactly as stored (one version, no conversion).
    as_stored: bool,
}

/// Most events folded into one chunk when a watcher catches up.
const BATCH: usize = 512;

/// Window within which a busy watch gathers events into one chunk.
const COALESCE: Duration = Duration::from_millis(2);

fn line(kind: &str, object: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(object.len() + 32);
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(kind.as_bytes());
    buf.extend_from_slice(b"\",\"object\":");
    buf.extend_from_slice(object);
    buf.extend_from_slice(b"}\n");
    buf
}

/// The single ERROR event a watch gets when its resourceVersion is too old.
pub(crate) fn expired_event(rv: Option<u64>) -> Bytes {
    let message = match rv {
        Some(rv) => format!("too old resource version: {rv}"),
        None => "too old resource version".to_string(),
    };
    let status = ApiError::gone(message).to_value();
    Bytes::from(line("ERROR", status.to_string().as_bytes()))
}

impl Watcher {
    fn render(&self, kind: EventType, obj: &ObjRef, out: &mut Vec<u8>) {
        let obj = if self.as_stored {
            obj.clone()
        } else {
            Objects::present(&self.rt, &self.version, obj)
        };
        match &self.table {
            Some(table) => {
                let t = table.render(
                    std::iter::once(obj.value()),
                    json!({"resourceVersion": obj.rv().to_string()}),
                );
                out.extend(line(kind.as_str(), t.to_string().as_bytes()));
            }
            None if self.metadata_only => {
                let partial = meta::partial(obj.value());
                out.extend(line(kind.as_str(), partial.to_string().as_bytes()));
            }
            None => out.extend(line(kind.as_str(), obj.json())),
        }
    }

    /// Appends the event as this watch sees it: an object that starts or stops
    /// matching the selectors is ADDED or DELETED.
    fn translate(&self, ev: &StoreEvent, out: &mut Vec<u8>) {
        if ev.resource != self.resource {
            return;
        }
        let now = self.filter.matches(ev.object.value());
        let before = ev
            .previous
            .as_ref()
            .is_some_and(|p| self.filter.matches(p.value()));
        let kind = match ev.kind {
            EventType::Added if now => EventType::Added,
            EventType::Modified if before && now => EventType::Modified,
            EventType::Modified if now => EventType::Added,
            EventType::Modified if before => EventType::Deleted,
            EventType::Deleted if now || before => EventType::Deleted,
            _ => return,
        };
        self.render(kind, &ev.object, out);
    }

    fn bookmark(&self) -> Bytes {
        let (kind, api_version) = if self.metadata_only {
            (
                "PartialObjectMetadata".to_string(),
                meta::PARTIAL_API_VERSION.to_string(),
            )
        } else {
            (self.rt.kind.clone(), self.rt.api_version(&self.version))
        };
        let obj = json!({
            "kind": kind,
            "apiVersion": api_version,
            "metadata": {"resourceVersion": self.last_rv.to_string()},
        });
        Bytes::from(line("BOOKMARK", obj.to_string().as_bytes()))
    }

    /// Translates `first` and whatever else is already queued into one chunk.
    async fn receive(&mut self, first: Arc<StoreEvent>) {
        let mut out = Vec::new();
        self.last_rv = first.rv;
        self.translate(&first, &mut out);
        // Under a stream of writes, gather what arrives within a short window
        // so one write to the client carries many events; an isolated event
        // goes out at once.
        match self.last_flush {
            Some(prev) if prev.elapsed() < COALESCE => {
                tokio::time::sleep_until(prev + COALESCE).await
            }
            _ => tokio::task::yield_now().await,
        }
        for _ in 0..BATCH {
            match self.receiver.try_recv() {
                Ok(ev) => {
                    self.last_rv = ev.rv;
                    self.translate(&ev, &mut out);
                }
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(_) => {
                    self.done = true;
                    break;
                }
            }
        }
        if !out.is_empty() {
            self.pending.push_back(Bytes::from(out));
        }
        self.last_flush = Some(Instant::now());
    }

    async fn next_chunk(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some((Ok(chunk), self));
            }
            if self.done {
                return None;
            }
            let deadline = self.deadline;
            tokio::select! {
                biased;
                _ = self.closer.changed() => self.done = true,
                received = self.receiver.recv() => match received {
                    Ok(ev) => self.receive(ev).await,
                    // Lagged or closed: end the stream; the client resumes from its last event.
                    Err(_) => self.done = true,
                },
                _ = async {
                    match self.bookmarks.as_mut() {
                        Some(i) => { i.tick().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    let b = self.bookmark();
                    self.pending.push_back(b);
                }
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    if self.bookmarks.is_some() {
                        let b = self.bookmark();
                        self.pending.push_back(b);
                    }
                    self.done = true;
                }
            }
        }
    }
}

/// A watch stream over `objects`' store, or the 410 event when the requested
/// resourceVersion is no longer retained.
pub(crate) fn stream(
    objects: &Objects,
    req: WatchRequest,
    closer: watch::Receiver<u64>,
    bookmark_interval: Duration,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let resource = req.rt.bucket();
    let subscription = if req.force_expired {
        None
    } else {
        objects
            .store
            .subscribe(&resource, req.filter.namespace.as_deref(), req.from)
            .ok()
    };
    let as_stored = req.rt.versions.len() == 1 && req.rt.stored_as.is_none();
    let watcher = subscription.map(|sub| {
        let mut w = Watcher {
            rt: req.rt,
            version: req.version,
            resource,
            filter: req.filter,
            table: req.table,
            metadata_only: req.metadata_only,
            receiver: sub.receiver,
            pending: VecDeque::new(),
            last_rv: sub.rv,
            deadline: req.timeout.map(|t| Instant::now() + t),
            bookmarks: req.bookmarks.then(|| {
                tokio::time::interval_at(Instant::now() + bookmark_interval, bookmark_interval)
            }),
            closer,
            done: false,
            last_flush: None,
            as_stored,
        };
        let mut out = Vec::new();
        for obj in &sub.initial {
            if w.filter.matches(obj.value()) {
                w.render(EventType::Added, obj, &mut out);
            }
        }
        for ev in &sub.backlog {
            w.translate(ev, &mut out);
        }
        if !out.is_empty() {
            w.pending.push_back(Bytes::from(out));
        }
        w
    });
    let from = req.from;
    let expired = watcher.is_none().then(|| expired_event(from));
    let head = futures::stream::iter(expired.map(Ok));
    let body = futures::stream::unfold(watcher, |w| async move {
        let (chunk, w) = w?.next_chunk().await?;
        Some((chunk, Some(w)))
    });
    futures::StreamExt::chain(head, body)
}
