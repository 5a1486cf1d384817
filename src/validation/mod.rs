//! Offline admission of ConfigRollout manifests (`ringfence validate`, the
//! plugin's `plan`): kube-apiserver's own CRD schema and CEL rules (from the
//! emulator crate, the same code that admits custom resources there), the
//! checks only the controller would otherwise make, and the checks of the
//! configuration data shared with the engine.

pub mod data;
pub mod manifest;

pub use manifest::{DocumentReport, ManifestValidator, ParseError};
