//! Route matching: exact host, then the longest path prefix on segment boundaries.

use std::borrow::Cow;
use std::collections::HashMap;

/// Index of a route in its snapshot.
pub type RouteId = usize;

#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    hosts: HashMap<Box<str>, HashMap<Box<str>, RouteId>>,
}

/// Why a request path was refused before routing (400 `bad_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    #[error("path does not start with '/'")]
    NotAbsolute,
    #[error("path contains an encoded '/', '\\' or '.'")]
    AmbiguousEncoding,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path climbs above the root with '..'")]
    AboveRoot,
}

impl RouteTable {
    /// Adds a route; returns the route already holding this match, if any.
    pub fn insert(&mut self, host: &str, path_prefix: &str, id: RouteId) -> Result<(), RouteId> {
        let prefixes = self.hosts.entry(normalize_host(host).into()).or_default();
        match prefixes.entry(prefix_key(path_prefix).into()) {
            std::collections::hash_map::Entry::Occupied(e) => Err(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(id);
                Ok(())
            }
        }
    }

    /// `host` must already be normalized (see [`normalize_host`]) and `path` normalized
    /// (see [`normalize_path`]). Walks from the full path up to the root, one segment at a
    /// time, so the cost is a few hash lookups whatever the number of routes.
    pub fn lookup(&self, host: &str, path: &str) -> Option<RouteId> {
        let prefixes = self.hosts.get(host)?;
        let mut candidate = path.strip_suffix('/').unwrap_or(path);
        loop {
            if let Some(id) = prefixes.get(candidate) {
                return Some(*id);
            }
            if candidate.is_empty() {
                return None;
            }
            candidate = &candidate[..candidate.rfind('/').unwrap_or(0)];
        }
    }

    pub fn has_host(&self, host: &str) -> bool {
        self.hosts.contains_key(host)
    }

    pub fn routes_of_host(&self, host: &str) -> impl Iterator<Item = RouteId> + '_ {
        self.hosts.get(host).into_iter().flat_map(|m| m.values().copied())
    }

    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.keys().map(|h| &**h)
    }
}

/// `/payments/` and `/payments` are the same prefix; `/` is the empty key.
fn prefix_key(prefix: &str) -> &str {
    prefix.strip_suffix('/').unwrap_or(prefix)
}

/// Lowercases and drops a port. Borrowed when already normal (the common case).
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The path used both for matching and upstream: dot segments resolved, repeated slashes
/// merged. Encodings that different servers decode differently are refused, so the route
/// that matched is the route the backend serves.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, BadPath> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(BadPath::NotAbsolute);
    }
    if path.contains('\\') {
        return Err(BadPath::Backslash);
    }
    if contains_ambiguous_escape(path) {
        return Err(BadPath::AmbiguousEncoding);
    }
    let needs_work = path.contains("//") || path.split('/').any(|segment| segment == "." || segment == "..");
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/').skip(1) {
        match segment {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(BadPath::AboveRoot);
                }
            }
            s => out.push(s),
        }
    }
    let mut normal = String::with_capacity(path.len());
    for s in &out {
        normal.push('/');
        normal.push_str(s);
    }
    if normal.is_empty() || path.ends_with('/') {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

fn contains_ambiguous_escape(path: &str) -> bool {
    path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1].to_ascii_uppercase(), w[2].to_ascii_uppercase()),
                (b'2', b'F') | (b'5', b'C') | (b'2', b'E')
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let mut t = RouteTable::default();
        t.insert("api.example", "/", 0).unwrap();
        t.insert("api.example", "/payments", 1).unwrap();
        t.insert("api.example", "/payments/admin/", 2).unwrap();
        t.insert("Other.Example", "/x", 3).unwrap();
        t
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let t = table();
        assert_eq!(t.lookup("api.example", "/payments/admin/users"), Some(2));
        assert_eq!(t.lookup("api.example", "/payments/admin"), Some(2));
        assert_eq!(t.lookup("api.example", "/payments/x"), Some(1));
        assert_eq!(t.lookup("api.example", "/payments"), Some(1));
        assert_eq!(t.lookup("api.example", "/paymentsfoo"), Some(0));
        assert_eq!(t.lookup("api.example", "/"), Some(0));
        assert_eq!(t.lookup("other.example", "/y"), None);
        assert_eq!(t.lookup("other.example", "/x/y"), Some(3));
        assert_eq!(t.lookup("unknown.example", "/"), None);
    }

    #[test]
    fn the_same_match_twice_is_refused() {
        let mut t = table();
        assert_eq!(t.insert("API.example", "/payments/", 9), Err(1));
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("API.Example:8443"), "api.example");
        assert_eq!(normalize_host("api.example."), "api.example");
        assert_eq!(normalize_host("[::1]:8443"), "::1");
        assert!(matches!(normalize_host("api.example"), Cow::Borrowed(_)));
    }

    #[test]
    fn paths_that_could_dodge_a_route_are_normalized_or_refused() {
        assert_eq!(normalize_path("/a/b?q=1").unwrap(), "/a/b");
        assert_eq!(normalize_path("/public/../payments/x").unwrap(), "/payments/x");
        assert_eq!(normalize_path("//payments//x/").unwrap(), "/payments/x/");
        assert_eq!(normalize_path("/./").unwrap(), "/");
        assert_eq!(normalize_path("/.."), Err(BadPath::AboveRoot));
        assert_eq!(normalize_path("/a%2fb"), Err(BadPath::AmbiguousEncoding));
        assert_eq!(normalize_path("/%2e%2e/x"), Err(BadPath::AmbiguousEncoding));
        assert_eq!(normalize_path("/a\\b"), Err(BadPath::Backslash));
        assert_eq!(normalize_path("*"), Err(BadPath::NotAbsolute));
        assert!(matches!(normalize_path("/plain/path"), Ok(Cow::Borrowed(_))));
    }
}
