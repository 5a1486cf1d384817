//! Decoding of the few protobuf request bodies kubectl sends.
//!
//! kubectl's typed clients (`auth can-i`, `create namespace|configmap|secret|serviceaccount`)
//! send `application/vnd.kubernetes.protobuf`. Responses can stay JSON
//! (those clients accept it), so only requests of these kinds are decoded,
//! into the JSON the rest of the emulator works with. Other kinds get 415.

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// The envelope's magic prefix.
const MAGIC: &[u8] = b"k8s\x00";

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bytes,
    Int,
    Bool,
    Msg(&'static [Field]),
    StrMap,
    BytesMap,
    Strs,
    Msgs(&'static [Field]),
}

struct Field {
    num: u64,
    name: &'static str,
    kind: Kind,
}

const fn f(num: u64, name: &'static str, kind: Kind) -> Field {
    Field { num, name, kind }
}

const OWNER_REFERENCE: &[Field] = &[
    f(1, "kind", Kind::Str),
    f(3, "name", Kind::Str),
    f(4, "uid", Kind::Str),
    f(5, "apiVersion", Kind::Str),
    f(6, "controller", Kind::Bool),
    f(7, "blockOwnerDeletion", Kind::Bool),
];

const OBJECT_META: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "generateName", Kind::Str),
    f(3, "namespace", Kind::Str),
    f(5, "uid", Kind::Str),
    f(6, "resourceVersion", Kind::Str),
    f(7, "generation", Kind::Int),
    f(11, "labels", Kind::StrMap),
    f(12, "annotations", Kind::StrMap),
    f(13, "ownerReferences", Kind::Msgs(OWNER_REFERENCE)),
    f(14, "finalizers", Kind::Strs),
];

const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "data", Kind::StrMap),
    f(3, "binaryData", Kind::BytesMap),
    f(4, "immutable", Kind::Bool),
];

const SECRET: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "data", Kind::BytesMap),
    f(3, "type", Kind::Str),
    f(4, "stringData", Kind::StrMap),
    f(5, "immutable", Kind::Bool),
];

const NAMESPACE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(&[f(1, "finalizers", Kind::Strs)])),
];

const SERVICE_ACCOUNT: &[Field] = &[f(1, "metadata", Kind::Msg(OBJECT_META))];

const RESOURCE_ATTRIBUTES: &[Field] = &[
    f(1, "namespace", Kind::Str),
    f(2, "verb", Kind::Str),
    f(3, "group", Kind::Str),
    f(4, "version", Kind::Str),
    f(5, "resource", Kind::Str),
    f(6, "subresource", Kind::Str),
    f(7, "name", Kind::Str),
];

const NON_RESOURCE_ATTRIBUTES: &[Field] = &[f(1, "path", Kind::Str), f(2, "verb", Kind::Str)];

const REVIEW_SPEC: &[Field] = &[
    f(1, "resourceAttributes", Kind::Msg(RESOURCE_ATTRIBUTES)),
    f(
        2,
        "nonResourceAttributes",
        Kind::Msg(NON_RESOURCE_ATTRIBUTES),
    ),
    f(3, "user", Kind::Str),
    f(4, "groups", Kind::Strs),
    f(6, "uid", Kind::Str),
];

const REVIEW: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(REVIEW_SPEC)),
];

const TYPE_META: &[Field] = &[f(1, "apiVersion", Kind::Str), f(2, "kind", Kind::Str)];

const UNKNOWN: &[Field] = &[
    f(1, "typeMeta", Kind::Msg(TYPE_META)),
    f(2, "raw", Kind::Bytes),
];

fn schema_for(kind: &str) -> Option<&'static [Field]> {
    match kind {
        "ConfigMap" => Some(CONFIG_MAP),
        "Secret" => Some(SECRET),
        "Namespace" => Some(NAMESPACE),
        "ServiceAccount" => Some(SERVICE_ACCOUNT),
        "SelfSubjectAccessReview" | "SubjectAccessReview" => Some(REVIEW),
        _ => None,
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(out);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(len)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    fn skip(&mut self, wire: u64) -> Option<()> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => (self.pos + 8 <= self.buf.len()).then(|| self.pos += 8),
            2 => self.bytes().map(|_| ()),
            5 => (self.pos + 4 <= self.buf.len()).then(|| self.pos += 4),
            _ => None,
        }
    }
}

fn text(b: &[u8]) -> Option<Value> {
    std::str::from_utf8(b).ok().map(|s| json!(s))
}

