//! Route matching: exact host, then the longest path prefix on segment boundaries.

use std::borrow::Cow;

use foldhash::HashMap;

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
    #[error("path contains an encoded '/' or '\\'")]
    AmbiguousEncoding,
    #[error("path contains a '%' that does not start an escape (expected %XX)")]
    BadEscape,
    #[error("path contains a backslash")]
    Backslash,
    /// NUL, tab and other control characters have no place in a path; Pingora's HTTP/1
    /// parser escapes raw ones, so they arrive as `%00`, `%09`…
    #[error("path contains a control character")]
    ControlCharacter,
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

/// A request path as the gateway matches it and as it forwards it. Both come from one
/// normalization, so the route that matched is the route the backend serves:
/// - percent-encoded unreserved characters are decoded (RFC 3986 §6.2.2.2: `/%62` is `/b`),
///   other escapes are kept with uppercase hex; an encoded `/` or `\` is refused;
/// - `;` path parameters are read the way Tomcat, Jetty and Spring read them: a segment's
///   parameters do not count for matching or for dot segments (`/b;x` matches `/b`,
///   `/a/..;/b` is `/b`), and are forwarded as sent on the segments that remain;
/// - `.` and `..` segments are resolved and repeated slashes merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath<'a> {
    /// What the backend receives.
    pub forward: Cow<'a, str>,
    /// What routes are matched against: `forward` without path parameters.
    pub matching: Cow<'a, str>,
}

/// Normalizes a request path (see [`NormalPath`]). Borrowed, without allocating, when the
/// path is already normal (the common case).
pub fn normalize_path(raw: &str) -> Result<NormalPath<'_>, BadPath> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(BadPath::NotAbsolute);
    }
    if path.contains('\\') {
        return Err(BadPath::Backslash);
    }
    let needs_work = path.contains(['%', ';'])
        || path.contains("//")
        || path.split('/').any(|segment| segment == "." || segment == "..");
    if !needs_work {
        return Ok(NormalPath {
            forward: Cow::Borrowed(path),
            matching: Cow::Borrowed(path),
        });
    }
    let decoded = decode_unreserved(path)?;
    let mut kept: Vec<&str> = Vec::new();
    for segment in decoded.split('/').skip(1) {
        // a segment's parameters do not make it another segment: `..;x` is `..`
        match segment.split(';').next().unwrap_or("") {
            "" if segment.is_empty() => {}
            "." => {}
            ".." => {
                if kept.pop().is_none() {
                    return Err(BadPath::AboveRoot);
                }
            }
            _ => kept.push(segment),
        }
    }
    let trailing = decoded.ends_with('/') || kept.is_empty();
    let join = |segments: &mut dyn Iterator<Item = &str>| {
        let mut out = String::with_capacity(decoded.len());
        for s in segments {
            out.push('/');
            out.push_str(s);
        }
        if trailing || out.is_empty() {
            out.push('/');
        }
        out
    };
    let forward = join(&mut kept.iter().copied());
    let matching = if forward.contains(';') {
        // a segment that is only parameters (`/;x/payments`) is no segment at all, as
        // `//` is none: servlet containers read that path as `/payments`
        let mut bare = kept
            .iter()
            .map(|s| s.split(';').next().unwrap_or(""))
            .filter(|s| !s.is_empty());
        Cow::Owned(join(&mut bare))
    } else {
        Cow::Owned(forward.clone())
    };
    Ok(NormalPath {
        forward: Cow::Owned(forward),
        matching,
    })
}

