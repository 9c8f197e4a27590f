//! Bounds on what a policy file may be before the YAML parser builds anything from it:
//! nesting depth and aliases, checked in one linear pass that stops at the first excess.
//! A file far deeper than any configuration would otherwise keep the reload (and anything
//! queued behind it) busy for minutes.

use yaml_rust2::parser::{Event, Parser};

/// Deeper than any policy file needs (about 8 levels); far below where parsing slows.
pub const MAX_DEPTH: usize = 64;
/// Anchors and merges reused this often are a configuration no one can read; an alias
/// bomb (each alias doubling the document) stops here.
pub const MAX_ALIASES: usize = 1000;

/// Where a file goes past a bound, and which.
#[derive(Debug, PartialEq, Eq)]
pub struct Excess {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Checks `text` against the bounds; a syntax error is left for the real parser to report.
pub fn check(text: &str) -> Result<(), Excess> {
    let mut parser = Parser::new_from_str(text);
    let (mut depth, mut aliases) = (0usize, 0usize);
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(next) => next,
            // yaml-rust2 stops flow nesting past 255 levels before it yields them
            Err(e) if e.info().contains("recursion limit") => {
                return Err(Excess {
                    line: e.marker().line(),
                    column: e.marker().col() + 1,
                    message: format!("nesting deeper than {MAX_DEPTH} levels (a policy file needs about 8)"),
                })
            }
            // a syntax error is the real parser's to report, with its own words
            Err(_) => return Ok(()),
        };
        let excess = |message: String| Excess {
            line: mark.line(),
            column: mark.col() + 1,
            message,
        };
        match event {
            Event::StreamEnd => return Ok(()),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(excess(format!(
                        "nesting deeper than {MAX_DEPTH} levels (a policy file needs about 8)"
                    )));
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            Event::Alias(_) => {
                aliases += 1;
                if aliases > MAX_ALIASES {
                    return Err(excess(format!("more than {MAX_ALIASES} aliases (*name)")));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_and_alias_floods_stop_early_with_a_position() {
        assert_eq!(check("routes:\n  - name: a\n    match: { host: x }\n"), Ok(()));
        let deep = format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let e = check(&deep).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "stops early");
        assert_eq!((e.line, e.message.contains("deeper than 64")), (1, true), "{e:?}");
        for deep in [
            format!("a:\n{}x", "- ".repeat(1_000_000)),
            (0..2000)
                .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
                .collect::<String>(),
        ] {
            let started = std::time::Instant::now();
            assert!(check(&deep).unwrap_err().message.contains("deeper"));
            assert!(started.elapsed() < std::time::Duration::from_secs(2), "stops early");
        }
        let mut bomb = String::from("base: &b [x]\n");
        for i in 0..1100 {
            bomb.push_str(&format!("k{i}: *b\n"));
        }
        assert!(check(&bomb).unwrap_err().message.contains("aliases"));
        // a syntax error is the parser's to report
        assert_eq!(check("a: [unclosed"), Ok(()));
    }
}
