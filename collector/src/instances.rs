//! The first invocation of an execution environment is a cold start, even
//! when nothing else says so: Cloud Run functions, Azure Functions and many
//! OpenTelemetry instrumentations name their instance (`faas.instance`,
//! `service.instance.id`) but set no `faas.coldstart`. [`Instances`]
//! remembers which instances of which function have been seen.
//!
//! Invariants (what makes the flag the same after a restart):
//! - An entry keeps the receive time of the request that first showed the
//!   instance. Decoding that request again (WAL replay) finds the entry with
//!   the same receive time and marks the same invocation cold again; any
//!   later request finds an earlier time and marks nothing.
//! - The map is saved (`DATA_DIR/instances.json`, written atomically) by each
//!   flush *before* its checkpoint, so the saved map covers every request up
//!   to the checkpoint; the WAL replays the rest in order. A flush that
//!   cannot save the map fails before its checkpoint (its files are removed
//!   and its rows stay buffered), so it retires no segment the map needs.
//! - Bounded: at most [`MAX_ENTRIES`] of at most [`MAX_KEY_BYTES`]; entries not seen for [`FORGET_AFTER`]
//!   are dropped when saving (such an instance is long gone). When the cap
//!   is reached the least recently seen go first.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Instances remembered at most.
pub const MAX_ENTRIES: usize = 200_000;

/// Longest function + instance name remembered: ids are short (a Lambda
/// log stream name is ~60 bytes); longer ones are not tracked, so hostile
/// names cannot grow the map beyond ~`MAX_ENTRIES` × this.
pub const MAX_KEY_BYTES: usize = 512;

/// An instance not seen for this long is forgotten (µs): a week.
pub const FORGET_AFTER: i64 = 7 * 24 * 3_600_000_000;

pub const FILE: &str = "instances.json";

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct Seen {
    /// Receive time of the request that first showed the instance.
    first: i64,
    /// Receive time of the latest request that showed it.
    last: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    /// `[function, instance, first, last]`.
    instances: Vec<(String, String, i64, i64)>,
}

/// The instances seen, by function.
#[derive(Debug, Default)]
pub struct Instances {
    seen: Mutex<HashMap<(String, String), Seen>>,
    /// An instance was added since the last save.
    added: std::sync::atomic::AtomicBool,
    /// Where the map is saved; `None` keeps it in memory only.
    path: Option<PathBuf>,
}

impl Instances {
    /// Loads the saved map of `data_dir`; a missing file is an empty map, an
    /// unreadable one too (with a warning: at worst an instance's next
    /// invocation counts as its first).
    pub fn load(data_dir: &Path, save: bool) -> Self {
        let path = data_dir.join(FILE);
        let mut seen = HashMap::new();
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Saved>(&bytes) {
                Ok(saved) => {
                    for (function, instance, first, last) in saved.instances {
                        seen.insert((function, instance), Seen { first, last });
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "instance map unreadable; starting empty")
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "instance map unreadable; starting empty")
            }
        }
        Instances {
            seen: Mutex::new(seen),
            added: Default::default(),
            path: save.then_some(path),
        }
    }

    /// Records that the request received at `received_at` shows `instance`
    /// of `function`; true when that request is the first to show it.
    pub fn first_seen_in(&self, function: &str, instance: &str, received_at: i64) -> bool {
        if function.len() + instance.len() > MAX_KEY_BYTES {
            return false;
        }
        let mut seen = self.seen.lock();
        let key = (function.to_string(), instance.to_string());
        match seen.get_mut(&key) {
            Some(s) => {
                s.last = s.last.max(received_at);
                s.first == received_at
            }
            None => {
                if seen.len() >= MAX_ENTRIES {
                    evict_oldest(&mut seen, MAX_ENTRIES / 10);
                }
                seen.insert(
                    key,
                    Seen {
                        first: received_at,
                        last: received_at,
                    },
                );
                self.added.store(true, std::sync::atomic::Ordering::Release);
                true
            }
        }
    }

    pub fn len(&self) -> usize {
        self.seen.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets instances not seen since `now - FORGET_AFTER` and writes the
    /// map atomically (temp file, fsync, rename, directory fsync) — only
    /// when an instance was added since the last save: the saved map must
    /// hold every first sighting, while `last` only decides forgetting.
    pub fn save(&self, now: i64) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.added.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return Ok(());
        }
        let saved = {
            let mut seen = self.seen.lock();
            seen.retain(|_, s| s.last >= now - FORGET_AFTER);
            Saved {
                instances: seen
                    .iter()
                    .map(|((f, i), s)| (f.clone(), i.clone(), s.first, s.last))
                    .collect(),
            }
        };
        let written = write_atomically(path, &saved);
        if written.is_err() {
            // Try again at the next flush.
            self.added.store(true, std::sync::atomic::Ordering::Release);
        }
        written
    }
}

