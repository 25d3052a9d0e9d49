//! The seeded synthetic workload: a power-law social graph of users and
//! listings, then a stream of activities (most with a target, the listing's
//! owner) with follows, unfollows, deletes and duplicates mixed in.
//!
//! Event `i` is a pure function of `(seed, i)`, so worker `w` of `n` simply
//! generates the indices `i % n == w`: the workload is the same on any number
//! of workers, and the demo, the benchmarks and `produce` share it.
//!
//! ```
//! use feedstorm::config::GeneratorConfig;
//! use feedstorm::spout::Generator;
//! let config = GeneratorConfig { follows: 10, events: Some(10), ..Default::default() };
//! let all: Vec<_> = Generator::sequence(&config).collect();
//! assert_eq!(all.len(), 20);
//! assert_eq!(all, Generator::sequence(&config).collect::<Vec<_>>());
//! ```

use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::GeneratorConfig;
use crate::error::{Error, Result};
use crate::event::{Activity, Event, InterestOp, TypedId};
use crate::spout::{Backlog, BadEvent, SourcePosition, Spout, SpoutState};

const VERBS: [&str; 4] = ["love", "post", "comment", "share"];

/// The generator spout for one worker.
pub struct Generator {
    config: GeneratorConfig,
    next: u64,
    index: u64,
    peers: u64,
    started: Instant,
    /// Events generated before a checkpoint: passed over.
    resumed: Option<SourcePosition>,
}

impl Generator {
    /// The share of worker `index` of `peers`.
    pub fn new(config: GeneratorConfig, index: usize, peers: usize) -> Generator {
        Generator {
            config,
            next: index as u64,
            index: index as u64,
            peers: peers as u64,
            started: Instant::now(),
            resumed: None,
        }
    }

    /// The whole workload in order (bounded configs only make sense here).
    pub fn sequence(config: &GeneratorConfig) -> impl Iterator<Item = Event> + '_ {
        let total = config.follows + config.events.unwrap_or(u64::MAX - config.follows);
        (0..total).map(move |i| event(config, i))
    }

    /// Total number of events, if bounded.
    pub fn total(config: &GeneratorConfig) -> Option<u64> {
        config.events.map(|e| e + config.follows)
    }

    fn available(&self) -> u64 {
        let total = Generator::total(&self.config).unwrap_or(u64::MAX);
        let paced = match self.config.rate {
            Some(rate) => {
                let mut elapsed = self.started.elapsed().as_secs_f64();
                let every = self.config.release_every.as_secs_f64();
                if every > 0.0 {
                    elapsed = (elapsed / every).floor() * every;
                }
                self.config
                    .follows
                    .saturating_add((elapsed * rate as f64) as u64)
            }
            None => u64::MAX,
        };
        total.min(paced)
    }
}

impl Spout for Generator {
    fn poll(
        &mut self,
        max: usize,
        out: &mut Vec<std::result::Result<Event, BadEvent>>,
    ) -> Result<SpoutState> {
        let available = self.available();
        let mut produced = 0;
        while self.next < available && produced < max {
            if !self
                .resumed
                .as_ref()
                .is_some_and(|at| at.was_read(self.next))
            {
                out.push(Ok(event(&self.config, self.next)));
                produced += 1;
            }
            self.next += self.peers;
        }
        Ok(
            if Generator::total(&self.config).is_some_and(|t| self.next >= t) {
                SpoutState::Exhausted
            } else if self.next < available {
                SpoutState::Ready
            } else {
                SpoutState::Idle
            },
        )
    }

    fn backlog(&self) -> Vec<Backlog> {
        let count = |n| SourcePosition::turn_count(self.index, self.peers, n);
        vec![Backlog {
            part: format!("generator turn {} of {}", self.index, self.peers),
            position: count(self.next),
            high_watermark: Some(count(self.available())),
        }]
    }

    fn position(&self) -> SourcePosition {
        SourcePosition::turn(self.index as usize, self.peers as usize, self.next)
    }

    fn resume(&mut self, from: &SourcePosition) -> Result<()> {
        let SourcePosition::Turns { next, .. } = from else {
            return Err(Error::Checkpoint(format!(
                "the generator cannot resume from {from:?}"
            )));
        };
        // A paced generator goes on at its rate from where it was, not
        // from its start.
        if let Some(rate) = self.config.rate.filter(|r| *r > 0) {
            let done = next.values().copied().min().unwrap_or(0);
            let ahead = done.saturating_sub(self.config.follows) as f64 / rate as f64;
            self.started = Instant::now()
                .checked_sub(std::time::Duration::from_secs_f64(ahead))
                .unwrap_or(self.started);
        }
        self.next = from.first_unread(self.next, self.peers);
        self.resumed = Some(from.clone());
        Ok(())
    }
}

fn rng_for(seed: u64, index: u64) -> SmallRng {
    // SplitMix64 of (seed, index): independent streams per event.
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    SmallRng::seed_from_u64(z ^ (z >> 31))
}

/// A skewed pick in `0..n`: small indices are popular.
fn skewed(rng: &mut SmallRng, n: u64, skew: f64) -> u64 {
    let u: f64 = rng.gen();
    ((u.powf(1.0 + skew) * n as f64) as u64).min(n.saturating_sub(1))
}

fn user(i: u64) -> TypedId {
    TypedId::parse(&format!("user:u{i}")).expect("valid")
}

fn listing(i: u64) -> TypedId {
    TypedId::parse(&format!("listing:l{i}")).expect("valid")
}

/// Someone or something to follow: users and listings, skewed.
fn followable(config: &GeneratorConfig, rng: &mut SmallRng) -> TypedId {
    let pick = skewed(rng, config.users + config.listings, config.skew);
    if pick < config.users {
        user(pick)
    } else {
        listing(pick - config.users)
    }
}

