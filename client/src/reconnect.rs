//! When a client that lost its server tries again (docs/DESIGN.md "Checkpoint and
//! resume"): the policy as an I/O-free value, the QUIC shell only sleeps and dials.
//!
//! A lost connection (the server crashed, was killed or restarts with `--resume`) starts
//! an *outage*. The shell asks [`Backoff::next_delay`] before every new connection
//! attempt of the outage: the pauses grow geometrically from
//! [`ReconnectPolicy::initial_delay`] (×2 each time) up to
//! [`ReconnectPolicy::max_delay`], and the client gives up once the outage has lasted
//! [`ReconnectPolicy::give_up_after`] or [`ReconnectPolicy::max_attempts`] attempts
//! were made. A registration that succeeds ends the outage ([`Backoff::reset`]).

use std::time::{Duration, Instant};

/// How long and how often a client tries to get its server back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Pause before the first attempt of an outage.
    pub initial_delay: Duration,
    /// Longest pause between two attempts.
    pub max_delay: Duration,
    /// Give up once an outage has lasted this long (`Duration::ZERO`: never reconnect).
    pub give_up_after: Duration,
    /// Give up after this many attempts in one outage (`None`: no limit but the time).
    pub max_attempts: Option<u32>,
}

impl ReconnectPolicy {
    /// Never reconnect: the first lost connection ends the run.
    pub const NEVER: Self = Self {
        initial_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        give_up_after: Duration::ZERO,
        max_attempts: Some(0),
    };

    /// Reconnect for up to `give_up_after`, pausing 250 ms, then 500 ms, … up to 5 s.
    pub fn for_up_to(give_up_after: Duration) -> Self {
        Self {
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
            give_up_after,
            max_attempts: None,
        }
    }
}

/// The state of one client's reconnections under a [`ReconnectPolicy`].
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: ReconnectPolicy,
    outage: Option<(Instant, u32)>,
}

impl Backoff {
    /// No outage yet.
    pub fn new(policy: ReconnectPolicy) -> Self {
        Self {
            policy,
            outage: None,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &ReconnectPolicy {
        &self.policy
    }

    /// The connection was lost (or an attempt failed) at `now`: the pause before the next
    /// attempt, or `None` to give up. The first call of an outage starts its clock.
    pub fn next_delay(&mut self, now: Instant) -> Option<Duration> {
        let (since, attempts) = *self.outage.get_or_insert((now, 0));
        if now.saturating_duration_since(since) >= self.policy.give_up_after {
            return None;
        }
        if self.policy.max_attempts.is_some_and(|m| attempts >= m) {
            return None;
        }
        let factor = 1u32.checked_shl(attempts.min(31)).unwrap_or(u32::MAX);
        let delay = self
            .policy
            .initial_delay
            .saturating_mul(factor)
            .min(self.policy.max_delay);
        self.outage = Some((since, attempts + 1));
        Some(delay)
    }

    /// Attempts made in the current outage (0 when connected).
    pub fn attempts(&self) -> u32 {
        self.outage.map_or(0, |(_, a)| a)
    }

    /// When the current outage gives up at the latest (`None` when connected).
    pub fn deadline(&self) -> Option<Instant> {
        self.outage
            .map(|(since, _)| since + self.policy.give_up_after)
    }

    /// The client registered again: the outage is over.
    pub fn reset(&mut self) {
        self.outage = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_the_outage_gives_up_in_time() {
        let t0 = Instant::now();
        let mut b = Backoff::new(ReconnectPolicy::for_up_to(Duration::from_secs(30)));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay(t0).unwrap()).collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 4000, 5000]);
        assert_eq!(b.attempts(), 6);
        assert_eq!(b.deadline(), Some(t0 + Duration::from_secs(30)));
        assert!(b.next_delay(t0 + Duration::from_secs(29)).is_some());
        assert_eq!(b.next_delay(t0 + Duration::from_secs(30)), None);
        // A registration ends the outage: the next one starts from the beginning.
        b.reset();
        assert_eq!(b.attempts(), 0);
        let t1 = t0 + Duration::from_secs(100);
        assert_eq!(b.next_delay(t1), Some(Duration::from_millis(250)));
        assert_eq!(b.deadline(), Some(t1 + Duration::from_secs(30)));
    }

    #[test]
    fn attempt_limits_and_never() {
        let t0 = Instant::now();
        let mut b = Backoff::new(ReconnectPolicy {
            max_attempts: Some(2),
            ..ReconnectPolicy::for_up_to(Duration::from_secs(3600))
        });
        assert!(b.next_delay(t0).is_some());
        assert!(b.next_delay(t0).is_some());
        assert_eq!(b.next_delay(t0), None);
        let mut never = Backoff::new(ReconnectPolicy::NEVER);
        assert_eq!(never.next_delay(t0), None);
    }
}
