//! Why a spec cannot be acted on, shared by every check that can refuse one.

/// Why the spec cannot be acted on: becomes `Valid=False` with this reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invalid {
    /// CamelCase condition reason.
    pub reason: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(reason: &'static str, message: String) -> Self {
        Self { reason, message }
    }
}
