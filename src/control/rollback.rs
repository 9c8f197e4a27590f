//! Where a rollback goes. Pure: the control plane supplies the route's mode history.

use serde::Serialize;

use crate::policy::Mode;

/// One change of a route's effective mode, from a reload or an override.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModeChange {
    pub at: i64,
    pub from: Mode,
    pub to: Mode,
}

/// Whether a rollback from `running` to `to` would tighten the route.
pub fn tightens(running: Mode, to: Mode) -> bool {
    strictness(to) > strictness(running)
}

fn strictness(mode: Mode) -> u8 {
    match mode {
        Mode::Off => 0,
        Mode::Audit => 1,
        Mode::SoftFail => 2,
        Mode::Enforce => 3,
    }
}

/// The mode a rollback switches to: the mode the route had before its most recent
/// tightening. A rollback only ever loosens, so pressing it twice never re-enforces.
/// Without such history the target is `audit` (or the current mode if that is looser).
pub fn rollback_target(current: Mode, changes: &[ModeChange]) -> Mode {
    changes
        .iter()
        .rev()
        .find(|c| c.to == current && strictness(c.from) < strictness(current))
        .map(|c| c.from)
        .unwrap_or(if strictness(current) > strictness(Mode::Audit) {
            Mode::Audit
        } else {
            current
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(from: Mode, to: Mode) -> ModeChange {
        ModeChange { at: 0, from, to }
    }

    #[test]
    fn rollback_returns_to_the_mode_before_the_last_tightening() {
        let history = [
            change(Mode::Audit, Mode::SoftFail),
            change(Mode::SoftFail, Mode::Enforce),
        ];
        assert_eq!(rollback_target(Mode::Enforce, &history), Mode::SoftFail);
    }

    #[test]
    fn rolling_back_twice_never_tightens_again() {
        let mut history = vec![change(Mode::Audit, Mode::Enforce)];
        let first = rollback_target(Mode::Enforce, &history);
        assert_eq!(first, Mode::Audit);
        history.push(change(Mode::Enforce, Mode::Audit));
        assert_eq!(rollback_target(Mode::Audit, &history), Mode::Audit);
    }

    #[test]
    fn without_history_rollback_goes_to_audit() {
        assert_eq!(rollback_target(Mode::Enforce, &[]), Mode::Audit);
        assert_eq!(rollback_target(Mode::SoftFail, &[]), Mode::Audit);
        assert_eq!(rollback_target(Mode::Off, &[]), Mode::Off);
    }
}
