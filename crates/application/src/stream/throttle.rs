//! Broadcast throttling: how many event frames per second this node sends to the
//! connections of one tenant, and of one user, whatever the runs they watch produce.
//!
//! Each tenant and each user (of a tenant) has a token bucket per node, shared by its
//! connections ([`BroadcastThrottle::connection`]), refilled at its rate and holding at
//! most one second of it. A connection's writer takes one token from both buckets per event
//! frame, for a whole batch of frames at once ([`ConnectionThrottle::try_take`]); when either
//! is empty it waits the time the answer names. An event is queued throttled (its `step.delta` merges into the delta it
//! continues, whatever the queue's length) when the queue already holds as many frames as
//! the buckets can send now ([`ConnectionThrottle::available`]): so a burst beyond the rate
//! becomes a few merged deltas rather than a backlog of small ones in front of the run's
//! lifecycle events, which are therefore held back about one window of the rate at most.
//! Nothing is dropped; a client that still falls too far behind is closed with 1013 as any
//! slow consumer. Acks, pongs and errors are never throttled.
//!
//! Rates come from [`ThrottlePolicy`]: a default, and per tenant plan an override. A
//! bucket takes the rates of the connection that made it: a tenant whose plan changes gets
//! the new rates once all its connections on the node have closed.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use sba_domain::{TenantId, UserId};

/// Event frames per second, for a tenant and for each of its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRates {
    pub tenant_per_second: NonZeroU32,
    pub user_per_second: NonZeroU32,
}

/// The rates of each tenant: its plan's, or the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottlePolicy {
    pub default: ThrottleRates,
    pub plans: HashMap<String, ThrottleRates>,
}

impl ThrottlePolicy {
    /// The rates of a tenant on `plan` (the default without a plan or for an unknown one).
    pub fn rates_for(&self, plan: Option<&str>) -> ThrottleRates {
        plan.and_then(|plan| self.plans.get(plan)).copied().unwrap_or(self.default)
    }
}

/// The buckets of one node, by tenant and by user; an entry lives as long as a connection
/// holds it.
#[derive(Debug)]
pub struct BroadcastThrottle {
    policy: ThrottlePolicy,
    tenants: Buckets<TenantId>,
    users: Buckets<(TenantId, UserId)>,
}

impl BroadcastThrottle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self { policy, tenants: Buckets::default(), users: Buckets::default() }
    }

    /// The throttle of a new connection of `user` of `tenant`, whose tenant is on `plan`.
    pub fn connection(&self, tenant: TenantId, user: &UserId, plan: Option<&str>) -> ConnectionThrottle {
        let rates = self.policy.rates_for(plan);
        ConnectionThrottle {
            tenant: self.tenants.get_or_make(tenant, rates.tenant_per_second),
            user: self.users.get_or_make((tenant, user.clone()), rates.user_per_second),
        }
    }
}

/// The buckets one connection draws from: its tenant's and its user's.
#[derive(Debug, Clone)]
pub struct ConnectionThrottle {
    tenant: Arc<Bucket>,
    user: Arc<Bucket>,
}

impl ConnectionThrottle {
    /// Takes one event frame's token from both buckets at `now` ([`Self::try_take`] of
    /// one; the tests' way to spend tokens one by one).
    ///
    /// # Errors
    /// The wait, when the tenant or the user is over its rate.
    #[cfg(test)]
    fn try_send(&self, now: Instant) -> Result<(), Duration> {
        self.try_take(now, 1).map(drop)
    }

    /// Takes the tokens of up to `wanted` event frames from both buckets at `now`, in one
    /// visit to the shared buckets (a connection's writer asks once per batch of frames):
    /// how many it took, at least one; when either bucket cannot give one, takes nothing
    /// and says how long until both can.
    ///
    /// # Errors
    /// The wait, when the tenant or the user is over its rate.
    pub fn try_take(&self, now: Instant, wanted: usize) -> Result<usize, Duration> {
        // Always tenant then user: two connections never hold them in opposite orders.
        let mut tenant = self.tenant.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut user = self.user.state.lock().unwrap_or_else(PoisonError::into_inner);
        tenant.refill(now, self.tenant.rate);
        user.refill(now, self.user.rate);
        let whole = tenant.tokens.min(user.tokens).floor();
        if whole >= 1.0 {
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a batch is far below 2^52 frames, and `whole` is at least 1"
            )]
            let taken = (wanted as f64).min(whole).max(1.0) as usize;
            #[allow(clippy::cast_precision_loss, reason = "see above")]
            let spent = taken as f64;
            tenant.tokens -= spent;
            user.tokens -= spent;
            return Ok(taken);
        }
        Err(self.wait_for(&tenant, &user))
    }

    /// How long until both buckets can give an event frame's token (at least a
    /// millisecond), taking nothing.
    pub fn wait(&self, now: Instant) -> Duration {
        let mut tenant = self.tenant.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut user = self.user.state.lock().unwrap_or_else(PoisonError::into_inner);
        tenant.refill(now, self.tenant.rate);
        user.refill(now, self.user.rate);
        self.wait_for(&tenant, &user)
    }

    fn wait_for(&self, tenant: &BucketState, user: &BucketState) -> Duration {
        let wait = |tokens: f64, rate: f64| if tokens >= 1.0 { 0.0 } else { (1.0 - tokens) / rate };
        let seconds = wait(tenant.tokens, self.tenant.rate).max(wait(user.tokens, self.user.rate));
        Duration::from_secs_f64(seconds).max(Duration::from_millis(1))
    }
}

