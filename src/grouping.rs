//! Storm's *fields grouping*: which worker owns a record. Every process must
//! route a key to the same worker, so the hash is differential's
//! [`Hashable::hashed`] (foldhash with a fixed seed), never randomly seeded.
//! Routes are not persisted: a checkpoint's state is routed again when it is
//! loaded, so only the processes of one cluster (one build) must agree.

use std::hash::Hash;

use differential_dataflow::hashable::Hashable;

/// The routing hash of a key; timely's `Exchange` pact sends the record to
/// worker `hash % peers`.
///
/// ```
/// use feedstorm::grouping::route;
/// assert_eq!(route("user:rob"), route(&"user:rob".to_string()));
/// ```
pub fn route<K: Hash + ?Sized>(key: &K) -> u64 {
    // `hashed` needs a sized receiver: hash the reference, which hashes as its target.
    (&key).hashed()
}
