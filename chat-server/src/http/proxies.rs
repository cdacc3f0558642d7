//! The client's address behind trusted reverse proxies.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// An address (`10.0.0.1`, `::1`) or a CIDR block (`10.0.0.0/8`).
pub(crate) fn parse(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Who the client is: the TCP peer, unless the peer is a trusted proxy;
/// then the rightmost `X-Forwarded-For` address that is not a trusted
/// proxy (addresses left of it were written by the client and prove
/// nothing). A header that does not parse leaves the peer.
pub(crate) fn client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        for hop in value.split(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                Err(_) => return peer,
            }
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn rightmost_untrusted_hop_is_the_client() {
        let trusted = vec![
            parse("10.0.0.0/8").expect("cidr"),
            parse("::1").expect("ip"),
        ];
        let proxy: IpAddr = "10.1.2.3".parse().expect("ip");
        let h = headers(&["6.6.6.6, 203.0.113.7", "10.9.9.9"]);
        assert_eq!(
            client(proxy, &h, &trusted),
            "203.0.113.7".parse::<IpAddr>().expect("ip")
        );
        // An untrusted peer's header is ignored.
        let stranger: IpAddr = "198.51.100.1".parse().expect("ip");
        assert_eq!(client(stranger, &h, &trusted), stranger);
        // No header, or one that does not parse: the peer.
        assert_eq!(client(proxy, &HeaderMap::new(), &trusted), proxy);
        assert_eq!(client(proxy, &headers(&["nonsense"]), &trusted), proxy);
        // Only proxies in the chain: the leftmost proxy is as far as it goes.
        assert_eq!(client(proxy, &headers(&["10.0.0.9"]), &trusted), proxy);
    }

    #[test]
    fn parses_addresses_and_blocks() {
        assert!(parse("10.0.0.0/8").is_some());
        assert!(parse("192.168.1.1").is_some());
        assert!(parse("fd00::/8").is_some());
        assert!(parse("not an ip").is_none());
    }
}