impl ConnectionThrottle {
    /// The event frames both buckets could send at `now` (taking nothing).
    pub fn available(&self, now: Instant) -> f64 {
        let mut tenant = self.tenant.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut user = self.user.state.lock().unwrap_or_else(PoisonError::into_inner);
        tenant.refill(now, self.tenant.rate);
        user.refill(now, self.user.rate);
        tenant.tokens.min(user.tokens)
    }
}

/// A token bucket: `rate` tokens a second, at most `rate` held.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    refilled_at: Instant,
}

impl BucketState {
    fn refill(&mut self, now: Instant, rate: f64) {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = elapsed.mul_add(rate, self.tokens).min(rate);
        self.refilled_at = self.refilled_at.max(now);
    }
}

/// Buckets by key, held weakly: the connections own them, and entries whose connections
/// are all gone are swept when the map has doubled since the last sweep.
#[derive(Debug)]
struct Buckets<K> {
    inner: Mutex<BucketMap<K>>,
}

#[derive(Debug)]
struct BucketMap<K> {
    buckets: HashMap<K, Weak<Bucket>>,
    sweep_at: usize,
}

impl<K> Default for Buckets<K> {
    fn default() -> Self {
        Self { inner: Mutex::new(BucketMap { buckets: HashMap::new(), sweep_at: MIN_SWEEP }) }
    }
}

/// The map size below which dead entries are not swept.
const MIN_SWEEP: usize = 64;

