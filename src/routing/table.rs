//! The routing table: an immutable snapshot from numbers to routes, and
//! [`Routes`], the atomically swappable handle to the current snapshot.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::number::Number;
use super::target::{OnFailure, PbxId, Target};
use crate::config::Config;

/// What the routing table knows about one number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The PBX (tenant) owning the number.
    pub pbx: PbxId,
    /// The number itself.
    pub number: Number,
    /// A disabled number is answered 480 (SPEC §2.2).
    pub enabled: bool,
    /// Where its calls go.
    pub forward: Target,
    /// What to do when `forward` fails.
    pub on_failure: OnFailure,
    /// Free-text comment from the PBX file.
    pub comment: Option<Arc<str>>,
}

/// Building a table from routes that name the same number twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("number {number} is routed twice (PBX {first} and PBX {second})")]
pub struct DuplicateRoute {
    /// The number.
    pub number: Number,
    /// PBX of the first route.
    pub first: PbxId,
    /// PBX of the second route.
    pub second: PbxId,
}

/// An immutable snapshot: number → route.
///
/// Routes live in one `Vec` in config order; a hash index maps each number
/// (one `u64`) to its position. Lookups hash a single integer, so they cost a
/// multiply and one or two cache misses.
#[derive(Debug, Default)]
pub struct RoutingTable {
    index: HashMap<Number, u32, NumberHashBuilder>,
    routes: Vec<Route>,
}

impl RoutingTable {
    /// A table that routes nothing.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds a table; every number may appear once.
    pub fn new(routes: Vec<Route>) -> Result<Self, DuplicateRoute> {
        let mut index = HashMap::with_capacity_and_hasher(routes.len(), NumberHashBuilder);
        for (i, route) in routes.iter().enumerate() {
            // u32 positions keep the index small; 4 billion numbers is beyond any config.
            let pos = u32::try_from(i).unwrap_or(u32::MAX);
            if let Some(prev) = index.insert(route.number, pos) {
                let first = &routes[prev as usize];
                return Err(DuplicateRoute {
                    number: route.number,
                    first: first.pbx.clone(),
                    second: route.pbx.clone(),
                });
            }
        }
        Ok(RoutingTable { index, routes })
    }

    /// Builds the table for a loaded configuration: every number of every PBX.
    pub fn from_config(config: &Config) -> Result<Self, DuplicateRoute> {
        let total = config.pbxs.iter().map(|p| p.numbers.len()).sum();
        let mut routes = Vec::with_capacity(total);
        for pbx in &config.pbxs {
            for n in &pbx.numbers {
                routes.push(Route {
                    pbx: pbx.id.clone(),
                    number: n.number,
                    enabled: n.enabled,
                    forward: n.forward.clone(),
                    on_failure: n.on_failure.clone(),
                    comment: n.comment.clone(),
                });
            }
        }
        Self::new(routes)
    }

    /// The route for a dialed number.
    #[inline]
    pub fn lookup(&self, number: &Number) -> Option<&Route> {
        let pos = *self.index.get(number)?;
        self.routes.get(pos as usize)
    }

    /// Number of routed numbers.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when nothing is routed.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// All routes, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

/// The current routing table, swapped atomically on reload (SPEC §8).
///
/// A call takes one [`snapshot`](Routes::snapshot) when it starts and keeps
/// it, so a reload never changes a call that is already routed.
#[derive(Debug)]
pub struct Routes(ArcSwap<RoutingTable>);

impl Routes {
    /// Starts with `table`.
    pub fn new(table: RoutingTable) -> Self {
        Routes(ArcSwap::from_pointee(table))
    }

    /// A cheap, short-lived view of the current table (do not hold it across
    /// long awaits; use [`snapshot`](Routes::snapshot) for that).
    pub fn load(&self) -> Guard<Arc<RoutingTable>> {
        self.0.load()
    }

