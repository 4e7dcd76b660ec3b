//! A connection's subscriptions and its states (cstate, and each subscription's istate), sized for what idle
//! connections hold, with the one rule that merges a handler's state changes.
//!
//! Nearly every connection holds a few subscriptions, and nearly every state zero or one entry (a
//! subscription's in standalone mode: `$w`, the stream it may whisper to). Hash tables cost too much for that: the
//! smallest one hashbrown makes has four buckets, 372 bytes for one subscription and 212 bytes for one state
//! entry. Subscriptions are therefore a list searched in place, allocated to the exact size while it is small
//! (64 bytes for one subscription). Past [`FEW`] subscriptions the list becomes a hash table, so a client holding
//! thousands (without `max_subscriptions`) still finds each in constant time. A state is written only by the
//! application's handlers, whose states are small: it is one packed string, searched in place.

use std::collections::HashMap;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};

/// Subscriptions held in a list before they move to a hash table.
const FEW: usize = 8;

/// Pushes one item, allocating exactly for it while the list is small (a first push would otherwise
/// reserve room for four).
fn push_small<T>(list: &mut Vec<T>, item: T) {
    if list.len() < FEW {
        list.reserve_exact(1);
    }
    list.push(item);
}

/// A connection state or a subscription's channel state: key-value pairs, each key once, packed into one string
/// (`<key length>:<key><value length>:<value>` per pair, lengths in bytes). The common state of one short pair
/// (`$w` and a stream name) is then one small allocation rather than a list and a string per key and value
/// (four, 128 bytes with glibc's headers); an empty state allocates nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StateMap(Box<str>);

impl StateMap {
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The pairs, in the order they were first set.
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut rest = &*self.0;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let key = take_field(&mut rest);
            let value = take_field(&mut rest);
            Some((key, value))
        })
    }

    /// Applies returned changes: a non-empty value sets the key, an empty value deletes it.
    pub(crate) fn merge(&mut self, mut changes: HashMap<String, String>) {
        if changes.is_empty() {
            return;
        }
        let mut packed =
            String::with_capacity(self.0.len() + changes.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>());
        for (key, value) in self.pairs() {
            match changes.remove(key) {
                Some(changed) if changed.is_empty() => {}
                Some(changed) => push_pair(&mut packed, key, &changed),
                None => push_pair(&mut packed, key, value),
            }
        }
        // New keys in a stable order, so equal changes make equal states.
        let mut added: Vec<_> = changes.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        added.sort_unstable();
        for (key, value) in &added {
            push_pair(&mut packed, key, value);
        }
        self.0 = packed.into_boxed_str();
    }

    /// The state as the map a handler request carries.
    pub(crate) fn to_map(&self) -> HashMap<String, String> {
        self.pairs().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }
}

fn push_pair(packed: &mut String, key: &str, value: &str) {
    use std::fmt::Write;
    let _ = write!(packed, "{}:{key}{}:{value}", key.len(), value.len());
}

/// Takes one `<length>:<text>` field off the front of a packed state.
fn take_field<'a>(rest: &mut &'a str) -> &'a str {
    let (length, after) = rest.split_once(':').expect("a packed state field has a length");
    let length: usize = length.parse().expect("a packed state field's length is a number");
    let (field, tail) = after.split_at(length);
    *rest = tail;
    field
}

/// Serialized as a JSON object, as Disconnect requests carry each subscription's state.
impl Serialize for StateMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.pairs().count()))?;
        for (k, v) in self.pairs() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Subscription {
    pub(crate) istate: StateMap,
    /// The streams it receives, each once.
    pub(crate) streams: smallvec::SmallVec<[Arc<str>; 1]>,
    /// The member this session joined the presence set of the subscription's stream as; boxed, as most never do.
    pub(crate) presence: Option<Box<crate::presence::Member>>,
}

impl Subscription {
    pub(crate) fn add_stream(&mut self, stream: Arc<str>) {
        self.streams.push(stream);
    }
}

