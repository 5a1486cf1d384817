//! Errors as Kubernetes `Status` objects, with the messages the real API server uses.

use serde_json::{Value, json};

/// A failed request, rendered as a `v1` `Status` body with the HTTP code.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// `plural` for the core group, `plural.group` otherwise, as in error messages.
pub(crate) fn group_resource(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// The `reason` the API server pairs with an HTTP code.
pub(crate) fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

impl ApiError {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason_for_code(code),
            message: message.into(),
            details: None,
        }
    }

    pub fn with_target(mut self, group: &str, kind: &str, name: &str) -> Self {
        let details = self.details.get_or_insert_with(|| json!({}));
        details["group"] = json!(group);
        details["kind"] = json!(kind);
        if !name.is_empty() {
            details["name"] = json!(name);
        }
        self
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let gr = group_resource(group, plural);
        ApiError::new(404, format!("{gr} \"{name}\" not found")).with_target(group, plural, name)
    }

    pub fn namespace_not_found(namespace: &str) -> Self {
        ApiError::not_found("", "namespaces", namespace)
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let gr = group_resource(group, plural);
        ApiError::new(409, format!("{gr} \"{name}\" already exists"))
            .with_reason("AlreadyExists")
            .with_target(group, plural, name)
    }

    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let gr = group_resource(group, plural);
        ApiError::new(
            409,
            format!("Operation cannot be fulfilled on {gr} \"{name}\": {why}"),
        )
        .with_target(group, plural, name)
    }

    pub fn stale(group: &str, plural: &str, name: &str) -> Self {
        ApiError::conflict(
            group,
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// A 429 asking the client to wait `seconds`, as priority and fairness
    /// answers; the response carries them as `Retry-After` too.
    pub fn too_many_requests(seconds: u32) -> Self {
        let mut err = ApiError::new(429, "Too many requests, please try again later.");
        err.details = Some(json!({"retryAfterSeconds": seconds}));
        err
    }

    /// `details.retryAfterSeconds`, when the client is told to wait.
    pub fn retry_after(&self) -> Option<u64> {
        self.details
            .as_ref()?
            .get("retryAfterSeconds")?
            .as_u64()
            .filter(|s| *s > 0)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        ApiError::new(410, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, message)
    }

    /// The answer for a path that names nothing the server knows.
    pub fn unknown_path() -> Self {
        ApiError::new(404, "the server could not find the requested resource")
    }

    pub fn method_not_supported(group: &str, plural: &str, verb: &str) -> Self {
        let gr = group_resource(group, plural);
        ApiError::new(
            405,
            format!("{verb} is not supported on resources of kind \"{gr}\""),
        )
        .with_reason("MethodNotAllowed")
        .with_target(group, plural, "")
    }

    pub fn forbidden(group: &str, plural: &str, name: &str, message: String) -> Self {
        ApiError::new(403, message).with_target(group, plural, name)
    }

    /// A 422 whose `details.causes` carry one entry per field error.
    pub fn invalid(
        group: &str,
        kind: &str,
        name: &str,
        causes: Vec<(String, String, String)>,
    ) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let rendered: Vec<String> = causes
            .iter()
            .map(|(field, _, message)| {
                if field.is_empty() {
                    message.clone()
                } else {
                    format!("{field}: {message}")
                }
            })
            .collect();
        let list = match rendered.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let mut err = ApiError::new(422, format!("{qualified} \"{name}\" is invalid: {list}"))
            .with_target(group, kind, name);
        if let Some(details) = err.details.as_mut() {
            details["causes"] = causes
                .into_iter()
                .map(|(field, reason, message)| json!({"reason": reason, "message": message, "field": field}))
                .collect();
        }
        err
    }

    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }

    pub fn with_causes(mut self, causes: Vec<Value>) -> Self {
        let details = self.details.get_or_insert_with(|| json!({}));
        details["causes"] = Value::Array(causes);
        self
    }

    pub fn to_value(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_lists_causes_like_the_api_server() {
        let one = ApiError::invalid(
            "ringfence.dev",
            "ConfigRollout",
            "x",
            vec![(
                "spec.rings".into(),
                "FieldValueRequired".into(),
                "Required value".into(),
            )],
        );
        assert_eq!(
            one.message,
            "ConfigRollout.ringfence.dev \"x\" is invalid: spec.rings: Required value"
        );
        let two = ApiError::invalid(
            "",
            "ConfigMap",
            "y",
            vec![
                (
                    "a".into(),
                    "FieldValueRequired".into(),
                    "Required value".into(),
                ),
                (
                    "b".into(),
                    "FieldValueInvalid".into(),
                    "Invalid value: 1: bad".into(),
                ),
            ],
        );
        assert_eq!(
            two.message,
            "ConfigMap \"y\" is invalid: [a: Required value, b: Invalid value: 1: bad]"
        );
        assert_eq!(two.to_value()["details"]["causes"][1]["field"], "b");
    }
}
