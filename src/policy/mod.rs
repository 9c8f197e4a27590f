//! Policy as plain data and pure decisions: no I/O, no clocks, no locks.

mod allow;
mod decision;
mod identity;
mod mode;
mod owners;
mod reason;
mod refusal_page;
mod routes;
mod snapshot;
mod staging;

pub use allow::{AllowEntry, AllowList};
pub use decision::{decide, ClientEvidence, Decision, MtlsPolicy, Verdict};
pub use identity::{ExtendedKeyUsage, Identity, KeyUsage};
pub use mode::{Mode, UnknownMode};
pub use owners::{owner_of, Owner, OwnerMatch};
pub use reason::Reason;
pub use refusal_page::{PageWords, RefusalPage};
pub use routes::{normalize_host, normalize_path, BadPath, RouteId, RouteTable};
pub use snapshot::{
    bundles_of, ca_names_bytes, AutoRollback, BundleId, CompiledConfig, CrlStale, Listener, Override, OverrideKind,
    Overrides, Route, RouteRuntime, ServerCertificate, ShadowPolicy, SharedSnapshot, Snapshot, TrustBundle, Upstream,
    UpstreamTls, MAX_CA_NAMES_BYTES,
};
pub use staging::{percentile, ExemptClient, Exemption};