/// A connection's subscriptions by identifier.
#[derive(Debug)]
pub(crate) enum Subscriptions {
    Few(Vec<(Arc<str>, Subscription)>),
    /// Boxed: the table is rare, and unboxed it would make every connection's session 24 bytes larger.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<Arc<str>, Subscription>>),
}

impl Default for Subscriptions {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl Subscriptions {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Few(list) => list.len(),
            Self::Many(map) => map.len(),
        }
    }

    pub(crate) fn get_key_value(&self, identifier: &str) -> Option<(&Arc<str>, &Subscription)> {
        match self {
            Self::Few(list) => list.iter().find(|(k, _)| **k == *identifier).map(|(k, s)| (k, s)),
            Self::Many(map) => map.get_key_value(identifier),
        }
    }

    pub(crate) fn get(&self, identifier: &str) -> Option<&Subscription> {
        self.get_key_value(identifier).map(|(_, s)| s)
    }

    pub(crate) fn get_mut(&mut self, identifier: &str) -> Option<&mut Subscription> {
        match self {
            Self::Few(list) => list.iter_mut().find(|(k, _)| **k == *identifier).map(|(_, s)| s),
            Self::Many(map) => map.get_mut(identifier),
        }
    }

    /// Adds a subscription, replacing one held under the same identifier.
    pub(crate) fn insert(&mut self, identifier: Arc<str>, subscription: Subscription) {
        match self {
            Self::Few(list) => {
                if let Some(entry) = list.iter_mut().find(|(k, _)| *k == identifier) {
                    entry.1 = subscription;
                } else if list.len() < FEW {
                    push_small(list, (identifier, subscription));
                } else {
                    let mut map: HashMap<_, _> = list.drain(..).collect();
                    map.insert(identifier, subscription);
                    *self = Self::Many(Box::new(map));
                }
            }
            Self::Many(map) => {
                map.insert(identifier, subscription);
            }
        }
    }

    /// Makes `shared`, an identifier equal to a subscription's own held elsewhere too, that subscription's key,
    /// so the two are one allocation.
    pub(crate) fn share_key(&mut self, shared: Arc<str>) {
        match self {
            Self::Few(list) => {
                if let Some(entry) = list.iter_mut().find(|(k, _)| *k == shared) {
                    entry.0 = shared;
                }
            }
            Self::Many(map) => {
                if let Some(subscription) = map.remove(&*shared) {
                    map.insert(shared, subscription);
                }
            }
        }
    }

    pub(crate) fn remove(&mut self, identifier: &str) -> Option<Subscription> {
        match self {
            Self::Few(list) => {
                let at = list.iter().position(|(k, _)| **k == *identifier)?;
                Some(list.remove(at).1)
            }
            Self::Many(map) => map.remove(identifier),
        }
    }

    /// Every subscription, in the order they were made while there are few.
    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = (&Arc<str>, &Subscription)> + '_> {
        match self {
            Self::Few(list) => Box::new(list.iter().map(|(k, s)| (k, s))),
            Self::Many(map) => Box::new(map.iter()),
        }
    }

    /// Every subscription, in the order they were made while there are few.
    pub(crate) fn into_vec(self) -> Vec<(Arc<str>, Subscription)> {
        match self {
            Self::Few(list) => list,
            Self::Many(map) => (*map).into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn state_merges_sets_replaces_and_deletes() {
        let mut state = StateMap::default();
        state.merge(changes(&[("a", "1"), ("b", "2"), ("c", "3"), ("gone", "")]));
        state.merge(changes(&[("a", "10"), ("b", ""), ("d", "4"), ("zz", "")]));
        let mut got: Vec<_> = state.to_map().into_iter().collect();
        got.sort();
        assert_eq!(got, vec![("a".into(), "10".into()), ("c".into(), "3".into()), ("d".into(), "4".into())]);
        assert_eq!(state.get("a"), Some("10"));
        assert_eq!(state.get("b"), None);
        let json: HashMap<String, String> = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(json, state.to_map());
    }

    #[test]
    fn a_shared_identifier_becomes_the_key_in_the_list_and_in_the_table() {
        for count in [1, FEW + 1] {
            let mut subs = Subscriptions::default();
            for n in 0..count {
                subs.insert(format!("id{n}").into(), Subscription::default());
            }
            let shared: Arc<str> = "id0".into();
            subs.share_key(shared.clone());
            let (key, _) = subs.get_key_value("id0").expect("still there");
            assert!(Arc::ptr_eq(key, &shared), "{count} subscriptions");
            assert_eq!(subs.len(), count);
            subs.share_key("unknown".into());
            assert!(subs.get("unknown").is_none());
        }
    }

    proptest::proptest! {
        /// The packed state behaves as a map under any keys and values: lengths, colons, digits, any script.
        #[test]
        fn a_packed_state_merges_like_a_map(
            rounds in proptest::collection::vec(
                proptest::collection::hash_map("[a-z0-9:$é]{0,6}", "(|[a-z0-9:é ]{1,8})", 0..6),
                1..6,
            )
        ) {
            let (mut state, mut model) = (StateMap::default(), HashMap::new());
            for changes in rounds {
                for (key, value) in &changes {
                    if value.is_empty() { model.remove(key); } else { model.insert(key.clone(), value.clone()); }
                }
                state.merge(changes);
                proptest::prop_assert_eq!(state.to_map(), model.clone());
                for (key, value) in &model {
                    proptest::prop_assert_eq!(state.get(key), Some(value.as_str()));
                }
            }
        }
    }

    #[test]
    fn one_entry_is_allocated_for_exactly() {
        let mut state = StateMap::default();
        state.merge(changes(&[("$w", "room")]));
        assert_eq!(&*state.0, "2:$w4:room");
        let mut sub = Subscription::default();
        sub.add_stream("room".into());
        assert!(!sub.streams.spilled(), "one stream is held in place");
        let mut subs = Subscriptions::default();
        subs.insert("a".into(), sub);
        let Subscriptions::Few(list) = &subs else { panic!("one subscription is a list") };
        assert_eq!(list.capacity(), 1);
    }

    #[test]
    fn subscriptions_are_found_replaced_and_removed_before_and_after_moving_to_a_table() {
        let mut subs = Subscriptions::default();
        let n = FEW * 3;
        for i in 0..n {
            let mut sub = Subscription::default();
            sub.add_stream(format!("s{i}").into());
            subs.insert(format!("id{i}").into(), sub);
            assert_eq!(subs.len(), i + 1);
            assert_eq!(matches!(subs, Subscriptions::Many(_)), i >= FEW, "after {} subscriptions", i + 1);
        }
        for i in 0..n {
            let (key, sub) = subs.get_key_value(&format!("id{i}")).expect("held");
            assert_eq!(&**key, format!("id{i}"));
            assert_eq!(&*sub.streams[0], format!("s{i}"));
        }
        assert!(subs.get("id-none").is_none());
        subs.get_mut("id3").unwrap().istate.merge(changes(&[("k", "v")]));
        assert_eq!(subs.get("id3").unwrap().istate.get("k"), Some("v"));
        subs.insert("id3".into(), Subscription::default());
        assert_eq!(subs.len(), n, "the same identifier is replaced, not added");
        assert_eq!(subs.get("id3").unwrap().istate.get("k"), None);
        assert!(subs.remove("id5").is_some());
        assert!(subs.remove("id5").is_none());
        assert_eq!(subs.len(), n - 1);
        let mut ids: Vec<String> = subs.into_vec().into_iter().map(|(k, _)| k.to_string()).collect();
        ids.sort();
        assert_eq!(ids.len(), n - 1);
        assert!(!ids.contains(&"id5".to_string()));
    }

    #[test]
    fn a_few_subscriptions_keep_their_order_and_removal_keeps_it() {
        let mut subs = Subscriptions::default();
        for id in ["c", "a", "b"] {
            subs.insert(id.into(), Subscription::default());
        }
        subs.remove("a");
        let ids: Vec<String> = subs.into_vec().into_iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(ids, ["c", "b"]);
    }
}