fn write_atomically(path: &Path, saved: &Saved) -> io::Result<()> {
    let bytes = serde_json::to_vec(saved).map_err(io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        crate::wal::sync_dir(dir)?;
    }
    Ok(())
}

/// Drops the `n` least recently seen entries.
fn evict_oldest(seen: &mut HashMap<(String, String), Seen>, n: usize) {
    let mut lasts: Vec<i64> = seen.values().map(|s| s.last).collect();
    if n == 0 || lasts.is_empty() {
        return;
    }
    let k = n.min(lasts.len()) - 1;
    let (_, cut, _) = lasts.select_nth_unstable(k);
    let cut = *cut;
    let mut left = n;
    seen.retain(|_, s| {
        if left > 0 && s.last <= cut {
            left -= 1;
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_request_of_an_instance_is_first_again_on_replay_only() {
        let m = Instances::default();
        assert!(m.first_seen_in("f", "i-1", 100));
        assert!(!m.first_seen_in("f", "i-1", 200));
        // Replaying the first request (same receive time) marks it again.
        assert!(m.first_seen_in("f", "i-1", 100));
        // Another function's instance of the same name is its own.
        assert!(m.first_seen_in("g", "i-1", 200));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn saved_maps_load_back_and_forget_old_instances() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Instances::load(dir.path(), true);
        assert!(m.first_seen_in("f", "old", 1));
        assert!(m.first_seen_in("f", "new", FORGET_AFTER + 10));
        m.save(FORGET_AFTER + 10).expect("save");
        let back = Instances::load(dir.path(), true);
        assert_eq!(back.len(), 1);
        assert!(!back.first_seen_in("f", "new", FORGET_AFTER + 20));
        assert!(back.first_seen_in("f", "new", FORGET_AFTER + 10));
        assert!(back.first_seen_in("f", "old", FORGET_AFTER + 20));

        // A corrupt file is an empty map, not a failed start.
        fs::write(dir.path().join(FILE), b"{not json").expect("write");
        assert!(Instances::load(dir.path(), true).is_empty());
        // In memory: saving writes nothing.
        let dir2 = tempfile::tempdir().expect("tempdir");
        let m = Instances::load(dir2.path(), false);
        m.first_seen_in("f", "i", 1);
        m.save(2).expect("no-op");
        assert!(!dir2.path().join(FILE).exists());
        // Nothing added since the last save: no write (flushes of data
        // without instances do not touch the file).
        let m = Instances::load(dir2.path(), true);
        m.save(3).expect("nothing to save");
        assert!(!dir2.path().join(FILE).exists());
    }

    #[test]
    fn the_map_is_bounded() {
        let m = Instances::default();
        for i in 0..(MAX_ENTRIES + 5) {
            m.first_seen_in("f", &i.to_string(), i as i64);
        }
        assert!(m.len() <= MAX_ENTRIES);
        // The most recent stay; the oldest went first.
        assert!(!m.first_seen_in("f", &(MAX_ENTRIES + 4).to_string(), 0));
        assert!(m.first_seen_in("f", "0", 1));
        // Names too long to be real ids are not tracked.
        let long = "x".repeat(MAX_KEY_BYTES);
        assert!(!m.first_seen_in("f", &long, 1));
        assert!(!m.first_seen_in("f", &long, 1));
    }
}
