//! `ringfence validate -f FILE... [--source FILE...]`: offline checks of ConfigRollout
//! manifests and of the configuration they carry.
//!
//! Prints one line per problem, `FILE: NAME: FIELD: problem`, and exits with 0
//! when every manifest is valid, 1 when any has a problem, and 2 when a file
//! cannot be read or parsed (the other files are still checked).

use std::fmt::Write as _;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use super::command::{CommandError, Run};
use crate::validation::ManifestValidator;
use crate::validation::manifest::parse_documents;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Manifest files (YAML, several `---` documents each); `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,

    /// ConfigMap and Secret manifests that `sourceRef` and `validationRef` name, so their
    /// data and rules are checked too.
    #[arg(long = "source", value_name = "FILE", num_args = 1..)]
    pub sources: Vec<PathBuf>,
}

impl Run for ValidateArgs {
    fn run(self) -> Result<ExitCode, CommandError> {
        let sources = self.files.iter().map(|path| {
            if path.as_os_str() == "-" {
                let mut text = String::new();
                (
                    "<stdin>".to_string(),
                    io::stdin().read_to_string(&mut text).map(|_| text),
                )
            } else {
                (path.display().to_string(), std::fs::read_to_string(path))
            }
        });
        let mut objects = Vec::new();
        for path in &self.sources {
            let parsed = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|text| {
                    parse_documents(&text).map_err(|e| format!("invalid YAML at {e}"))
                });
            match parsed {
                Ok(documents) => objects.extend(documents),
                Err(why) => {
                    eprintln!("{}: {why}", path.display());
                    return Ok(ExitCode::from(Outcome::Unreadable.code()));
                }
            }
        }
        let validator = ManifestValidator::new()?.with_sources(objects);
        let report = validate_sources(&validator, sources);
        crate::stdout::print(&report.stdout)?;
        if !report.stderr.is_empty() {
            eprint!("{}", report.stderr);
        }
        Ok(ExitCode::from(report.outcome.code()))
    }
}

/// How a `validate` run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every manifest is valid.
    Valid,
    /// At least one problem in a manifest.
    Problems,
    /// A file could not be read or parsed.
    Unreadable,
}

impl Outcome {
    /// The process exit code: 0, 1 or 2.
    pub fn code(self) -> u8 {
        match self {
            Self::Valid => 0,
            Self::Problems => 1,
            Self::Unreadable => 2,
        }
    }
}

/// The output of a `validate` run, before it is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub outcome: Outcome,
    pub stdout: String,
    pub stderr: String,
}

/// Checks every source: `(label, text or read error)`.
pub fn validate_sources(
    validator: &ManifestValidator,
    sources: impl IntoIterator<Item = (String, io::Result<String>)>,
) -> Report {
    let mut stdout = String::new();
    let mut stderr = String::new();
    let (mut manifests, mut invalid, mut problems, mut unreadable) =
        (0usize, 0usize, 0usize, false);
    for (label, text) in sources {
        let text = match text {
            Ok(text) => text,
            Err(error) => {
                unreadable = true;
                let _ = writeln!(stderr, "{label}: cannot read: {error}");
                continue;
            }
        };
        let reports = match validator.check_text(&text) {
            Ok(reports) => reports,
            Err(error) => {
                unreadable = true;
                let _ = writeln!(stderr, "{label}: invalid YAML at {error}");
                continue;
            }
        };
        if reports.is_empty() {
            problems += 1;
            let _ = writeln!(stdout, "{label}: no manifest in this file");
        }
        for report in reports {
            manifests += 1;
            if !report.violations.is_empty() {
                invalid += 1;
            }
            for violation in report.violations {
                problems += 1;
                let field = if violation.field.is_empty() {
                    "(object)"
                } else {
                    &violation.field
                };
                let _ = writeln!(
                    stdout,
                    "{label}: {}: {field}: {}",
                    report.name, violation.message
                );
            }
        }
    }
    let outcome = if unreadable {
        Outcome::Unreadable
    } else if problems > 0 {
        Outcome::Problems
    } else {
        Outcome::Valid
    };
    match outcome {
        Outcome::Valid => {
            let _ = writeln!(
                stdout,
                "{manifests} {} valid",
                plural(manifests, "manifest")
            );
        }
        _ if problems > 0 => {
            let _ = writeln!(
                stderr,
                "{problems} {} in {invalid} of {manifests} {}",
                plural(problems, "problem"),
                plural(manifests, "manifest")
            );
        }
        _ => {}
    }
    Report {
        outcome,
        stdout,
        stderr,
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}
