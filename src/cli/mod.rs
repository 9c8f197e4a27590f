//! Subcommands other than `run` that are worth testing without a process.

pub mod verify;