    /// The current table as an owned `Arc`, for a call to keep.
    pub fn snapshot(&self) -> Arc<RoutingTable> {
        self.0.load_full()
    }

    /// Replaces the table; calls holding the old snapshot keep it.
    pub fn store(&self, table: RoutingTable) {
        self.0.store(Arc::new(table));
    }
}

impl Default for Routes {
    fn default() -> Self {
        Routes::new(RoutingTable::empty())
    }
}

/// Hashes a [`Number`] (a single `u64`) with one folded multiply.
///
/// Keys come only from the operator's config, never from the network, so a
/// seeded DoS-resistant hash buys nothing here: a caller can choose what to
/// look up but cannot make the table's buckets collide.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NumberHashBuilder;

impl BuildHasher for NumberHashBuilder {
    type Hasher = NumberHasher;
    fn build_hasher(&self) -> NumberHasher {
        NumberHasher(0)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct NumberHasher(u64);

impl NumberHasher {
    #[inline]
    fn mix(x: u64) -> u64 {
        // Folded 64×64→128 multiply by the golden-ratio constant: spreads
        // the entropy of the low digits into both the low bits (bucket) and
        // the high bits (hashbrown's control tag).
        let m = u128::from(x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (m as u64) ^ ((m >> 64) as u64)
    }
}

impl Hasher for NumberHasher {
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = Self::mix(self.0 ^ n);
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = Self::mix(self.0 ^ u64::from(b));
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(pbx: &str, number: &str) -> Route {
        Route {
            pbx: pbx.into(),
            number: Number::parse(number).unwrap(),
            enabled: true,
            forward: Target::Pbx("other".into()),
            on_failure: OnFailure::Hangup,
            comment: None,
        }
    }

    #[test]
    fn lookup_finds_each_number_in_any_written_form() {
        let table = RoutingTable::new(vec![
            route("a", "+74951234567"),
            route("b", "+442079460958"),
        ])
        .unwrap();
        assert_eq!(table.len(), 2);
        let hit = table
            .lookup(&Number::parse("8 (495) 123-45-67").unwrap())
            .unwrap();
        assert_eq!(&*hit.pbx, "a");
        let hit = table
            .lookup(&Number::parse("+44 20 7946 0958").unwrap())
            .unwrap();
        assert_eq!(&*hit.pbx, "b");
        assert!(table
            .lookup(&Number::parse("+74951234568").unwrap())
            .is_none());
    }

    #[test]
    fn duplicate_numbers_are_refused() {
        let err = RoutingTable::new(vec![route("a", "84951234567"), route("b", "+74951234567")])
            .unwrap_err();
        assert_eq!(&*err.first, "a");
        assert_eq!(&*err.second, "b");
    }

    #[test]
    fn many_numbers_all_found() {
        let routes: Vec<Route> = (0..10_000u64)
            .map(|i| route("p", &format!("+7495{:07}", i * 7)))
            .collect();
        let table = RoutingTable::new(routes).unwrap();
        for i in 0..10_000u64 {
            let n = Number::parse(&format!("+7495{:07}", i * 7)).unwrap();
            assert_eq!(table.lookup(&n).map(|r| r.number), Some(n));
            let miss = Number::parse(&format!("+7495{:07}", i * 7 + 1)).unwrap();
            // i*7+1 is never a multiple of 7, so never a key.
            assert!(table.lookup(&miss).is_none());
        }
    }

    #[test]
    fn a_kept_snapshot_survives_a_swap() {
        let routes = Routes::new(RoutingTable::new(vec![route("old", "+74951234567")]).unwrap());
        let n = Number::parse("+74951234567").unwrap();
        let kept = routes.snapshot();
        routes.store(RoutingTable::new(vec![route("new", "+74951234567")]).unwrap());
        assert_eq!(&*kept.lookup(&n).unwrap().pbx, "old");
        assert_eq!(&*routes.load().lookup(&n).unwrap().pbx, "new");
    }
}
