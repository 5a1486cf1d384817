//! HTTP routing: parses Kubernetes API paths, authenticates, applies
//! faults, authorizes, dispatches to the object logic and logs each request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::authz::{self, Attributes, UserInfo};
use crate::discovery;
use crate::faults::{FaultRequest, Faults, RequestLog, RequestRecord};
use crate::limits;
use crate::meta;
use crate::objects::{DeleteOptions, Objects, Target, WriteOptions, list_body};
use crate::patch::PatchType;
use crate::registry::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Key, ObjRef, StoredObject};
use crate::table::{self, IncludeObject, Table};
use crate::watch::{self, Filter, WatchRequest};

/// Path prefix carrying a bearer token (see [`split_token`]).
pub(crate) const TOKEN_PREFIX: &str = "/_token/";

/// Largest body of a request to the emulator's own endpoints.
const MAX_BODY: usize = 16 << 20;

/// How much of an oversized body is read (and dropped) before answering, so
/// that the client, still sending, reads the 413 rather than a reset connection.
const MAX_DRAIN: usize = 64 << 20;

/// Seconds a throttled client is told to wait (priority and fairness' default).
const RETRY_AFTER_SECONDS: u32 = 1;

/// Bearer tokens and whether they are required.
pub(crate) struct Auth {
    pub enabled: bool,
    tokens: RwLock<HashMap<String, UserInfo>>,
}

impl Auth {
    pub fn new(enabled: bool) -> Self {
        Auth {
            enabled,
            tokens: RwLock::new(HashMap::new()),
        }
    }

    pub fn add(&self, token: &str, user: UserInfo) {
        let mut tokens = match self.tokens.write() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        tokens.insert(token.to_string(), user);
    }

    /// The user of the token in the URL path, else of the bearer token.
    fn identify(&self, path_token: Option<&str>, headers: &HeaderMap) -> Option<UserInfo> {
        let token = match path_token {
            Some(t) => t,
            None => headers
                .get(header::AUTHORIZATION)?
                .to_str()
                .ok()?
                .strip_prefix("Bearer ")?
                .trim(),
        };
        let tokens = match self.tokens.read() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        tokens.get(token).cloned()
    }
}

/// Everything request handlers share.
pub(crate) struct Shared {
    pub objects: Objects,
    pub faults: Faults,
    pub log: RequestLog,
    pub auth: Auth,
    pub bookmark_interval: Duration,
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn json_bytes(code: u16, body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn json_response(code: u16, v: &Value) -> Response {
    json_bytes(code, Bytes::from(v.to_string()))
}

fn object_response(code: u16, obj: &ObjRef) -> Response {
    json_bytes(code, obj.json().clone())
}

fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.code, &e.to_value());
    if let Some(seconds) = e.retry_after() {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    }
    r
}

/// An object as the client asked for it: in its version, or its metadata only.
fn shown(rt: &ResourceType, version: &str, obj: &ObjRef, metadata_only: bool) -> ObjRef {
    let shown = Objects::present(rt, version, obj);
    if metadata_only {
        Arc::new(StoredObject::new(meta::partial(shown.value())))
    } else {
        shown
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request for objects: `/api/v1/...` or `/apis/{group}/{version}/...`.
#[derive(Debug, Clone, PartialEq)]
struct ResourcePath {
    group: String,
    version: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_rest(group: &str, version: &str, rest: &[String]) -> Option<ResourcePath> {
    let (namespace, rest) = match rest {
        [ns_kw, ns, res, tail @ ..]
            if ns_kw == "namespaces"
                && !(tail.is_empty() && matches!(res.as_str(), "status" | "finalize")) =>
        {
            (
                Some(ns.clone()),
                std::iter::once(res)
                    .chain(tail.iter())
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        }
        _ => (None, rest.to_vec()),
    };
    let (resource, name, subresource) = match rest.as_slice() {
        [r] => (r.clone(), None, None),
        [r, n] => (r.clone(), Some(n.clone()), None),
        [r, n, s] => (r.clone(), Some(n.clone()), Some(s.clone())),
        _ => return None,
    };
    if resource.is_empty() || name.as_deref() == Some("") {
        return None;
    }
    Some(ResourcePath {
        group: group.to_string(),
        version: version.to_string(),
        namespace,
        resource,
        name,
        subresource,
    })
}

enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    GroupVersion(String, String),
    OpenApiRoot,
    OpenApi(String, String),
    Private(String),
    Resource(ResourcePath),
    Unknown,
}

fn route(path: &str) -> Route {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "readyz" | "livez"] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["api", "v1"] => Route::GroupVersion(String::new(), "v1".into()),
        ["apis"] => Route::Groups,
        ["apis", g] => Route::Group(g.to_string()),
        ["apis", g, v] => Route::GroupVersion(g.to_string(), v.to_string()),
        ["openapi", "v3"] => Route::OpenApiRoot,
        ["openapi", "v3", "api", v] => Route::OpenApi(String::new(), v.to_string()),
        ["openapi", "v3", "apis", g, v] => Route::OpenApi(g.to_string(), v.to_string()),
        ["_emulator", what] => Route::Private(what.to_string()),
        ["api", v, ..] => parse_rest("", v, &segs[2..]).map_or(Route::Unknown, Route::Resource),
        ["apis", g, v, ..] => parse_rest(g, v, &segs[3..]).map_or(Route::Unknown, Route::Resource),
        _ => Route::Unknown,
    }
}

/// Splits a `/_token/{token}` prefix off a path. kubectl (client-go's
/// clientcmd) sends no credentials to a plain-HTTP server, so kubeconfigs
/// written by the emulator carry the token in the server URL instead.
fn split_token(path: &str) -> (Option<String>, String) {
    match path.strip_prefix(TOKEN_PREFIX) {
        Some(rest) => {
            let (token, tail) = rest.split_once('/').unwrap_or((rest, ""));
            (Some(percent_decode(token)), format!("/{tail}"))
        }
        None => (None, path.to_string()),
    }
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    })
    .unwrap_or_default()
}

