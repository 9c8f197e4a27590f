//! The shared harness: a test PKI, a real gateway on free ports, echo backends and a TLS
//! client with full control over certificates, SNI, ALPN and resumption.
#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod chains;
pub mod client;
pub mod gateway;
pub mod pki;
pub mod postgres;
pub mod process;

pub use client::{Client, ClientOptions, Reply};
pub use gateway::{free_port, wait_for_port, TestGateway, ADMIN_TOKEN};
pub use pki::{ClientKind, TestPki};
pub use process::{echo_backend, GatewayProcess};
