//! Each keyword on a small hand-written schema.

use serde_json::{Value, json};

use super::*;

fn crd(schema: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
            "type": "object",
            "properties": {"spec": schema},
        }}}]},
    })
}

/// Validates `{"spec": value}` against `{"spec": schema}`.
fn run(schema: Value, value: Value) -> (Value, Vec<FieldViolation>) {
    let (object, violations) =
        validate_object(&crd(schema), "v1", &json!({"spec": value})).unwrap();
    (object["spec"].clone(), violations)
}

fn violations(schema: Value, value: Value) -> Vec<(String, String, String)> {
    run(schema, value)
        .1
        .into_iter()
        .map(|v| (v.field, v.reason, v.message))
        .collect()
}

fn one(schema: Value, value: Value) -> (String, String, String) {
    let mut all = violations(schema, value);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

fn ok(schema: Value, value: Value) {
    let all = violations(schema, value);
    assert!(all.is_empty(), "{all:#?}");
}

fn s(field: &str, reason: &str, message: &str) -> (String, String, String) {
    (field.into(), reason.into(), message.into())
}

#[test]
fn type_checks_tell_integer_from_number() {
    let int = json!({"type": "integer"});
    ok(int.clone(), json!(3));
    ok(int.clone(), json!(3.0));
    assert_eq!(
        run(int.clone(), json!(3.0)).0,
        json!(3),
        "an integral float is stored as an integer"
    );
    assert_eq!(
        one(int.clone(), json!(1.5)),
        s(
            "spec",
            reason::TYPE_INVALID,
            "Invalid value: \"number\": must be of type integer"
        )
    );
    assert_eq!(
        one(int, json!("3")).2,
        "Invalid value: \"string\": must be of type integer"
    );
    ok(json!({"type": "number"}), json!(3));
    ok(json!({"type": "number"}), json!(3.5));
    ok(json!({"type": "boolean"}), json!(false));
    assert_eq!(
        one(json!({"type": "boolean"}), json!("yes")).1,
        reason::TYPE_INVALID
    );
    assert_eq!(
        one(json!({"type": "array"}), json!({})).2,
        "Invalid value: \"object\": must be of type array"
    );
    assert_eq!(
        one(json!({"type": "object"}), json!([])).1,
        reason::TYPE_INVALID
    );
    assert_eq!(
        one(json!({"type": "string"}), json!(1)).1,
        reason::TYPE_INVALID
    );
}

#[test]
fn int_or_string() {
    let schema = json!({"x-kubernetes-int-or-string": true, "minimum": 1, "pattern": "^[0-9]+%$"});
    ok(schema.clone(), json!(5));
    ok(schema.clone(), json!("5%"));
    assert_eq!(
        one(schema.clone(), json!(0)).2,
        "Invalid value: 0: should be greater than or equal to 1"
    );
    assert_eq!(
        one(schema.clone(), json!("x")).2,
        "Invalid value: \"x\": should match '^[0-9]+%$'"
    );
    assert_eq!(
        one(schema, json!(true)),
        s(
            "spec",
            reason::TYPE_INVALID,
            "Invalid value: \"boolean\": must be of type integer or string"
        )
    );
    let any_of = json!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]});
    ok(any_of.clone(), json!(1));
    ok(any_of, json!("a"));
}

#[test]
fn preserve_unknown_fields_keeps_anything() {
    let schema = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let (value, v) = run(schema, json!({"a": {"b": [1, null]}}));
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(value, json!({"a": {"b": [1, null]}}));
    ok(
        json!({"x-kubernetes-preserve-unknown-fields": true}),
        json!([1, "a"]),
    );
}

#[test]
fn unknown_fields_are_reported_and_pruned() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let (value, v) = run(schema, json!({"a": "x", "b": 1}));
    assert_eq!(value, json!({"a": "x"}));
    assert_eq!(
        v,
        vec![FieldViolation {
            field: "spec.b".into(),
            reason: reason::FORBIDDEN.into(),
            message: "Forbidden: unknown field \"b\"".into()
        }]
    );
}