fn flag(query: &HashMap<String, String>, key: &str) -> bool {
    query.get(key).is_some_and(|v| v == "true" || v == "1")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

fn encode_continue(rv: u64, key: &Key) -> String {
    let token = ContinueToken {
        rv,
        ns: key.0.clone(),
        name: key.1.clone(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(s: &str) -> Result<ContinueToken, ApiError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| ApiError::bad_request("continue key is not valid"))?;
    serde_json::from_slice(&bytes).map_err(|_| ApiError::bad_request("continue key is not valid"))
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

/// What a handler reads from a request besides its body.
struct Incoming<'a> {
    method: &'a Method,
    path_token: Option<&'a str>,
    headers: &'a HeaderMap,
    query: &'a HashMap<String, String>,
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (path_token, path) = split_token(parts.uri.path());
    let route = route(&path);
    if let Route::Private(what) = route {
        return shared
            .private(&parts.method, &what, parts.uri.query(), body)
            .await;
    }
    let query = parse_query(parts.uri.query());
    let mut record = RequestRecord {
        seq: 0,
        time: jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string(),
        method: parts.method.to_string(),
        path,
        verb: String::new(),
        group: String::new(),
        version: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        code: 0,
        user: None,
        field_manager: query.get("fieldManager").cloned(),
    };
    let response = shared
        .serve(
            route,
            &Incoming {
                method: &parts.method,
                path_token: path_token.as_deref(),
                headers: &parts.headers,
                query: &query,
            },
            body,
            &mut record,
        )
        .await;
    record.code = response.status().as_u16();
    shared.log.push(record);
    response
}

impl Shared {
    async fn private(
        &self,
        method: &Method,
        what: &str,
        query: Option<&str>,
        body: Body,
    ) -> Response {
        match (method, what) {
            (&Method::POST, "faults") => {
                let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
                    return error_response(&ApiError::bad_request("unreadable body"));
                };
                match serde_json::from_slice::<FaultRequest>(&bytes) {
                    Ok(request) => {
                        self.faults.configure(request);
                        json_response(200, &json!({}))
                    }
                    Err(e) => error_response(&ApiError::bad_request(e.to_string())),
                }
            }
            (&Method::GET, "requests") => {
                let since = parse_query(query)
                    .get("since")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                json_response(200, &json!(self.log.since(since)))
            }
            (&Method::DELETE, "requests") => {
                self.log.clear();
                json_response(200, &json!({}))
            }
            _ => error_response(&ApiError::unknown_path()),
        }
    }

    async fn serve(
        &self,
        route: Route,
        req: &Incoming<'_>,
        body: Body,
        record: &mut RequestRecord,
    ) -> Response {
        let method = req.method;
        let user = self.auth.identify(req.path_token, req.headers);
        // Version and health are public, as on a real cluster.
        let public = matches!(route, Route::Version | Route::Health);
        if self.auth.enabled {
            match &user {
                Some(u) => record.user = Some(u.name.clone()),
                None if public => {}
                None => {
                    return error_response(&ApiError::new(401, "Unauthorized"));
                }
            }
        }
        let registry = &self.objects.registry;
        let found = |v: Option<Value>| match v {
            Some(v) => json_response(200, &v),
            None => error_response(&ApiError::unknown_path()),
        };
        if !matches!(route, Route::Resource(_)) && method != Method::GET {
            return error_response(&ApiError::new(405, "method not allowed"));
        }
        match route {
            Route::Version => json_response(200, &discovery::version()),
            Route::Health => json_bytes(200, Bytes::from_static(b"ok")),
            Route::CoreVersions => json_response(200, &discovery::core_versions()),
            Route::Groups => json_response(200, &discovery::group_list(registry)),
            Route::Group(g) => found(discovery::group(registry, &g)),
            Route::GroupVersion(g, v) => found(discovery::resource_list(registry, &g, &v)),
            Route::OpenApiRoot => json_response(200, &discovery::openapi_root(registry)),
            Route::OpenApi(g, v) => found(
                discovery::resource_list(registry, &g, &v)
                    .map(|_| discovery::openapi_group_version(registry, &g, &v)),
            ),
            Route::Resource(p) => {
                let user = user.unwrap_or_else(UserInfo::admin);
                match self.resource(p, req, body, record, &user).await {
                    Ok(r) => r,
                    Err(e) => error_response(&e),
                }
            }
            Route::Private(_) | Route::Unknown => error_response(&ApiError::unknown_path()),
        }
    }

    async fn resource(
        &self,
        p: ResourcePath,
        req: &Incoming<'_>,
        body: Body,
        record: &mut RequestRecord,
        user: &UserInfo,
    ) -> Result<Response, ApiError> {
        let (method, headers, query) = (req.method, req.headers, req.query);
        let rt = self
            .objects
            .registry
            .lookup(&p.group, &p.version, &p.resource)
            .ok_or_else(ApiError::unknown_path)?;
        let verb = match (method, &p.name) {
            (&Method::GET, Some(_)) => "get",
            (&Method::GET, None) if flag(query, "watch") => "watch",
            (&Method::GET, None) => "list",
            (&Method::POST, None) => "create",
            (&Method::PUT, Some(_)) => "update",
            (&Method::PATCH, Some(_)) => "patch",
            (&Method::DELETE, Some(_)) => "delete",
            (&Method::DELETE, None) => "deletecollection",
            _ => {
                return Err(ApiError::method_not_supported(
                    &rt.group,
                    &rt.plural,
                    method.as_str(),
                ));
            }
        };
        let name = p.name.clone().unwrap_or_default();
        let sub = p.subresource.clone().unwrap_or_default();
        let namespace = p.namespace.clone().unwrap_or_default();
        record.verb = verb.into();
        record.group = rt.group.clone();
        record.version = p.version.clone();
        record.resource = rt.plural.clone();
        record.subresource = sub.clone();
        record.namespace = namespace.clone();
        record.name = name.clone();

        if !rt.namespaced && p.namespace.is_some() {
            return Err(ApiError::unknown_path());
        }
        if rt.namespaced && p.namespace.is_none() && !matches!(verb, "list" | "watch") {
            return Err(ApiError::unknown_path());
        }
        if !sub.is_empty() && (sub != "status" || !rt.status_subresource) {
            return Err(ApiError::unknown_path());
        }
        if rt.create_only && verb != "create" {
            return Err(ApiError::method_not_supported(&rt.group, &rt.plural, verb));
        }

        let attrs = Attributes {
            verb,
            group: &rt.group,
            resource: &rt.plural,
            subresource: &sub,
            namespace: &namespace,
            name: &name,
        };
        let outcome = self.faults.check(&attrs);
        if let Some(delay) = outcome.delay {
            tokio::time::sleep(delay).await;
        }
        match outcome.fail {
            Some(429) => return Err(ApiError::too_many_requests(RETRY_AFTER_SECONDS)),
            Some(code) => return Err(ApiError::new(code, format!("injected fault: {code}"))),
            None => {}
        }
        let review_by_anyone = rt.plural == "selfsubjectaccessreviews";
        if self.auth.enabled
            && !review_by_anyone
            && !authz::authorize(&self.objects.store, user, &attrs)
        {
            return Err(ApiError::forbidden(
                &rt.group,
                &rt.plural,
                &name,
                authz::forbidden_message(user, &attrs),
            ));
        }

        let target = Target::new(&self.objects.registry, rt.clone(), &p.version, &namespace);
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let table = table::wants_table(accept).then(|| {
            Table::new(
                &rt,
                &p.version,
                IncludeObject::parse(query.get("includeObject").map(String::as_str)),
            )
        });
        let opts = WriteOptions {
            field_manager: query.get("fieldManager").cloned(),
            default_manager: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .filter(|m| !m.is_empty())
                .unwrap_or("unknown")
                .to_string(),
            force: flag(query, "force"),
            dry_run: query.contains_key("dryRun"),
        };
        let metadata_only = table.is_none() && meta::wants_metadata(accept);
        let objects = &self.objects;
        let present = |o: &ObjRef| shown(&rt, &p.version, o, metadata_only);

        match verb {
            "get" => {
                let obj = present(&objects.get(&target, &name)?);
                Ok(match &table {
                    Some(t) => json_response(
                        200,
                        &t.render(
                            std::iter::once(obj.value()),
                            json!({"resourceVersion": obj.rv().to_string()}),
                        ),
                    ),
                    None => object_response(200, &obj),
                })
            }
            "list" => self.list(&rt, &p, query, table.as_ref(), metadata_only),
            "watch" => self.watch(&rt, &p, query, table, metadata_only),
            "create" => {
                let body = read_json(headers, body).await?;
                if rt.create_only {
                    return Ok(json_response(201, &self.review(&rt, body, user)?));
                }
                Ok(object_response(
                    201,
                    &present(&objects.create(&target, body, &opts)?),
                ))
            }
            "update" => {
                let body = read_json(headers, body).await?;
                let obj = objects.update(&target, &name, sub == "status", body, &opts)?;
                Ok(object_response(200, &present(&obj)))
            }
            "patch" => {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let patch_type = PatchType::from_content_type(content_type).ok_or_else(|| {
                    ApiError::new(415, format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"))
                })?;
                let body = read_body(body).await?;
                let existed = objects
                    .store
                    .get(&target.rt.bucket(), &(namespace.clone(), name.clone()))
                    .is_some();
                let obj =
                    objects.patch(&target, &name, sub == "status", patch_type, &body, &opts)?;
                Ok(object_response(
                    if existed { 200 } else { 201 },
                    &present(&obj),
                ))
            }
            "delete" => {
                let body = read_body(body).await?;
                let delete = DeleteOptions::parse(&body, query)?;
                let obj = objects.delete(&target, &name, &delete)?;
                let still_there = objects
                    .store
                    .get(&target.rt.bucket(), &(namespace.clone(), name.clone()))
                    .is_some();
                Ok(object_response(
                    if still_there { 202 } else { 200 },
                    &present(&obj),
                ))
            }
            _ => {
                let body = read_body(body).await?;
                let delete = DeleteOptions::parse(&body, query)?;
                let filter = self.filter(&rt, &p, query)?;
                let deleted =
                    objects.delete_collection(&target, &|v| filter.matches(v), &delete)?;
                let items = deleted.iter().map(|o| present(o).value().clone()).collect();
                Ok(json_response(
                    200,
                    &list_body(&rt, &p.version, items, Map::new()),
                ))
            }
        }
    }

    fn filter(
        &self,
        rt: &ResourceType,
        p: &ResourcePath,
        query: &HashMap<String, String>,
    ) -> Result<Filter, ApiError> {
        let labels = match query.get("labelSelector") {
            Some(s) => LabelSelector::parse(s).map_err(ApiError::bad_request)?,
            None => LabelSelector::default(),
        };
        let fields = match query.get("fieldSelector") {
            Some(s) => FieldSelector::parse(s).map_err(ApiError::bad_request)?,
            None => FieldSelector::default(),
        };
        Ok(Filter {
            namespace: p.namespace.clone().filter(|_| rt.namespaced),
            labels,
            fields,
        })
    }

    fn list(
        &self,
        rt: &Arc<ResourceType>,
        p: &ResourcePath,
        query: &HashMap<String, String>,
        table: Option<&Table>,
        metadata_only: bool,
    ) -> Result<Response, ApiError> {
        let filter = self.filter(rt, p, query)?;
        let limit = match query.get("limit").map(|l| l.parse::<i64>()) {
            Some(Ok(l)) if l > 0 => Some(l as usize),
            Some(Ok(_)) | None => None,
            Some(Err(_)) => return Err(ApiError::bad_request("invalid limit")),
        };
        let store = &self.objects.store;
        let resource = rt.bucket();
        let ns = filter.namespace.as_deref();
        let matches = |v: &Value| filter.matches(v);
        let page = if let Some(token) = query.get("continue").filter(|c| !c.is_empty()) {
            let token = decode_continue(token)?;
            let after = (token.ns, token.name);
            store
                .list_at(&resource, ns, token.rv, Some(&after), limit, &matches)
                .map_err(|_| {
                    ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
                })?
        } else {
            let rv = query
                .get("resourceVersion")
                .map(String::as_str)
                .unwrap_or("");
            match query.get("resourceVersionMatch").map(String::as_str) {
                Some("Exact") => {
                    let rv = parse_rv(rv)?;
                    store
                        .list_at(&resource, ns, rv, None, limit, &matches)
                        .map_err(|_| ApiError::gone(format!("too old resource version: {rv}")))?
                }
                Some("NotOlderThan") | None | Some("") => {
                    if !rv.is_empty() {
                        parse_rv(rv)?;
                    }
                    store.list(&resource, ns, None, limit, &matches)
                }
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "resourceVersionMatch: Unsupported value: {other:?}"
                    )));
                }
            }
        };
        let mut list_meta = Map::new();
        list_meta.insert("resourceVersion".into(), json!(page.rv.to_string()));
        if let Some(next) = &page.next {
            list_meta.insert("continue".into(), json!(encode_continue(page.rv, next)));
        }
        let items: Vec<ObjRef> = page
            .items
            .iter()
            .map(|o| shown(rt, &p.version, o, metadata_only))
            .collect();
        if let Some(t) = table {
            return Ok(json_response(
                200,
                &t.render(items.iter().map(|o| o.value()), Value::Object(list_meta)),
            ));
        }
        // Splice the objects' cached JSON instead of re-serialising them.
        let mut out =
            Vec::with_capacity(items.iter().map(|o| o.json().len() + 1).sum::<usize>() + 256);
        let (kind, api_version) = if metadata_only {
            (
                "PartialObjectMetadataList".to_string(),
                meta::PARTIAL_API_VERSION.to_string(),
            )
        } else {
            (format!("{}List", rt.kind), rt.api_version(&p.version))
        };
        let head = format!(
            "{{\"kind\":{},\"apiVersion\":{},\"metadata\":{},\"items\":",
            json!(kind),
            json!(api_version),
            Value::Object(list_meta)
        );
        out.extend_from_slice(head.as_bytes());
        out.push(b'[');
        for (i, o) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(o.json());
        }
        out.extend_from_slice(b"]}");
        Ok(json_bytes(200, Bytes::from(out)))
    }

    fn watch(
        &self,
        rt: &Arc<ResourceType>,
        p: &ResourcePath,
        query: &HashMap<String, String>,
        table: Option<Table>,
        metadata_only: bool,
    ) -> Result<Response, ApiError> {
        let filter = self.filter(rt, p, query)?;
        let from = match query.get("resourceVersion").map(String::as_str) {
            None | Some("") | Some("0") => None,
            Some(rv) => Some(parse_rv(rv)?),
        };
        let timeout = match query.get("timeoutSeconds") {
            Some(t) => {
                Some(Duration::from_secs(t.parse().map_err(|_| {
                    ApiError::bad_request("invalid timeoutSeconds")
                })?))
            }
            None => None,
        };
        let req = WatchRequest {
            rt: rt.clone(),
            version: p.version.clone(),
            filter,
            from,
            bookmarks: flag(query, "allowWatchBookmarks"),
            timeout,
            table,
            metadata_only,
            force_expired: self.faults.take_watch_expiry(&rt.plural),
        };
        let stream = watch::stream(
            &self.objects,
            req,
            self.faults.watch_closer(),
            self.bookmark_interval,
        );
        let mut r = Response::new(Body::from_stream(stream));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        Ok(r)
    }

    /// Answers a SelfSubjectAccessReview or SubjectAccessReview.
    fn review(
        &self,
        rt: &ResourceType,
        mut body: Value,
        requester: &UserInfo,
    ) -> Result<Value, ApiError> {
        let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
        let user = if rt.plural == "subjectaccessreviews" {
            let groups: Vec<String> = spec
                .get("groups")
                .and_then(Value::as_array)
                .map(|g| {
                    g.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            UserInfo {
                name: spec
                    .get("user")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                groups,
            }
        } else {
            requester.clone()
        };
        let allowed = if let Some(res) = spec.get("resourceAttributes") {
            let text = |k: &str| res.get(k).and_then(Value::as_str).unwrap_or("");
            let attrs = Attributes {
                verb: text("verb"),
                group: text("group"),
                resource: text("resource"),
                subresource: text("subresource"),
                namespace: text("namespace"),
                name: text("name"),
            };
            !self.auth.enabled || authz::authorize(&self.objects.store, &user, &attrs)
        } else if spec.get("nonResourceAttributes").is_some() {
            // Discovery and version paths are open to every authenticated user.
            true
        } else {
            return Err(ApiError::invalid(
                &rt.group,
                &rt.kind,
                "",
                vec![(
                    "spec.resourceAttributes".into(),
                    "FieldValueRequired".into(),
                    "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
                )],
            ));
        };
        if let Some(map) = body.as_object_mut() {
            map.insert("apiVersion".into(), json!("authorization.k8s.io/v1"));
            map.insert("kind".into(), json!(rt.kind));
            map.insert("status".into(), json!({"allowed": allowed}));
            map.entry("metadata").or_insert_with(|| json!({}));
        }
        meta::set_meta(&mut body, "creationTimestamp", Value::Null);
        Ok(body)
    }
}

/// Reads a request body of at most [`limits::MAX_REQUEST_BODY`] bytes, as the API server does.
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    use futures::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("request body unreadable: {e}")))?;
        seen = seen.saturating_add(chunk.len());
        if seen <= limits::MAX_REQUEST_BODY {
            buf.extend_from_slice(&chunk);
        } else if seen >= MAX_DRAIN {
            break;
        }
    }
    if seen > limits::MAX_REQUEST_BODY {
        return Err(limits::body_too_large());
    }
    Ok(Bytes::from(buf))
}