/// Decodes escapes of unreserved characters, uppercases the hex of the others, refuses an
/// encoded `/` or `\` and a `%` that starts no escape.
fn decode_unreserved(path: &str) -> Result<String, BadPath> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            // the path is a &str: copy whole characters
            let len = path[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&path[i..i + len]);
            i += len;
            continue;
        }
        let hex = |c: u8| (c as char).to_digit(16);
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).and_then(|c| hex(*c)),
            bytes.get(i + 2).and_then(|c| hex(*c)),
        ) else {
            return Err(BadPath::BadEscape);
        };
        let c = (hi * 16 + lo) as u8;
        match c {
            b'/' | b'\\' => return Err(BadPath::AmbiguousEncoding),
            c if c < b' ' || c == 0x7f => return Err(BadPath::ControlCharacter),
            c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => out.push(c as char),
            c => {
                out.push('%');
                out.push_str(&format!("{c:02X}"));
            }
        }
        i += 3;
    }
    Ok(out)
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

    fn forward(raw: &str) -> String {
        normalize_path(raw).unwrap().forward.into_owned()
    }

    fn matching(raw: &str) -> String {
        normalize_path(raw).unwrap().matching.into_owned()
    }

    #[test]
    fn paths_that_could_dodge_a_route_are_normalized_or_refused() {
        assert_eq!(forward("/a/b?q=1"), "/a/b");
        assert_eq!(forward("/public/../payments/x"), "/payments/x");
        assert_eq!(forward("//payments//x/"), "/payments/x/");
        assert_eq!(forward("/./"), "/");
        assert_eq!(normalize_path("/.."), Err(BadPath::AboveRoot));
        assert_eq!(normalize_path("/a%2fb"), Err(BadPath::AmbiguousEncoding));
        assert_eq!(normalize_path("/a%5Cb"), Err(BadPath::AmbiguousEncoding));
        assert_eq!(normalize_path("/a%zzb"), Err(BadPath::BadEscape));
        assert_eq!(normalize_path("/a%4"), Err(BadPath::BadEscape));
        assert_eq!(normalize_path("/a%00b"), Err(BadPath::ControlCharacter));
        assert_eq!(normalize_path("/a%09b"), Err(BadPath::ControlCharacter));
        assert_eq!(normalize_path("/a%7fb"), Err(BadPath::ControlCharacter));
        assert_eq!(forward("/my%20file"), "/my%20file");
        assert_eq!(normalize_path("/a\\b"), Err(BadPath::Backslash));
        assert_eq!(normalize_path("*"), Err(BadPath::NotAbsolute));
        let plain = normalize_path("/plain/path").unwrap();
        assert!(matches!(
            (plain.forward, plain.matching),
            (Cow::Borrowed(_), Cow::Borrowed(_))
        ));
    }

    #[test]
    fn encoded_unreserved_characters_are_decoded_and_other_escapes_kept_in_uppercase() {
        assert_eq!(forward("/%62"), "/b");
        assert_eq!(forward("/%7Euser/%41%2d%5f"), "/~user/A-_");
        assert_eq!(forward("/a/%2e%2e/b"), "/b");
        assert_eq!(normalize_path("/%2e%2e/b"), Err(BadPath::AboveRoot));
        assert_eq!(forward("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(
            forward("/50%25"),
            "/50%25",
            "an encoded '%' stays encoded: no double decoding"
        );
        assert_eq!(
            forward("/x%3bjsessionid"),
            "/x%3Bjsessionid",
            "an encoded ';' is not a parameter"
        );
    }

    #[test]
    fn path_parameters_are_read_as_servlet_containers_read_them() {
        assert_eq!((forward("/b;x"), matching("/b;x")), ("/b;x".into(), "/b".into()));
        assert_eq!(matching("/a/..;/b"), "/b");
        assert_eq!(forward("/a/..;/b"), "/b");
        assert_eq!(matching("/a/.;x/b"), "/a/b");
        assert_eq!(
            (forward("/shop;jsessionid=1/cart"), matching("/shop;jsessionid=1/cart")),
            ("/shop;jsessionid=1/cart".into(), "/shop/cart".into())
        );
        assert_eq!(matching("/;x"), "/");
        assert_eq!(matching("/;x/payments"), "/payments");
        assert_eq!(matching("/payments/;x"), "/payments");
        assert_eq!(normalize_path("/..;/b"), Err(BadPath::AboveRoot));
        let t = table();
        assert_eq!(
            t.lookup("api.example", &matching("/payments;v=1/admin;x/users")),
            Some(2)
        );
        assert_eq!(t.lookup("api.example", &matching("/x/..;/payments")), Some(1));
    }
}
