//! Subcommands other than `run` that are worth testing without a process.

pub mod admin_client;
pub mod notify;
pub mod verify;
