//! Failed authentications counted per source address, so that guessing
//! keys from one address is stopped after a few tries. Pure: the caller
//! passes the time in, and [`FailedAuthGuard`](super::auth_guard::FailedAuthGuard)
//! does the HTTP side.
//!
//! Each source has a fixed window that opens with its first failure. Once
//! `max_failures` fail within it, the source is refused until the window
//! closes, whatever it presents: a good key from a refused address is
//! refused too, since telling it apart would mean checking the key, which
//! is what the refusal spares the database and what a guesser wants done.
//! A success counts nothing and clears nothing: otherwise one valid key
//! would let its holder guess others without limit.
//!
//! Memory is bounded: at most `max_sources` sources are tracked. Windows
//! all last as long, so the one opened first closes first; a queue in
//! opening order finds closed windows at its front and, when the table is
//! full of open ones, the oldest one to forget. An attacker with more
//! addresses than the bound can push a refused source out early: the
//! bound trades that for a table that cannot grow without end.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedAuthLimits {
    /// Failures within one window after which the source is refused.
    pub max_failures: u32,
    pub window: Duration,
    /// How many sources are tracked at most.
    pub max_sources: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    opened: Instant,
    failures: u32,
}

#[derive(Debug)]
pub struct FailedAuthLimiter {
    limits: FailedAuthLimits,
    windows: HashMap<IpAddr, Window>,
    /// Every tracked source with the opening time of its window, oldest
    /// first; an entry whose time differs from its source's window is left
    /// from a window that closed and has been skipped.
    opened: VecDeque<(IpAddr, Instant)>,
}

/// The address a source is counted under. An IPv6 client usually holds a
/// whole /64, so its addresses count as one; an IPv4 address mapped into
/// IPv6 counts as the IPv4 address.
pub fn source_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                ))
            }
        },
    }
}

impl FailedAuthLimiter {
    pub fn new(limits: FailedAuthLimits) -> FailedAuthLimiter {
        debug_assert!(limits.max_failures > 0 && limits.max_sources > 0, "{limits:?}");
        FailedAuthLimiter {
            limits,
            windows: HashMap::new(),
            opened: VecDeque::new(),
        }
    }

