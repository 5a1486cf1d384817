//! Offline admission: the generic CRD schema validator (shared with the API
//! emulator), the ConfigRollout manifest checks of `ringfence validate`, and the
//! checks of the configuration data shared with the engine.

pub mod admission;
pub mod data;
pub mod manifest;
pub mod schema;
pub mod selector;

pub use admission::admission_hook;
pub use manifest::{DocumentReport, ManifestValidator, ParseError};
pub use schema::{CompiledCrd, FieldViolation, SchemaError, validate_object};
