//! Policy files: read → parse → validate → compile. The result is either a complete
//! [`CompiledConfig`](crate::policy::CompiledConfig) or every problem found.

mod compile;
mod diagnostic;
mod limits;
mod positions;
mod raw;

use std::path::Path;

pub use compile::{compile, policy_files, read_dir, SourceFile};
pub use diagnostic::{Diagnostic, Diagnostics};

use crate::policy::CompiledConfig;

/// Loads a policy directory as one configuration.
pub fn load(dir: &Path) -> Result<CompiledConfig, Diagnostics> {
    compile(&read_dir(dir)?)
}