async fn read_json(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let bytes = read_body(body).await?;
    if content_type.contains("protobuf") {
        return crate::protobuf::decode_object(&bytes).map_err(|e| {
            ApiError::new(
                415,
                format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({e})"),
            )
        });
    }
    let value = if content_type.contains("yaml") {
        crate::patch::parse_apply_body(&bytes)
            .map_err(|_| ApiError::bad_request("the request body is not valid YAML"))?
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> Option<ResourcePath> {
        match route(path) {
            Route::Resource(p) => Some(p),
            _ => None,
        }
    }

    #[test]
    fn resource_paths() {
        let p = res("/api/v1/namespaces/a/configmaps/b").unwrap();
        assert_eq!(
            (
                p.namespace.as_deref(),
                p.resource.as_str(),
                p.name.as_deref()
            ),
            (Some("a"), "configmaps", Some("b"))
        );
        let p = res("/api/v1/namespaces/a").unwrap();
        assert_eq!(
            (p.namespace, p.resource.as_str(), p.name.as_deref()),
            (None, "namespaces", Some("a"))
        );
        let p = res("/api/v1/namespaces/a/status").unwrap();
        assert_eq!(
            (p.resource.as_str(), p.subresource.as_deref()),
            ("namespaces", Some("status"))
        );
        let p = res("/apis/ringfence.dev/v1alpha1/namespaces/x/configrollouts/y/status").unwrap();
        assert_eq!(p.group, "ringfence.dev");
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let p = res("/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Afoo").unwrap();
        assert_eq!(p.name.as_deref(), Some("system:foo"));
        assert!(res("/api/v1/namespaces/a/configmaps/b/c/d").is_none());
        assert!(matches!(route("/nothing/here"), Route::Unknown));
        assert!(matches!(route("/apis/apps/v1"), Route::GroupVersion(_, _)));
    }

    #[test]
    fn tokens_in_paths() {
        assert_eq!(
            split_token("/_token/abc/api/v1"),
            (Some("abc".into()), "/api/v1".into())
        );
        assert_eq!(split_token("/_token/abc"), (Some("abc".into()), "/".into()));
        assert_eq!(split_token("/api"), (None, "/api".into()));
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("a%3Ab"), "a:b");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%4"), "end%4");
        assert_eq!(percent_decode("%"), "%");
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, &("ns".into(), "n".into()));
        let d = decode_continue(&t).unwrap();
        assert_eq!((d.rv, d.ns.as_str(), d.name.as_str()), (42, "ns", "n"));
        assert!(decode_continue("!!").is_err());
    }
}
