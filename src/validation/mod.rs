//! Offline admission: the generic CRD schema validator (shared with the API
//! emulator) and the ConfigRollout manifest checks of `ringfence validate`.

pub mod admission;
pub mod manifest;
pub mod schema;
pub mod selector;

pub use admission::admission_hook;
pub use manifest::{DocumentReport, ManifestValidator, ParseError};
pub use schema::{CompiledCrd, FieldViolation, SchemaError, validate_object};
