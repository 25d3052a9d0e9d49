//! One spec's group keys on a worker, each with the retained stories that
//! have it, and a user's group loaded from them.

use std::cell::RefCell;
use std::sync::Arc;

use super::group_state::{actor_counts, GroupState};
use super::{GroupId, WholeViews};
use crate::bolt::fanout::{Entry, Fanout, FastMap, Parties, Tid};
use crate::config::KeyField;
use crate::digest::{DigestSpec, Group};
use crate::event::{Activity, Millis};

/// One spec's group keys on this worker, each with the retained stories
/// that have it (so a group is loaded without reading other stories).
#[derive(Default)]
pub(super) struct Keys {
    pub(super) ids: FastMap<Arc<str>, GroupId>,
    /// The same keys found by their parts: a new story's group is looked
    /// up without building its key text (which cost as much as the rest
    /// of keeping the story).
    by_parts: FastMap<KeyParts, GroupId>,
    /// The verbs seen, numbered for [`KeyParts`].
    verbs: FastMap<arcstr::ArcStr, u32>,
    groups: Vec<KeyInfo>,
    free: Vec<GroupId>,
    /// Keys that lost their last story this epoch: freed at its end, if still unused.
    emptied: Vec<GroupId>,
    /// Reused by every [`Keys::load`]: a first catch-up loads each user's
    /// hundred-odd groups, and growing fresh lists for each was a fifth
    /// of the load.
    scratch: RefCell<LoadScratch>,
}

/// The lists one group load fills: the user's members, and their actors.
#[derive(Default)]
struct LoadScratch {
    members: Vec<Member>,
    actors: Vec<Tid>,
}

/// A group key as numbers: each key field's value (a verb's number, a
/// typed id's [`Tid`], [`NO_TARGET`]), then the bucket start. Two stories
/// have equal parts exactly when they have equal keys.
type KeyParts = ([u32; 4], Millis);

/// The target part of a story without one.
const NO_TARGET: u32 = u32::MAX;

/// A group key: its text and parts (the bucket start last), and the retained stories with it.
struct KeyInfo {
    name: Arc<str>,
    parts: KeyParts,
    stories: Vec<Member>,
}

/// A story with a group key, listed with its typed ids: a group is loaded
/// by scanning its key's stories for the user's, and a scan that read
/// each story's slot missed the cache on every one once history grew.
#[derive(Clone, Copy)]
pub(super) struct Member {
    pub(super) entry: Entry,
    pub(super) parties: Parties,
}

impl Keys {
    /// The parts of the key of `story` (with `parties`) under `spec`.
    pub(super) fn parts(
        &mut self,
        spec: &DigestSpec,
        story: &Activity,
        parties: Parties,
    ) -> KeyParts {
        let mut values = [0; 4];
        for (value, field) in values.iter_mut().zip(&spec.fields) {
            *value = match field {
                KeyField::Verb => match self.verbs.get(&story.verb) {
                    Some(&number) => number,
                    None => {
                        let next = u32::try_from(self.verbs.len()).expect("fewer than 2^32 verbs");
                        self.verbs.insert(story.verb.clone(), next);
                        next
                    }
                },
                KeyField::Actor => parties.actor,
                KeyField::Object => parties.object,
                // `parties` leaves out a target that is the actor or object.
                KeyField::Target => match (&story.target, parties.target) {
                    (None, _) => NO_TARGET,
                    (Some(_), Some(target)) => target,
                    (Some(target), None) if *target == story.actor => parties.actor,
                    (Some(_), None) => parties.object,
                },
            };
        }
        (values, spec.bucket(story.time))
    }

