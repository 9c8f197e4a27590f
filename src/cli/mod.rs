//! Subcommands other than `run` that are worth testing without a process.

pub mod admin_client;
pub mod invocation;
pub mod notify;
pub mod readiness;
pub mod rollback;
pub mod verify;
