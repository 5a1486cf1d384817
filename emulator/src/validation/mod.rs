//! What kube-apiserver checks of any custom resource and selector, as plain
//! functions: the emulator admits custom resources through them, and an
//! operator's offline validation can apply the very same rules.

pub mod admission;
pub mod schema;
pub mod selector;

pub use admission::admission_hook;
pub use schema::{CompiledCrd, FieldViolation, SchemaError, reason, validate_object};
