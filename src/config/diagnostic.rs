use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in the policy files, located as precisely as the input allows.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is not tied to a line (e.g. an unreadable directory).
    pub line: usize,
    pub column: usize,
    /// YAML path such as `routes[2].mtls.allow[0]`; empty for the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, " {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found; a config with any of them is not applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Diagnostics(vec![Diagnostic {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            path: String::new(),
            message: message.into(),
        }])
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
