//! The one retry policy: exponential back-off between attempts, from a
//! first delay doubling up to a cap, while the error may pass (a server that
//! is down may come back); an error that cannot (authentication,
//! configuration) is returned at once.
//!
//! ```
//! use std::time::Duration;
//! use feedstorm::retry::{retry, Backoff};
//! let mut left = 2;
//! let answer = retry(
//!     Backoff::new(Duration::from_millis(1), Duration::from_millis(4)),
//!     || if left > 0 { left -= 1; Err("down") } else { Ok(42) },
//!     |_| true,
//!     |_| {},
//! );
//! assert_eq!(answer, Ok(42));
//! let final_error: Result<(), _> = retry(Backoff::default(), || Err("bad password"), |_| false, |_| {});
//! assert_eq!(final_error, Err("bad password"));
//! ```

use std::time::Duration;

/// Delays between attempts: `first`, then doubled each time, at most `cap`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    delay: Duration,
    cap: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling to 5 s: a restarted broker or server is found again
    /// within seconds, and a long outage costs a few wake-ups a minute.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Backoff {
    /// Delays from `first`, doubling up to `cap`.
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff { delay: first, cap }
    }

    /// Sleeps the current delay, and doubles it for the next wait.
    pub fn wait(&mut self) {
        std::thread::sleep(self.delay);
        self.delay = (self.delay * 2).min(self.cap);
    }
}

/// Calls `attempt` until it succeeds, waiting `backoff` between attempts,
/// or until it fails with an error that `retryable` says is final (returned
/// at once). `on_retry` hears each error that is retried (for a log line).
pub fn retry<T, E>(
    mut backoff: Backoff,
    mut attempt: impl FnMut() -> Result<T, E>,
    retryable: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(&E),
) -> Result<T, E> {
    loop {
        match attempt() {
            Ok(answer) => return Ok(answer),
            Err(error) if !retryable(&error) => return Err(error),
            Err(error) => {
                on_retry(&error);
                backoff.wait();
            }
        }
    }
}