fn map_entry(b: &[u8], bytes_value: bool) -> Option<(String, Value)> {
    let mut r = Reader { buf: b, pos: 0 };
    let (mut key, mut value) = (String::new(), json!(""));
    while r.pos < b.len() {
        let tag = r.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 2) => key = std::str::from_utf8(r.bytes()?).ok()?.to_string(),
            (2, 2) if bytes_value => {
                value = json!(base64::engine::general_purpose::STANDARD.encode(r.bytes()?))
            }
            (2, 2) => value = text(r.bytes()?)?,
            (_, wire) => r.skip(wire)?,
        }
    }
    Some((key, value))
}

fn decode(buf: &[u8], schema: &[Field]) -> Option<Map<String, Value>> {
    let mut r = Reader { buf, pos: 0 };
    let mut out = Map::new();
    while r.pos < buf.len() {
        let tag = r.varint()?;
        let (num, wire) = (tag >> 3, tag & 7);
        let Some(field) = schema.iter().find(|f| f.num == num) else {
            r.skip(wire)?;
            continue;
        };
        let name = field.name.to_string();
        match (field.kind, wire) {
            // Zero values are how protobuf encodes unset fields: leave them out.
            (Kind::Int, 0) => {
                let v = r.varint()?;
                if v != 0 {
                    out.insert(name, json!(v as i64));
                }
            }
            (Kind::Bool, 0) => {
                if r.varint()? != 0 {
                    out.insert(name, json!(true));
                }
            }
            (Kind::Str, 2) => {
                let b = r.bytes()?;
                if !b.is_empty() {
                    out.insert(name, text(b)?);
                }
            }
            (Kind::Bytes, 2) => {
                out.insert(
                    name,
                    json!(base64::engine::general_purpose::STANDARD.encode(r.bytes()?)),
                );
            }
            (Kind::Msg(s), 2) => {
                out.insert(name, Value::Object(decode(r.bytes()?, s)?));
            }
            (Kind::StrMap | Kind::BytesMap, 2) => {
                let (k, v) = map_entry(r.bytes()?, matches!(field.kind, Kind::BytesMap))?;
                if let Value::Object(m) = out.entry(name).or_insert_with(|| json!({})) {
                    m.insert(k, v);
                }
            }
            (Kind::Strs, 2) => {
                let item = text(r.bytes()?)?;
                if let Value::Array(a) = out.entry(name).or_insert_with(|| json!([])) {
                    a.push(item);
                }
            }
            (Kind::Msgs(s), 2) => {
                let item = Value::Object(decode(r.bytes()?, s)?);
                if let Value::Array(a) = out.entry(name).or_insert_with(|| json!([])) {
                    a.push(item);
                }
            }
            (_, wire) => r.skip(wire)?,
        }
    }
    Some(out)
}

/// Decodes a protobuf request body of a supported kind into JSON.
pub(crate) fn decode_object(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("protobuf body lacks the k8s envelope")?;
    let unknown = decode(envelope, UNKNOWN).ok_or("malformed protobuf envelope")?;
    let type_meta = unknown
        .get("typeMeta")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let kind = type_meta.get("kind").and_then(Value::as_str).unwrap_or("");
    let schema =
        schema_for(kind).ok_or_else(|| format!("protobuf is not supported for kind {kind:?}"))?;
    let raw = unknown
        .get("raw")
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default();
    let mut obj = decode(&raw, schema).ok_or("malformed protobuf object")?;
    obj.insert("kind".into(), json!(kind));
    if let Some(av) = type_meta.get("apiVersion") {
        obj.insert("apiVersion".into(), av.clone());
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_self_subject_access_review() {
        let attrs = [field(1, b"ns"), field(2, b"list"), field(5, b"configmaps")].concat();
        let spec = field(1, &attrs);
        let raw = field(2, &spec);
        let type_meta = [
            field(1, b"authorization.k8s.io/v1"),
            field(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let unknown = [field(1, &type_meta), field(2, &raw)].concat();
        let body = [MAGIC, &unknown].concat();
        let v = decode_object(&body).unwrap();
        assert_eq!(v["kind"], "SelfSubjectAccessReview");
        assert_eq!(v["spec"]["resourceAttributes"]["verb"], "list");
        assert_eq!(v["spec"]["resourceAttributes"]["namespace"], "ns");
    }

    #[test]
    fn decodes_maps_and_rejects_garbage() {
        let meta = field(1, &field(1, b"cm"));
        let entry = [field(1, b"k"), field(2, b"v")].concat();
        let raw = [meta, field(2, &entry)].concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC, &[field(1, &type_meta), field(2, &raw)].concat()].concat();
        let v = decode_object(&body).unwrap();
        assert_eq!(v["metadata"]["name"], "cm");
        assert_eq!(v["data"]["k"], "v");
        assert!(decode_object(b"k8s\x00\xff\xff\xff").is_err());
        assert!(decode_object(b"nope").is_err());
        let pod = [field(1, b"v1"), field(2, b"Pod")].concat();
        assert!(decode_object(&[MAGIC, &field(1, &pod)].concat()).is_err());
    }
}