impl<K: Hash + Eq> Buckets<K> {
    fn get_or_make(&self, key: K, rate: NonZeroU32) -> Arc<Bucket> {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = map.buckets.get(&key).and_then(Weak::upgrade) {
            return bucket;
        }
        let rate = f64::from(rate.get());
        // A new bucket starts full: a fresh connection is not held back by history.
        let bucket = Arc::new(Bucket {
            rate,
            state: Mutex::new(BucketState { tokens: rate, refilled_at: Instant::now() }),
        });
        map.buckets.insert(key, Arc::downgrade(&bucket));
        if map.buckets.len() >= map.sweep_at {
            map.buckets.retain(|_, bucket| bucket.strong_count() > 0);
            map.sweep_at = (map.buckets.len() * 2).max(MIN_SWEEP);
        }
        bucket
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn rates(tenant: u32, user: u32) -> ThrottleRates {
        ThrottleRates {
            tenant_per_second: NonZeroU32::new(tenant).unwrap(),
            user_per_second: NonZeroU32::new(user).unwrap(),
        }
    }

    fn throttle() -> BroadcastThrottle {
        BroadcastThrottle::new(ThrottlePolicy {
            default: rates(4, 2),
            plans: HashMap::from([("pro".to_owned(), rates(100, 50))]),
        })
    }

    fn tenant(n: u128) -> TenantId {
        TenantId::from_uuid(Uuid::from_u128(n))
    }

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    /// How many sends pass at `now` before the first refusal.
    fn burst(connection: &ConnectionThrottle, now: Instant) -> usize {
        std::iter::from_fn(|| connection.try_send(now).ok()).take(1000).count()
    }

    #[test]
    fn a_user_gets_its_rate_per_second_and_is_told_how_long_to_wait() {
        let throttle = throttle();
        let alice = throttle.connection(tenant(1), &user("alice"), None);
        let now = Instant::now() + Duration::from_secs(5);
        assert_eq!(burst(&alice, now), 2, "one second of the user's rate");
        let wait = alice.try_send(now).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500), "one token at 2 a second");
        assert!(alice.try_send(now + wait).is_ok());
    }

    #[test]
    fn the_users_of_a_tenant_share_the_tenants_rate_and_connections_share_their_users() {
        let throttle = throttle();
        let now = Instant::now() + Duration::from_secs(5);
        let alice = throttle.connection(tenant(1), &user("alice"), None);
        let alice_again = throttle.connection(tenant(1), &user("alice"), None);
        let bob = throttle.connection(tenant(1), &user("bob"), None);
        let carol = throttle.connection(tenant(1), &user("carol"), None);
        assert_eq!(burst(&alice, now), 2);
        assert_eq!(burst(&alice_again, now), 0, "alice's second connection shares her bucket");
        assert_eq!(burst(&bob, now), 2);
        assert_eq!(burst(&carol, now), 0, "the tenant's 4 a second are spent");
        let other = throttle.connection(tenant(2), &user("alice"), None);
        assert_eq!(burst(&other, now), 2, "another tenant's alice is another user");
    }

    #[test]
    fn a_batch_takes_what_both_buckets_can_give_at_once_and_no_more() {
        let throttle = throttle();
        let now = Instant::now() + Duration::from_secs(5);
        let alice = throttle.connection(tenant(1), &user("alice"), None);
        let bob = throttle.connection(tenant(1), &user("bob"), None);
        assert_eq!(alice.try_take(now, 10), Ok(2), "alice's 2 a second, not the 10 asked");
        assert_eq!(alice.try_take(now, 10), Err(Duration::from_millis(500)));
        assert_eq!(alice.wait(now), Duration::from_millis(500), "asking for the wait takes nothing");
        assert_eq!(bob.try_take(now, 1), Ok(1), "one asked, one taken");
        assert_eq!(bob.try_take(now, 5), Ok(1), "the tenant's 4 a second: 1 left");
        let carol = throttle.connection(tenant(1), &user("carol"), None);
        assert_eq!(
            carol.try_take(now, 5),
            Err(Duration::from_millis(250)),
            "carol's bucket is full, the tenant's empty"
        );
        let later = now + Duration::from_secs(1);
        assert_eq!(alice.wait(later), Duration::from_millis(1), "a second later both buckets have tokens");
        assert_eq!(alice.try_take(later, 10), Ok(2));
    }

    #[test]
    fn the_wait_is_for_the_part_of_a_token_still_missing() {
        let throttle = throttle();
        let alice = throttle.connection(tenant(1), &user("alice"), None);
        let now = Instant::now() + Duration::from_secs(5);
        assert_eq!(burst(&alice, now), 2);
        let later = now + Duration::from_millis(250);
        assert_eq!(alice.try_send(later), Err(Duration::from_millis(250)), "half a token at 2 a second");
    }

    #[test]
    fn what_is_available_is_the_smaller_bucket_and_asking_takes_nothing() {
        let throttle = throttle();
        let alice = throttle.connection(tenant(1), &user("alice"), None);
        let now = Instant::now() + Duration::from_secs(5);
        assert!((alice.available(now) - 2.0).abs() < f64::EPSILON, "the user's 2 of the tenant's 4");
        assert!((alice.available(now) - 2.0).abs() < f64::EPSILON);
        alice.try_send(now).unwrap();
        assert!((alice.available(now) - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn a_tenants_plan_sets_its_rates() {
        let throttle = throttle();
        let pro = throttle.connection(tenant(1), &user("alice"), Some("pro"));
        assert_eq!(burst(&pro, Instant::now() + Duration::from_secs(5)), 50);
        let unknown = throttle.connection(tenant(2), &user("alice"), Some("enterprise"));
        assert_eq!(burst(&unknown, Instant::now() + Duration::from_secs(5)), 2, "the default");
    }

    #[test]
    fn buckets_of_open_connections_survive_sweeps_which_wait_until_the_map_has_doubled() {
        let throttle = throttle();
        let now = Instant::now() + Duration::from_secs(5);
        let open: Vec<_> = (0..100).map(|n| throttle.connection(tenant(n), &user("u"), None)).collect();
        assert_eq!(burst(&open[0], now), 2);
        for n in 1_000..1_050 {
            drop(throttle.connection(tenant(n), &user("u"), None));
        }
        // Swept at 128 entries (twice the 64 of the sweep before): 101 left, then 22 more.
        assert_eq!(throttle.tenants.len(), 123);
        for n in 2_000..3_000 {
            drop(throttle.connection(tenant(n), &user("u"), None));
        }
        assert!(throttle.tenants.len() <= 202, "{} entries kept", throttle.tenants.len());
        let again = throttle.connection(tenant(0), &user("u"), None);
        assert_eq!(burst(&again, now), 0, "the open connection's bucket was kept, not made anew");
    }

    #[test]
    fn buckets_of_closed_connections_are_swept() {
        let throttle = throttle();
        for n in 0..200 {
            drop(throttle.connection(tenant(n), &user("u"), None));
        }
        let kept = throttle.connection(tenant(1000), &user("u"), None);
        assert!(throttle.tenants.len() < 200, "{} entries kept", throttle.tenants.len());
        assert!(kept.try_send(Instant::now()).is_ok());
    }
}