    /// The group with key `parts` (whose text `key` makes), with `member` added.
    pub(super) fn acquire(
        &mut self,
        parts: KeyParts,
        key: impl FnOnce() -> String,
        member: Member,
    ) -> GroupId {
        if let Some(&id) = self.by_parts.get(&parts) {
            self.groups[id as usize].stories.push(member);
            return id;
        }
        let name: Arc<str> = Arc::from(key());
        let info = KeyInfo {
            name: name.clone(),
            parts,
            stories: vec![member],
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.groups[id as usize] = info;
                id
            }
            None => {
                self.groups.push(info);
                GroupId::try_from(self.groups.len() - 1).expect("fewer than 2^32 group keys")
            }
        };
        self.ids.insert(name, id);
        self.by_parts.insert(parts, id);
        id
    }

    pub(super) fn release(&mut self, id: GroupId, entry: Entry) {
        let stories = &mut self.groups[id as usize].stories;
        if let Some(at) = stories.iter().position(|m| m.entry.slot == entry.slot) {
            stories.swap_remove(at);
        }
        if stories.is_empty() {
            self.emptied.push(id);
        }
    }

    pub(super) fn end_epoch(&mut self) {
        for id in std::mem::take(&mut self.emptied) {
            let info = &self.groups[id as usize];
            if info.stories.is_empty() && self.ids.get(&info.name) == Some(&id) {
                self.ids.remove(&info.name);
                self.by_parts.remove(&info.parts);
                self.free.push(id);
            }
        }
    }

    pub(super) fn name(&self, id: GroupId) -> &Arc<str> {
        &self.groups[id as usize].name
    }

    pub(super) fn bucket(&self, id: GroupId) -> Millis {
        self.groups[id as usize].parts.1
    }

    /// `user`'s view of its held group `id` (`state`), shared with every
    /// user who sees the group whole in this epoch.
    pub(super) fn view_of(
        &self,
        (spec_index, spec): (usize, &DigestSpec),
        id: GroupId,
        state: &GroupState,
        user: Tid,
        fanout: &Fanout,
        whole: &mut WholeViews,
    ) -> Arc<Group> {
        let members = || self.members(id, user, fanout);
        let view = || Arc::new(state.view(self.name(id), spec, &fanout.slots, members));
        if self.is_whole(id, state.count) {
            whole.entry((spec_index, id)).or_insert_with(view).clone()
        } else {
            view()
        }
    }

    /// Whether `count` entries are all of group `id`'s stories.
    fn is_whole(&self, id: GroupId, count: u32) -> bool {
        self.groups[id as usize].stories.len() == count as usize
    }

    /// `user`'s group `id`, from the stories with its key.
    pub(super) fn load(&self, id: GroupId, user: Tid, fanout: &Fanout, shown: usize) -> GroupState {
        let mut scratch = self.scratch.borrow_mut();
        let LoadScratch { members, actors } = &mut *scratch;
        self.fill_members(id, user, fanout, members);
        actors.clear();
        actors.extend(members.iter().map(|m| m.parties.actor));
        let newest = members[members.len().saturating_sub(2 * shown)..]
            .iter()
            .map(|m| m.entry)
            .collect();
        GroupState {
            count: members.len() as u32,
            actors: actor_counts(actors),
            newest,
            oldest: members.first().map(|m| m.entry),
            touched: false,
        }
    }

    /// The entries of group `id` in `user`'s feed, oldest first.
    pub(super) fn members(&self, id: GroupId, user: Tid, fanout: &Fanout) -> Vec<Entry> {
        let mut members = Vec::new();
        self.fill_members(id, user, fanout, &mut members);
        members.into_iter().map(|m| m.entry).collect()
    }

    /// Fills `members` with the stories of group `id` in `user`'s feed, oldest first.
    fn fill_members(&self, id: GroupId, user: Tid, fanout: &Fanout, members: &mut Vec<Member>) {
        let reaches = fanout.reaching(user);
        members.clear();
        members.extend(
            self.groups[id as usize]
                .stories
                .iter()
                .filter(|m| reaches(&m.parties)),
        );
        drop(reaches);
        members.sort_unstable_by(|a, b| fanout.slots.cmp(&a.entry, &b.entry));
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;
    use crate::bolt::fanout::Fanout;
    use crate::config::{DigestConfig, KeyField};
    use crate::digest::DigestSpec;
    use crate::event::{Activity, TypedId};
    use crate::feed::Story;
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;

    /// Stories have equal key parts exactly when they have equal key
    /// texts, for every choice of key fields: targets absent, equal to
    /// the actor or the object, or distinct; several verbs and buckets.
    #[test]
    fn key_parts_are_equal_exactly_when_keys_are() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let id = |s: String| TypedId::parse(&s).unwrap();
        let mut fanout = Fanout::default();
        let mut stories = Vec::new();
        for n in 0..300 {
            let actor = id(format!("user:u{}", rng.gen_range(0..3)));
            let object = match rng.gen_bool(0.5) {
                true => id(format!("user:u{}", rng.gen_range(0..3))),
                false => id(format!("listing:l{}", rng.gen_range(0..3))),
            };
            let target = match rng.gen_range(0..4) {
                0 => None,
                1 => Some(actor.clone()),
                2 => Some(object.clone()),
                _ => Some(id(format!("user:u{}", rng.gen_range(0..4)))),
            };
            let story = Story(Arc::new(Activity {
                id: format!("a{n}").into(),
                time: rng.gen_range(0..3 * 3_600_000),
                actor,
                verb: ["love", "post"][rng.gen_range(0..2)].into(),
                object,
                target,
                extra: None,
            }));
            let entry = fanout.add_story(&story).expect("new id");
            stories.push((story, fanout.slots.parties(entry)));
        }
        let all = [
            KeyField::Verb,
            KeyField::Actor,
            KeyField::Object,
            KeyField::Target,
        ];
        for subset in 0..16 {
            let config = DigestConfig {
                key: (0..4)
                    .filter(|b| subset & (1 << b) != 0)
                    .map(|b| all[b])
                    .collect(),
                window: std::time::Duration::from_secs(3_600),
                ..DigestConfig::default()
            };
            let spec = DigestSpec::new(&config);
            let mut keys = Keys::default();
            let keyed: Vec<_> = stories
                .iter()
                .map(|(story, parties)| (spec.key(&story.0), keys.parts(&spec, &story.0, *parties)))
                .collect();
            for (a, a_parts) in &keyed {
                for (b, b_parts) in &keyed {
                    assert_eq!(
                        a == b,
                        a_parts == b_parts,
                        "{a} / {b}, fields {:?}",
                        spec.fields
                    );
                }
            }
        }
    }
}
