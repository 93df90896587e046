//! Which side of a pair dials, and whether messages carry a CRC
//! (docs/protocol.md#transport-dial-rule, docs/protocol.md#crc-when).

use xxhash_rust::xxh3::xxh3_64;

/// Whether `local` must dial `remote` (Go's rule; exactly one of the two
/// nodes concludes it must).
pub fn should_dial(local: &str, remote: &str) -> bool {
    let mut lr = Vec::with_capacity(local.len() + remote.len());
    lr.extend_from_slice(local.as_bytes());
    lr.extend_from_slice(remote.as_bytes());
    let h_lr = xxh3_64(&lr);
    lr.clear();
    lr.extend_from_slice(remote.as_bytes());
    lr.extend_from_slice(local.as_bytes());
    let h_rl = xxh3_64(&lr);
    if h_lr == h_rl {
        local < remote
    } else {
        h_lr < h_rl
    }
}

fn is_tls(host: &str) -> bool {
    host.starts_with("https://") || host.starts_with("wss://")
}

/// Whether messages on this pair carry `FlagCRCxxh3`: Go leaves it off only
/// when both host strings are TLS URLs.
pub fn crc_enabled(local: &str, remote: &str) -> bool {
    !(is_tls(local) && is_tls(remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_rule_matches_the_spec_examples() {
        assert!(should_dial(
            "http://127.0.0.1:9001",
            "http://127.0.0.1:9000"
        ));
        assert!(!should_dial(
            "http://127.0.0.1:9000",
            "http://127.0.0.1:9001"
        ));
        assert!(should_dial("b", "a"));
        assert!(!should_dial("a", "b"));
        // The transcripts' recorder (the dialer) and its peer.
        assert!(should_dial(
            "http://127.0.0.1:19002",
            "http://127.0.0.1:19001"
        ));
    }

    #[test]
    fn crc_is_off_only_between_tls_hosts() {
        assert!(crc_enabled("http://a", "http://b"));
        assert!(crc_enabled("https://a", "http://b"));
        assert!(!crc_enabled("https://a", "https://b"));
        assert!(!crc_enabled("wss://a", "https://b"));
    }
}