#[test]
fn root_resource_fields_are_always_allowed() {
    let crd = crd(json!({"type": "object"}));
    let object = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"}, "spec": {}});
    let (stored, v) = validate_object(&crd, "v1", &object).unwrap();
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(stored, object);
    let (_, v) = validate_object(&crd, "v1", &json!({"kind": 3})).unwrap();
    assert_eq!(v[0].field, "kind");
    assert_eq!(v[0].reason, reason::TYPE_INVALID);
}

#[test]
fn required() {
    let schema = json!({"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "string"}, "b": {"type": "string", "default": "x"}}});
    assert_eq!(
        one(schema.clone(), json!({})),
        s("spec.a", reason::REQUIRED, "Required value")
    );
    ok(schema, json!({"a": ""}));
}

#[test]
fn defaults_apply_recursively_and_replace_null() {
    let schema = json!({"type": "object", "properties": {
        "policy": {"type": "object", "default": {}, "properties": {"automatic": {"type": "boolean", "default": true}}},
        "items": {"type": "array", "items": {"type": "object", "properties": {"w": {"type": "integer", "default": 1}}}},
        "n": {"type": "string", "default": "d"},
        "gone": {"type": "string"},
    }});
    let (value, v) = run(
        schema,
        json!({"items": [{}, {"w": 2}], "n": null, "gone": null}),
    );
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(
        value,
        json!({"policy": {"automatic": true}, "items": [{"w": 1}, {"w": 2}], "n": "d"})
    );
}

#[test]
fn nullable() {
    let schema = json!({"type": "object", "properties": {
        "n": {"type": "string", "nullable": true},
        "list": {"type": "array", "items": {"type": "string"}},
        "nlist": {"type": "array", "items": {"type": "string", "nullable": true}},
    }});
    let (value, v) = run(schema.clone(), json!({"n": null, "nlist": [null]}));
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(value, json!({"n": null, "nlist": [null]}));
    assert_eq!(
        one(schema, json!({"list": ["a", null]})),
        s(
            "spec.list[1]",
            reason::TYPE_INVALID,
            "Invalid value: \"null\": must be of type string"
        )
    );
}

#[test]
fn enums() {
    let schema = json!({"type": "string", "enum": ["ConfigMap", "Secret"]});
    ok(schema.clone(), json!("Secret"));
    assert_eq!(
        one(schema, json!("Foo")),
        s(
            "spec",
            reason::NOT_SUPPORTED,
            "Unsupported value: \"Foo\": supported values: \"ConfigMap\", \"Secret\""
        )
    );
    assert_eq!(
        one(json!({"type": "integer", "enum": [1, 2]}), json!(3)).2,
        "Unsupported value: 3: supported values: \"1\", \"2\""
    );
}

#[test]
fn string_lengths_pattern_and_format() {
    let schema = json!({"type": "string", "minLength": 2, "maxLength": 4, "pattern": "^[a-z]+$"});
    ok(schema.clone(), json!("abc"));
    assert_eq!(
        one(schema.clone(), json!("a")).2,
        "Invalid value: \"a\": should be at least 2 chars long"
    );
    assert_eq!(
        one(schema.clone(), json!("abcde")),
        s(
            "spec",
            reason::TOO_LONG,
            "Too long: may not be more than 4 characters"
        )
    );
    assert_eq!(
        one(schema.clone(), json!("ab1")).2,
        "Invalid value: \"ab1\": should match '^[a-z]+$'"
    );
    ok(json!({"type": "string", "maxLength": 2}), json!("éé"));
    ok(
        json!({"type": "string", "format": "date-time"}),
        json!("2024-05-01T10:00:00Z"),
    );
    assert_eq!(
        one(
            json!({"type": "string", "format": "date-time"}),
            json!("yesterday")
        )
        .2,
        "Invalid value: \"yesterday\": must be of type date-time"
    );
    assert_eq!(
        one(json!({"type": "string", "format": "byte"}), json!("%%")).1,
        reason::INVALID
    );
}

#[test]
fn number_bounds() {
    let schema = json!({"type": "number", "minimum": 0, "maximum": 1});
    ok(schema.clone(), json!(0));
    ok(schema.clone(), json!(1));
    assert_eq!(
        one(schema.clone(), json!(-0.5)).2,
        "Invalid value: -0.5: should be greater than or equal to 0"
    );
    assert_eq!(
        one(schema, json!(2)).2,
        "Invalid value: 2: should be less than or equal to 1"
    );
    let exclusive = json!({"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1, "exclusiveMaximum": true});
    ok(exclusive.clone(), json!(0.5));
    assert_eq!(
        one(exclusive.clone(), json!(0)).2,
        "Invalid value: 0: should be greater than 0"
    );
    assert_eq!(
        one(exclusive, json!(1)).2,
        "Invalid value: 1: should be less than 1"
    );
    assert_eq!(
        one(json!({"type": "integer", "multipleOf": 5}), json!(7)).2,
        "Invalid value: 7: should be a multiple of 5"
    );
}

#[test]
fn item_and_property_counts() {
    let list = json!({"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string"}});
    ok(list.clone(), json!(["a"]));
    assert_eq!(
        one(list.clone(), json!([])).2,
        "Invalid value: \"array\": should have at least 1 items"
    );
    assert_eq!(
        one(list, json!(["a", "b", "c"])),
        s(
            "spec",
            reason::TOO_MANY,
            "Too many: 3: must have at most 2 items"
        )
    );
    let map = json!({"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": {"type": "string"}});
    ok(map.clone(), json!({"a": "b"}));
    assert_eq!(one(map.clone(), json!({})).1, reason::INVALID);
    assert_eq!(
        one(map.clone(), json!({"a": "b", "c": "d"})).1,
        reason::TOO_MANY
    );
    assert_eq!(
        one(map, json!({"a": 1})),
        s(
            "spec[a]",
            reason::TYPE_INVALID,
            "Invalid value: \"integer\": must be of type string"
        )
    );
}

#[test]
fn additional_properties_false_or_absent_means_no_other_fields() {
    let schema = json!({"type": "object", "additionalProperties": false, "properties": {"a": {"type": "string"}}});
    assert_eq!(one(schema, json!({"z": 1})).0, "spec.z");
    ok(
        json!({"type": "object", "additionalProperties": true}),
        json!({"z": 1}),
    );
}

#[test]
fn list_types() {
    let set =
        json!({"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}});
    assert_eq!(
        one(set, json!(["a", "b", "a"])),
        s("spec[2]", reason::DUPLICATE, "Duplicate value: \"a\"")
    );
    let map = json!({"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
        "items": {"type": "object", "properties": {"type": {"type": "string"}, "v": {"type": "integer"}}}});
    ok(
        map.clone(),
        json!([{"type": "A", "v": 1}, {"type": "B", "v": 1}]),
    );
    assert_eq!(
        one(map, json!([{"type": "A", "v": 1}, {"type": "A", "v": 2}])).2,
        "Duplicate value: {\"type\":\"A\"}"
    );
}

#[test]
fn junctors() {
    let any = json!({"type": "string", "anyOf": [{"pattern": "^a"}, {"pattern": "b$"}]});
    ok(any.clone(), json!("axx"));
    ok(any.clone(), json!("xxb"));
    assert_eq!(
        one(any, json!("x")).2,
        "Invalid value: \"x\": must validate at least one schema (anyOf)"
    );
    let one_of = json!({"type": "string", "oneOf": [{"pattern": "^a"}, {"pattern": "b$"}]});
    ok(one_of.clone(), json!("ax"));
    assert_eq!(
        one(one_of, json!("ab")).2,
        "Invalid value: \"ab\": must validate one and only one schema (oneOf)"
    );
    let all = json!({"type": "string", "allOf": [{"minLength": 2}, {"maxLength": 3}]});
    ok(all.clone(), json!("ab"));
    assert_eq!(one(all, json!("abcd")).1, reason::TOO_LONG);
    let not = json!({"type": "string", "not": {"enum": ["forbidden"]}});
    ok(not.clone(), json!("fine"));
    assert_eq!(
        one(not, json!("forbidden")).2,
        "Invalid value: \"forbidden\": must not validate the schema (not)"
    );
}

#[test]
fn cel_rules_run_after_defaults_with_messages_and_field_paths() {
    let schema = json!({
        "type": "object",
        "properties": {
            "bake": {"type": "string", "default": "0s", "x-kubernetes-validations": [
                {"rule": "self.matches('^[0-9]+s$')", "message": "must be a duration such as 30s"}]},
            "kind": {"type": "string"},
            "data": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "x-kubernetes-validations": [
            {"rule": "self.kind != 'Secret' || !has(self.data)", "message": "no inline data", "fieldPath": ".data", "reason": "FieldValueForbidden"},
        ],
    });
    ok(schema.clone(), json!({}));
    assert_eq!(
        one(schema.clone(), json!({"bake": "15"})),
        s(
            "spec.bake",
            reason::INVALID,
            "Invalid value: \"15\": must be a duration such as 30s"
        )
    );
    assert_eq!(
        one(schema, json!({"kind": "Secret", "data": {"a": "b"}})),
        s("spec.data", reason::FORBIDDEN, "Forbidden: no inline data")
    );
}

#[test]
fn null_is_pruned_before_cel_so_has_means_set() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "x-kubernetes-validations": [{"rule": "has(self.a) != has(self.b)", "message": "exactly one of a or b"}]});
    ok(schema.clone(), json!({"a": null, "b": "x"}));
    assert_eq!(
        one(schema, json!({"a": null, "b": null})).2,
        "Invalid value: \"object\": exactly one of a or b"
    );
}

#[test]
fn blocking_errors_skip_cel_and_say_so() {
    let schema = json!({"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"},
        "n": {"type": "integer", "x-kubernetes-validations": [{"rule": "self > 5", "message": "too small"}]}}});
    let all = violations(schema.clone(), json!({"n": 1}));
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0], s("spec.name", reason::REQUIRED, "Required value"));
    assert!(
        all[1]
            .2
            .starts_with("some validation rules were not checked"),
        "{all:#?}"
    );
    assert_eq!(all[1].0, "");
    // A non-blocking structural error (a bound) still lets CEL run.
    let bounded = json!({"type": "object", "properties": {
        "m": {"type": "integer", "minimum": 0},
        "n": {"type": "integer", "x-kubernetes-validations": [{"rule": "self > 5", "message": "too small"}]}}});
    let all = violations(bounded, json!({"m": -1, "n": 1}));
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(
        all[1],
        s("spec.n", reason::INVALID, "Invalid value: 1: too small")
    );
}

