//! Offline admission: the generic CRD schema validator (shared with the API
//! emulator) and the ConfigRollout manifest checks of `ringfence validate`.

pub mod schema;

pub use schema::{CompiledCrd, FieldViolation, SchemaError, validate_object};
