//! phasegate: an edge gateway on Pingora that phases in mutual TLS one route at a time.

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod devpki;
pub mod policy;
pub mod proxy;
pub mod server;
pub mod store;
pub mod tls;
pub mod upstream;
