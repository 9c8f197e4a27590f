use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How strictly a route treats client certificates. The rollout order is
/// `off` → `audit` → `soft-fail` → `enforce`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Client certificates are neither requested for this route nor evaluated.
    Off,
    /// Nobody is blocked; every client that would be rejected is recorded with the reason.
    Audit,
    /// Clients without a certificate pass as unauthenticated; a failing certificate is rejected.
    SoftFail,
    /// Only clients whose certificate passes get through.
    Enforce,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Off, Mode::Audit, Mode::SoftFail, Mode::Enforce];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Audit => "audit",
            Mode::SoftFail => "soft-fail",
            Mode::Enforce => "enforce",
        }
    }

    /// Whether a connection that may reach a route in this mode should be asked for a
    /// client certificate during the handshake.
    pub fn wants_client_cert(self) -> bool {
        self != Mode::Off
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text of an unknown mode, quoted back in the error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a mode (expected off, audit, soft-fail or enforce)")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_through_their_names() {
        for mode in Mode::ALL {
            assert_eq!(mode.as_str().parse::<Mode>(), Ok(mode));
        }
        assert!("softfail".parse::<Mode>().is_err());
    }
}