#[test]
fn broken_crds_are_refused() {
    let bad_cel = crd(
        json!({"type": "string", "x-kubernetes-validations": [{"rule": "self.matches('\\.')"}]}),
    );
    assert!(
        matches!(CompiledCrd::new(&bad_cel), Err(SchemaError::Cel { path, .. }) if path == "spec"),
        "{:?}",
        CompiledCrd::new(&bad_cel)
    );
    let bad_pattern = crd(json!({"type": "string", "pattern": "("}));
    assert!(matches!(
        CompiledCrd::new(&bad_pattern),
        Err(SchemaError::Pattern { .. })
    ));
    assert!(matches!(
        CompiledCrd::new(&json!({})),
        Err(SchemaError::NotACrd(_))
    ));
    let compiled = CompiledCrd::new(&crd(json!({"type": "object"}))).unwrap();
    assert!(
        matches!(compiled.validate("v2", &json!({})), Err(SchemaError::UnknownVersion(v)) if v == "v2")
    );
    assert_eq!(compiled.versions().collect::<Vec<_>>(), ["v1"]);
}

#[test]
fn a_non_object_is_a_type_error() {
    let (_, v) = validate_object(&crd(json!({"type": "object"})), "v1", &json!("text")).unwrap();
    assert_eq!(
        v,
        vec![FieldViolation {
            field: String::new(),
            reason: reason::TYPE_INVALID.into(),
            message: "Invalid value: \"string\": must be of type object".into(),
        }]
    );
}
