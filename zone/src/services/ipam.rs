//! Virtual IPs for MeshServices, MeshExternalServices and MeshMultiZoneServices: one pool per
//! CIDR (Kuma's `ipam.*.cidr`), seeded from the VIPs already in the resources' status, so a
//! restart or a new leader never hands out a VIP that is live.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("{cidr:?} is not an IPv4 CIDR (a.b.c.d/n): {reason}")]
    Cidr { cidr: String, reason: &'static str },
    #[error("every address of {cidr} is allocated")]
    Exhausted { cidr: String },
}

/// A pool of addresses inside one CIDR. The network and broadcast addresses are never given
/// out; allocation takes the lowest free address after the last one given, so a VIP freed a
/// moment ago is not reused while proxies may still hold it.
#[derive(Debug, Clone)]
pub struct Pool {
    cidr: String,
    first: u32,
    last: u32,
    taken: BTreeSet<u32>,
    next: u32,
}

impl Pool {
    pub fn new(cidr: &str) -> Result<Pool, IpamError> {
        let bad = |reason| IpamError::Cidr {
            cidr: cidr.to_string(),
            reason,
        };
        let (addr, len) = cidr
            .split_once('/')
            .ok_or_else(|| bad("no /prefix length"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let len: u32 = len
            .parse()
            .map_err(|_| bad("prefix length is not a number"))?;
        if !(1..=30).contains(&len) {
            return Err(bad("prefix length must be between 1 and 30"));
        }
        let mask = u32::MAX << (32 - len);
        let network = u32::from(addr) & mask;
        let broadcast = network | !mask;
        Ok(Pool {
            cidr: cidr.to_string(),
            first: network + 1,
            last: broadcast - 1,
            taken: BTreeSet::new(),
            next: network + 1,
        })
    }

    pub fn cidr(&self) -> &str {
        &self.cidr
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(ip))
    }

    /// Marks a VIP found in a stored status as in use; `false` when it is outside the pool
    /// (another CIDR configured earlier) and so not tracked.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        if !self.contains(ip) {
            return false;
        }
        self.taken.insert(u32::from(ip));
        true
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.taken.remove(&u32::from(ip));
    }

    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        let free_from = |from: u32, to: u32, taken: &BTreeSet<u32>| {
            if from > to {
                return None;
            }
            let mut candidate = from;
            for &t in taken.range(from..=to) {
                if t != candidate {
                    break;
                }
                candidate += 1;
            }
            (candidate <= to).then_some(candidate)
        };
        let found = free_from(self.next, self.last, &self.taken)
            .or_else(|| free_from(self.first, self.next.saturating_sub(1), &self.taken))
            .ok_or_else(|| IpamError::Exhausted {
                cidr: self.cidr.clone(),
            })?;
        self.taken.insert(found);
        self.next = if found == self.last {
            self.first
        } else {
            found + 1
        };
        Ok(Ipv4Addr::from(found))
    }

    pub fn in_use(&self) -> usize {
        self.taken.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn allocates_in_order_skipping_reserved_and_the_network_address() {
        let mut pool = Pool::new("241.0.0.0/8").unwrap();
        assert!(pool.reserve("241.0.0.2".parse().unwrap()));
        assert!(!pool.reserve("10.0.0.1".parse().unwrap()));
        assert_eq!(
            pool.allocate().unwrap(),
            "241.0.0.1".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(
            pool.allocate().unwrap(),
            "241.0.0.3".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(pool.in_use(), 3);
    }

    #[test]
    fn a_released_vip_is_reused_only_after_the_pool_wraps() {
        let mut pool = Pool::new("10.0.0.0/29").unwrap(); // .1 to .6
        let first = pool.allocate().unwrap();
        pool.release(first);
        let next: Vec<Ipv4Addr> = (0..6).map(|_| pool.allocate().unwrap()).collect();
        assert_eq!(next[0], "10.0.0.2".parse::<Ipv4Addr>().unwrap());
        assert_eq!(next[5], first, "wrapped around to the freed one last");
        assert_eq!(
            pool.allocate(),
            Err(IpamError::Exhausted {
                cidr: "10.0.0.0/29".into()
            })
        );
    }

    #[test]
    fn bad_cidrs_say_why() {
        for (cidr, why) in [
            ("241.0.0.0", "no /prefix length"),
            ("241.0.0/8", "not an IPv4 address"),
            ("241.0.0.0/x", "prefix length is not a number"),
            ("241.0.0.0/31", "prefix length must be between 1 and 30"),
        ] {
            match Pool::new(cidr) {
                Err(IpamError::Cidr { reason, .. }) => assert_eq!(reason, why, "{cidr}"),
                other => panic!("{cidr}: {other:?}"),
            }
        }
    }
}