    /// `Err(how long until it may try again)` while `source` is refused.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let Some(window) = self.windows.get(&source) else {
            return Ok(());
        };
        let closes = window.opened + self.limits.window;
        if window.failures >= self.limits.max_failures && now < closes {
            return Err(closes - now);
        }
        Ok(())
    }

    /// Counts a failed authentication from `source`; true when this one
    /// makes the source refused.
    pub fn record_failure(&mut self, source: IpAddr, now: Instant) -> bool {
        self.forget_closed(now);
        if let Some(window) = self.windows.get_mut(&source) {
            window.failures = window.failures.saturating_add(1);
            return window.failures == self.limits.max_failures;
        }
        while self.windows.len() >= self.limits.max_sources {
            let Some((oldest, opened)) = self.opened.pop_front() else {
                break;
            };
            if self.windows.get(&oldest).is_some_and(|window| window.opened == opened) {
                self.windows.remove(&oldest);
            }
        }
        self.windows.insert(
            source,
            Window {
                opened: now,
                failures: 1,
            },
        );
        self.opened.push_back((source, now));
        self.limits.max_failures == 1
    }

    /// How many sources are tracked.
    pub fn tracked(&self) -> usize {
        self.windows.len()
    }

    fn forget_closed(&mut self, now: Instant) {
        while let Some(&(source, opened)) = self.opened.front() {
            if now < opened + self.limits.window {
                break;
            }
            self.opened.pop_front();
            if self.windows.get(&source).is_some_and(|window| window.opened == opened) {
                self.windows.remove(&source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    fn limiter(max_failures: u32, max_sources: usize) -> FailedAuthLimiter {
        FailedAuthLimiter::new(FailedAuthLimits {
            max_failures,
            window: WINDOW,
            max_sources,
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn a_source_is_refused_after_max_failures_until_its_window_closes() {
        let start = Instant::now();
        let mut limiter = limiter(3, 100);
        assert!(!limiter.record_failure(ip(1), start));
        assert!(!limiter.record_failure(ip(1), start + Duration::from_secs(10)));
        assert_eq!(limiter.check(ip(1), start + Duration::from_secs(10)), Ok(()));
        assert!(
            limiter.record_failure(ip(1), start + Duration::from_secs(20)),
            "the third failure refuses"
        );
        assert_eq!(
            limiter.check(ip(1), start + Duration::from_secs(20)),
            Err(Duration::from_secs(40)),
            "refused until the window that opened with the first failure closes"
        );
        assert_eq!(
            limiter.check(ip(2), start + Duration::from_secs(20)),
            Ok(()),
            "others are not"
        );
        assert_eq!(
            limiter.check(ip(1), start + Duration::from_secs(59)),
            Err(Duration::from_secs(1))
        );
        assert_eq!(limiter.check(ip(1), start + WINDOW), Ok(()));
    }

    #[test]
    fn a_closed_window_starts_the_count_again() {
        let start = Instant::now();
        let mut limiter = limiter(2, 100);
        limiter.record_failure(ip(1), start);
        // one failure per window never adds up to two
        for minute in 1..5 {
            assert!(!limiter.record_failure(ip(1), start + WINDOW * minute));
            assert_eq!(limiter.check(ip(1), start + WINDOW * minute), Ok(()));
        }
        assert!(limiter.record_failure(ip(1), start + WINDOW * 4 + Duration::from_secs(1)));
        assert!(limiter
            .check(ip(1), start + WINDOW * 4 + Duration::from_secs(1))
            .is_err());
    }

    #[test]
    fn failures_past_the_limit_do_not_extend_the_refusal() {
        let start = Instant::now();
        let mut limiter = limiter(1, 100);
        assert!(limiter.record_failure(ip(1), start), "a limit of one refuses at once");
        assert!(
            !limiter.record_failure(ip(1), start + Duration::from_secs(30)),
            "reported once"
        );
        assert_eq!(
            limiter.check(ip(1), start + Duration::from_secs(30)),
            Err(Duration::from_secs(30))
        );
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest_window_first() {
        let start = Instant::now();
        let mut limiter = limiter(1, 3);
        for n in 0..3 {
            limiter.record_failure(ip(n), start + Duration::from_secs(u64::from(n)));
        }
        assert_eq!(limiter.tracked(), 3);
        limiter.record_failure(ip(9), start + Duration::from_secs(5));
        assert_eq!(limiter.tracked(), 3, "the bound holds");
        assert_eq!(
            limiter.check(ip(0), start + Duration::from_secs(5)),
            Ok(()),
            "the oldest was forgotten"
        );
        for n in [1, 2, 9] {
            assert!(limiter.check(ip(n), start + Duration::from_secs(5)).is_err(), "{n}");
        }
        // closed windows go before any open one is pushed out
        let later = start + WINDOW + Duration::from_secs(3);
        limiter.record_failure(ip(20), later);
        assert_eq!(limiter.tracked(), 2, "1 and 2 closed, 9 and 20 remain");
        assert!(limiter.check(ip(9), later).is_err());
    }

    #[test]
    fn a_reopened_window_is_not_forgotten_for_its_closed_one() {
        let start = Instant::now();
        let mut limiter = limiter(2, 2);
        limiter.record_failure(ip(1), start);
        let reopened = start + WINDOW;
        limiter.record_failure(ip(1), reopened);
        limiter.record_failure(ip(1), reopened);
        limiter.record_failure(ip(2), reopened + Duration::from_secs(1));
        assert_eq!(limiter.tracked(), 2);
        assert!(
            limiter.check(ip(1), reopened + Duration::from_secs(1)).is_err(),
            "the entry of the closed window must not remove the open one"
        );
    }

    #[test]
    fn an_ipv6_client_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(other));
        assert_eq!(
            source_of(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped())),
            ip(7)
        );
        assert_eq!(source_of(ip(7)), ip(7));
        assert_eq!(
            source_of(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            "::1 is the /64 ::"
        );
    }
}