fn follow_edge(config: &GeneratorConfig, j: u64) -> (TypedId, TypedId) {
    let mut rng = rng_for(config.seed, j);
    let follower = rng.gen_range(0..config.users.max(1));
    let mut interest = followable(config, &mut rng);
    if interest == user(follower) {
        interest = listing(follower % config.listings.max(1));
    }
    (user(follower), interest)
}

/// Event `i` of the workload: `on_time_event`, set back in time when it is
/// one of the `late_share` late events (drawn from a stream of its own, so
/// the rest of the workload does not change with the share).
pub fn event(config: &GeneratorConfig, i: u64) -> Event {
    let mut event = on_time_event(config, i);
    if let Event::Activity(a) = &event {
        if let Some(original) = repeated_index(&a.id, i) {
            // A repeat is the earlier event exactly, late or not: an id's
            // content never changes (SPEC section 1).
            return self::event(config, original);
        }
    }
    if config.late_share > 0.0 {
        let mut rng = rng_for(config.seed ^ 0x1A7E_1A7E, i);
        if rng.gen_bool(config.late_share.min(1.0)) {
            let late_by = i64::try_from(config.late_by.as_millis()).unwrap_or(i64::MAX);
            let back = rng.gen_range(0..=late_by.max(0));
            match &mut event {
                Event::Activity(a) => a.time -= back,
                Event::Interest { time, .. } | Event::Delete { time, .. } => *time -= back,
            }
        }
    }
    event
}

/// The index of the event that activity `id`, generated as event `i`,
/// repeats (`None`: it is event `i`'s own activity).
fn repeated_index(id: &str, i: u64) -> Option<u64> {
    let index: u64 = id.strip_prefix('g')?.parse().ok()?;
    (index != i).then_some(index)
}

fn on_time_event(config: &GeneratorConfig, i: u64) -> Event {
    let mut rng = rng_for(config.seed, i);
    let jitter = rng.gen_range(0..=config.step_ms.max(0) * 3);
    let time = config.start_time + i as i64 * config.step_ms - jitter;
    if i < config.follows {
        let (user, interest) = follow_edge(config, i);
        return Event::Interest {
            time,
            user,
            interest,
            op: InterestOp::Follow,
        };
    }
    let roll: f64 = rng.gen();
    let activities = 1.0 - config.follow_share - config.unfollow_share - config.delete_share;
    if roll < activities {
        let actor = user(skewed(&mut rng, config.users.max(1), config.skew));
        let on_listing = rng.gen_bool(0.8) && config.listings > 0;
        let (object, target) = if on_listing {
            let l = skewed(&mut rng, config.listings, config.skew);
            (
                listing(l),
                rng.gen_bool(0.7).then(|| user(l % config.users.max(1))),
            )
        } else {
            (user(rng.gen_range(0..config.users.max(1))), None)
        };
        // A few events repeat an earlier activity exactly: at-least-once delivery.
        let id_index = if rng.gen_bool(0.01) && i > config.follows {
            return on_time_event(config, i - 1);
        } else {
            i
        };
        Event::Activity(Activity {
            id: format!("g{id_index}").into(),
            time,
            actor,
            verb: VERBS[rng.gen_range(0..VERBS.len())].into(),
            object,
            target,
            extra: rng
                .gen_bool(0.3)
                .then(|| format!(r#"{{"price":{}}}"#, rng.gen_range(1..500)).into()),
        })
    } else if roll < activities + config.follow_share {
        let (user, interest) = follow_edge(config, rng.gen_range(0..u64::MAX) | (1 << 63));
        Event::Interest {
            time,
            user,
            interest,
            op: InterestOp::Follow,
        }
    } else if roll < activities + config.follow_share + config.unfollow_share && config.follows > 0
    {
        let (user, interest) = follow_edge(config, rng.gen_range(0..config.follows));
        Event::Interest {
            time,
            user,
            interest,
            op: InterestOp::Unfollow,
        }
    } else {
        let back = rng.gen_range(1..1_000).min(i);
        Event::Delete {
            time,
            id: format!("g{}", i - back),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    /// A repeated activity is an exact copy of the first, late shift
    /// included: were the times to differ, which copy "first wins" keeps
    /// would depend on arrival order, and the bench's verdict with it.
    #[test]
    fn repeats_are_exact_copies_even_when_late() {
        let config = GeneratorConfig {
            follows: 100,
            events: Some(20_000),
            late_share: 0.3,
            ..Default::default()
        };
        let mut first: HashMap<Arc<str>, Activity> = HashMap::new();
        let mut repeats = 0;
        for event in Generator::sequence(&config) {
            if let Event::Activity(a) = event {
                match first.get(&a.id) {
                    Some(original) => {
                        assert_eq!(*original, a, "a repeat differs from its original");
                        repeats += 1;
                    }
                    None => {
                        first.insert(a.id.clone(), a);
                    }
                }
            }
        }
        assert!(repeats > 50, "only {repeats} repeats");
    }

    /// A paced generator released in bursts holds back the events of the
    /// current period: only the graph is there before the first release
    /// (an hour away), though a thousand events a nanosecond are due.
    #[test]
    fn a_burst_paced_generator_releases_nothing_before_its_first_period() {
        let config = GeneratorConfig {
            follows: 30,
            rate: Some(1_000_000_000_000),
            release_every: std::time::Duration::from_secs(3600),
            ..Default::default()
        };
        let mut generator = Generator::new(config, 0, 1);
        let mut out = Vec::new();
        let state = generator.poll(1_000, &mut out).unwrap();
        assert_eq!((out.len(), state), (30, SpoutState::Idle));
    }
}
