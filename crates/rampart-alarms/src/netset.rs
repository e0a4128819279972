//! A set of networks matched per flow in time independent of its size: a
//! target list can hold 100 000 CIDRs, and every flow is checked against
//! it. Networks are kept per prefix length, so a lookup is one hash probe
//! per distinct prefix length (at most 33 for IPv4, 129 for IPv6).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use crate::settings::Cidr;

#[derive(Debug, Clone, Default)]
pub struct NetSet {
    /// Per prefix length, longest first: the masked network bits.
    v4: BTreeMap<std::cmp::Reverse<u8>, HashSet<u32>>,
    v6: BTreeMap<std::cmp::Reverse<u8>, HashSet<u128>>,
    len: usize,
}

fn mask_v4(a: u32, prefix: u8) -> u32 {
    a & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(a: u128, prefix: u8) -> u128 {
    a & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl NetSet {
    /// The networks among `entries` (addresses and CIDRs); other entries,
    /// such as domains, are left out and counted in the second value.
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a str>) -> (NetSet, usize) {
        let mut set = NetSet::default();
        let mut other = 0;
        for e in entries {
            match e.parse::<Cidr>() {
                Ok(c) => set.insert(c),
                Err(_) => other += 1,
            }
        }
        (set, other)
    }

    pub fn insert(&mut self, c: Cidr) {
        let fresh = match c.addr() {
            IpAddr::V4(a) => self
                .v4
                .entry(std::cmp::Reverse(c.prefix()))
                .or_default()
                .insert(u32::from(a)),
            IpAddr::V6(a) => self
                .v6
                .entry(std::cmp::Reverse(c.prefix()))
                .or_default()
                .insert(u128::from(a)),
        };
        if fresh {
            self.len += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most specific network holding `ip`.
    pub fn find(&self, ip: IpAddr) -> Option<Cidr> {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().find_map(|(p, nets)| {
                    let n = mask_v4(a, p.0);
                    nets.contains(&n)
                        .then(|| Cidr::new(IpAddr::V4(n.into()), p.0).ok())
                        .flatten()
                })
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().find_map(|(p, nets)| {
                    let n = mask_v6(a, p.0);
                    nets.contains(&n)
                        .then(|| Cidr::new(IpAddr::V6(n.into()), p.0).ok())
                        .flatten()
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected matches follow from the prefixes by hand, and agree with
    /// the linear [`Cidr::contains`] over the same list.
    #[test]
    fn finds_the_most_specific_network_of_either_family() {
        let entries = [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "192.0.2.7",
            "0.0.0.0/0",
            "2001:db8::/32",
            "2001:db8:1::/48",
            "evil.example",
        ];
        let (set, other) = NetSet::from_entries(entries);
        assert_eq!((set.len(), other), (6, 1));
        let cases = [
            ("10.1.2.3", Some("10.1.0.0/16")),
            ("10.2.0.1", Some("10.0.0.0/8")),
            ("192.0.2.7", Some("192.0.2.7/32")),
            ("192.0.2.8", Some("0.0.0.0/0")),
            ("::ffff:10.1.0.9", Some("10.1.0.0/16")),
            ("2001:db8:1::5", Some("2001:db8:1::/48")),
            ("2001:db8:2::5", Some("2001:db8::/32")),
            ("2001:db9::1", None),
        ];
        let nets: Vec<Cidr> = entries.iter().filter_map(|e| e.parse().ok()).collect();
        for (ip, want) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            let got = set.find(ip).map(|c| c.to_string());
            assert_eq!(got.as_deref(), want, "{ip}");
            assert_eq!(got.is_some(), nets.iter().any(|n| n.contains(ip)), "{ip}");
        }
    }
}
