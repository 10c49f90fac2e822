//! Which TLS handshakes an agent keeps pending when more connections arrive than it lets wait.
//!
//! Handshakes in progress are bounded (a flood of idle or half-open connections must neither
//! exhaust file descriptors nor memory), so a new connection beyond the bound evicts a pending
//! one. Evicting simply the oldest let anyone who can reach the port evict a registered party's
//! handshake: about 5,500 strangers per second (partial ClientHello, then reset) failed 2 % of
//! the sessions at join (issue 20, item 5). The agent cannot tell who a connection is before its
//! handshake, only where it comes from, so connections are told apart by source address:
//!
//! - **registered**: from the IP address of a registered peer's endpoint, or from an address a
//!   registered peer authenticated from recently ([`LearnedAddresses`]: a peer behind NAT or
//!   with a host-name endpoint);
//! - **stranger**: any other.
//!
//! Strangers may hold at most [`STRANGER_SLOTS`] of the pending handshakes, the rest is reserved
//! for registered addresses; a new stranger beyond its share evicts the oldest pending stranger,
//! never a registered address's handshake. A registered address's connection takes any free slot
//! and, when all are taken, evicts the oldest stranger first (the oldest registered one only when
//! no stranger is pending). Someone who shares a registered party's address (a NAT, the same
//! host) is not told apart by this; the certificate check after the handshake still is.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

use crate::transport::mesh::MAX_PENDING_HANDSHAKES;

/// Pending handshakes that strangers may hold at once (half the stranger budget of a
/// negotiation's listener; the other half goes to registered addresses).
pub const STRANGER_SLOTS: usize = MAX_PENDING_HANDSHAKES / 2;

/// Where a new connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A registered peer's address.
    Registered,
    /// Any other address.
    Stranger,
}

/// What became of a handshake that was pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Where it came from.
    pub origin: Origin,
    /// Its remote address.
    pub addr: SocketAddr,
}

/// What to do with a new connection ([`PendingHandshakes::make_room`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// A slot is free (perhaps after evicting `Some` pending handshake): start its handshake.
    Admit(Option<Evicted>),
    /// Every slot is held by registered addresses and the connection is a stranger's: drop it.
    Refuse,
}

struct Pending {
    addr: SocketAddr,
    handle: AbortHandle,
}

/// The pending handshakes of an agent, by origin, oldest first.
#[derive(Default)]
pub struct PendingHandshakes {
    registered: VecDeque<Pending>,
    strangers: VecDeque<Pending>,
}

impl PendingHandshakes {
    /// Frees a slot for a new connection from `origin` when `cap` handshakes may be pending in
    /// all, evicting (aborting) one pending handshake if needed (see the module documentation).
    pub fn make_room(&mut self, origin: Origin, cap: usize) -> Room {
        self.forget_finished();
        let full = self.registered.len() + self.strangers.len() >= cap;
        let victim = match origin {
            Origin::Stranger if self.strangers.len() >= STRANGER_SLOTS || full => {
                match self.strangers.pop_front() {
                    Some(p) => (Origin::Stranger, p),
                    None => return Room::Refuse,
                }
            }
            Origin::Registered if full => match self.strangers.pop_front() {
                Some(p) => (Origin::Stranger, p),
                None => match self.registered.pop_front() {
                    Some(p) => (Origin::Registered, p),
                    None => return Room::Admit(None),
                },
            },
            _ => return Room::Admit(None),
        };
        let (origin, pending) = victim;
        pending.handle.abort();
        Room::Admit(Some(Evicted {
            origin,
            addr: pending.addr,
        }))
    }

    /// Records the handshake just started for a connection from `addr` admitted by
    /// [`PendingHandshakes::make_room`].
    pub fn push(&mut self, origin: Origin, addr: SocketAddr, handle: AbortHandle) {
        let queue = match origin {
            Origin::Registered => &mut self.registered,
            Origin::Stranger => &mut self.strangers,
        };
        queue.push_back(Pending { addr, handle });
    }

    fn forget_finished(&mut self) {
        self.registered.retain(|p| !p.handle.is_finished());
        self.strangers.retain(|p| !p.handle.is_finished());
    }
}

/// How long an address a registered peer authenticated from counts as registered.
pub const LEARNED_ADDRESS_TTL: Duration = Duration::from_secs(3600);

/// Addresses remembered at most (the oldest is forgotten first).
pub const MAX_LEARNED_ADDRESSES: usize = 1024;

/// Addresses that registered peers authenticated from recently: a peer whose endpoint is a host
/// name, or whose connections leave from another address than its endpoint's (NAT, several
/// interfaces), counts as registered from its first successful handshake on.
#[derive(Default)]
pub struct LearnedAddresses {
    seen: HashMap<IpAddr, Instant>,
}

