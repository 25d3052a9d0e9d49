//! Decoding helpers for checkpoint parts: a resume decodes hundreds of
//! thousands of activities per worker, and serde's defaults allocate more
//! than the values need (a list grown by doubling, an `Arc<str>` built
//! through a `String` and a `Box<str>`, one copy of a verb per activity).
//! The bytes on disk are serde's usual ones: these only decode them.

use std::cell::RefCell;
use std::sync::Arc;

use arcstr::ArcStr;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// How many items to reserve for a list that states `hint` of them (a
/// part states its lengths, and its checksum was verified before it is
/// read): all, but bounded all the same, as a length is not trusted with
/// more.
pub fn presize(hint: Option<usize>) -> usize {
    hint.unwrap_or(0).min(1 << 22)
}

/// A list decoded with its whole length reserved at once. Serde's derive
/// reserves at most a megabyte ahead, so a part's hundreds of thousands of
/// activities grew by doubling, each time copied into fresh pages.
pub struct Presized<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Presized<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Items<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Items<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let mut items = Vec::with_capacity(presize(seq.size_hint()));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(items)
            }
        }
        deserializer
            .deserialize_seq(Items(std::marker::PhantomData))
            .map(Presized)
    }
}

/// [`Presized`] as a field's decoder: `#[serde(deserialize_with = "presized")]`.
pub fn presized<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Presized::deserialize(deserializer).map(|Presized(items)| items)
}

/// Deserializes an `Arc<str>` with one allocation (serde's own goes
/// through a `String` and a `Box<str>`, two allocations and a copy).
/// For `#[serde(deserialize_with = "shared_str")]`.
pub fn shared_str<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
    struct Shared;
    impl Visitor<'_> for Shared {
        type Value = Arc<str>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Arc<str>, E> {
            Ok(Arc::from(text))
        }
    }
    deserializer.deserialize_str(Shared)
}

/// An `Arc<str>` decoded by [`shared_str`], for lists of them.
struct SharedStr(Arc<str>);

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        shared_str(deserializer).map(SharedStr)
    }
}

/// A list of ids, [`Presized`], each decoded by [`shared_str`].
pub struct SharedIds(pub Vec<Arc<str>>);

impl<'de> Deserialize<'de> for SharedIds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Presized(ids) = Presized::<SharedStr>::deserialize(deserializer)?;
        Ok(SharedIds(ids.into_iter().map(|SharedStr(id)| id).collect()))
    }
}

/// Verbs decoded on this thread, one handle each: a part names a few verbs
/// hundreds of thousands of times.
const VERBS_KEPT: usize = 64;

thread_local! {
    static VERBS: RefCell<Vec<ArcStr>> = const { RefCell::new(Vec::new()) };
}

/// Deserializes a verb, sharing one handle per distinct verb decoded on
/// this thread (the first 64; any beyond are decoded as they
/// are). For `#[serde(deserialize_with = "pooled_verb")]`.
pub fn pooled_verb<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ArcStr, D::Error> {
    struct Pooled;
    impl Visitor<'_> for Pooled {
        type Value = ArcStr;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a verb")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ArcStr, E> {
            Ok(VERBS.with_borrow_mut(|verbs| {
                if let Some(verb) = verbs.iter().find(|verb| verb.as_str() == text) {
                    return verb.clone();
                }
                let verb = ArcStr::from(text);
                if verbs.len() < VERBS_KEPT {
                    verbs.push(verb.clone());
                }
                verb
            }))
        }
    }
    deserializer.deserialize_str(Pooled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Saved {
        id: Arc<str>,
        verb: ArcStr,
        ids: Vec<Arc<str>>,
    }

    /// [`Saved`] decoded by this module's helpers.
    #[derive(Deserialize)]
    struct Loaded {
        #[serde(deserialize_with = "shared_str")]
        id: Arc<str>,
        #[serde(deserialize_with = "pooled_verb")]
        verb: ArcStr,
        ids: SharedIds,
    }

    #[test]
    fn decoded_values_equal_serdes_own_and_verbs_share_a_handle() {
        let saved = |id: &str, verb: &str| Saved {
            id: id.into(),
            verb: verb.into(),
            ids: vec!["x".into(), "yz".into()],
        };
        let bytes = bincode::serialize(&vec![saved("a1", "love"), saved("a2", "love")]).unwrap();
        let back: Vec<Loaded> = bincode::deserialize(&bytes).unwrap();
        assert_eq!((&*back[0].id, &*back[1].id), ("a1", "a2"));
        assert_eq!(
            back[1].ids.0.iter().map(|id| &**id).collect::<Vec<_>>(),
            ["x", "yz"]
        );
        assert!(ArcStr::ptr_eq(&back[0].verb, &back[1].verb));
        assert_eq!(back[0].verb, "love");
    }
}
