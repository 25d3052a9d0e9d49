//! Storm's *fields grouping*: which worker owns a record. Every process must
//! route a key to the same worker, so the hash is fixed (SipHash with zero
//! keys), never randomly seeded.

use std::hash::{Hash, Hasher};

/// The routing hash of a key; timely's `Exchange` pact sends the record to
/// worker `hash % peers`.
///
/// ```
/// use feedstorm::grouping::route;
/// assert_eq!(route("user:rob"), route(&"user:rob".to_string()));
/// ```
pub fn route<K: Hash + ?Sized>(key: &K) -> u64 {
    #[allow(deprecated)] // SipHasher is deprecated only as a HashMap hasher; we need fixed keys.
    let mut hasher = std::hash::SipHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}