impl LearnedAddresses {
    /// Remembers that a registered peer authenticated from `ip` at `now`.
    pub fn learn(&mut self, ip: IpAddr, now: Instant) {
        let ip = canonical(ip);
        if self.seen.len() >= MAX_LEARNED_ADDRESSES && !self.seen.contains_key(&ip) {
            self.seen
                .retain(|_, at| now.saturating_duration_since(*at) < LEARNED_ADDRESS_TTL);
            if self.seen.len() >= MAX_LEARNED_ADDRESSES {
                if let Some(oldest) = self
                    .seen
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(ip, _)| *ip)
                {
                    self.seen.remove(&oldest);
                }
            }
        }
        self.seen.insert(ip, now);
    }

    /// Whether a registered peer authenticated from `ip` less than [`LEARNED_ADDRESS_TTL`] before
    /// `now`.
    pub fn knows(&self, ip: IpAddr, now: Instant) -> bool {
        self.seen
            .get(&canonical(ip))
            .is_some_and(|at| now.saturating_duration_since(*at) < LEARNED_ADDRESS_TTL)
    }
}

/// `ip` as endpoints write it: an IPv4 address accepted on a dual-stack socket arrives as
/// `::ffff:a.b.c.d`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1000 + i))
    }

    /// A pending handshake that never ends by itself.
    fn handshake(rt: &tokio::runtime::Runtime) -> AbortHandle {
        rt.spawn(std::future::pending::<()>()).abort_handle()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn strangers_evict_only_strangers_and_only_beyond_their_share() {
        let rt = runtime();
        let mut p = PendingHandshakes::default();
        let cap = STRANGER_SLOTS + 10;
        let researcher = handshake(&rt);
        assert_eq!(p.make_room(Origin::Registered, cap), Room::Admit(None));
        p.push(Origin::Registered, addr(0), researcher.clone());
        for i in 1..=STRANGER_SLOTS as u16 {
            assert_eq!(p.make_room(Origin::Stranger, cap), Room::Admit(None));
            p.push(Origin::Stranger, addr(i), handshake(&rt));
        }
        // Every further stranger evicts the oldest stranger, however many come.
        for i in 0..1000u16 {
            let room = p.make_room(Origin::Stranger, cap);
            let Room::Admit(Some(evicted)) = room else {
                panic!("{room:?}")
            };
            assert_eq!(evicted.origin, Origin::Stranger);
            assert_ne!(evicted.addr, addr(0));
            p.push(Origin::Stranger, addr(2000 + i), handshake(&rt));
        }
        assert_eq!(p.strangers.len(), STRANGER_SLOTS);
        assert_eq!(p.registered.len(), 1);
        rt.block_on(tokio::task::yield_now());
        assert!(
            !researcher.is_finished(),
            "the researcher's handshake was aborted"
        );
    }

    #[test]
    fn a_registered_address_evicts_the_oldest_stranger_first_then_the_oldest_registered() {
        let rt = runtime();
        let mut p = PendingHandshakes::default();
        let cap = 4;
        // Two strangers and two registered addresses fill a cap of 4.
        for i in 0..2 {
            assert_eq!(p.make_room(Origin::Stranger, cap), Room::Admit(None));
            p.push(Origin::Stranger, addr(i), handshake(&rt));
        }
        for i in 10..12 {
            assert_eq!(p.make_room(Origin::Registered, cap), Room::Admit(None));
            p.push(Origin::Registered, addr(i), handshake(&rt));
        }
        for (i, expected) in [(20, addr(0)), (21, addr(1)), (22, addr(10)), (23, addr(11))] {
            let Room::Admit(Some(evicted)) = p.make_room(Origin::Registered, cap) else {
                panic!("nothing evicted")
            };
            assert_eq!(evicted.addr, expected);
            p.push(Origin::Registered, addr(i), handshake(&rt));
        }
        // Full of registered addresses: a stranger is refused, nobody evicted.
        assert_eq!(p.make_room(Origin::Stranger, cap), Room::Refuse);
        assert_eq!(p.registered.len(), 4);
    }

    #[test]
    fn finished_handshakes_free_their_slot() {
        let rt = runtime();
        let mut p = PendingHandshakes::default();
        for i in 0..STRANGER_SLOTS as u16 {
            let done = rt.spawn(async {});
            let handle = done.abort_handle();
            rt.block_on(done).unwrap();
            assert_eq!(p.make_room(Origin::Stranger, 100), Room::Admit(None));
            p.push(Origin::Stranger, addr(i), handle);
        }
        assert_eq!(p.make_room(Origin::Stranger, 100), Room::Admit(None));
    }

    #[test]
    fn learned_addresses_expire_and_stay_bounded() {
        let mut l = LearnedAddresses::default();
        let t0 = Instant::now();
        let v4: IpAddr = "10.0.0.7".parse().unwrap();
        l.learn("::ffff:10.0.0.7".parse().unwrap(), t0);
        assert!(l.knows(v4, t0));
        assert!(!l.knows(v4, t0 + LEARNED_ADDRESS_TTL));
        for i in 0..(MAX_LEARNED_ADDRESSES as u32 + 10) {
            l.learn(IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i)), t0);
        }
        assert!(l.seen.len() <= MAX_LEARNED_ADDRESSES);
    }
}
