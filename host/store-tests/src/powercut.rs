//! A simulated power cut. [`PowerCut`] is a [`WriteTap`]: it records every write, length
//! change and sync of the store's files, and every new directory entry and directory sync. At
//! the cut (an operation chosen in advance, or [`PowerCut::cut_now`]) it refuses every later
//! write, as a disk without power would. [`PowerCut::crash`] then rebuilds each file as a disk
//! could have left it: everything synced, plus an arbitrary subset of what was only written,
//! with writes torn at sector boundaries; a file whose directory entry was never synced may be
//! gone altogether. Reopening the store on those files is the test.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use eshost_store::tap::WriteTap;

/// The unit a disk writes whole: a write is torn only between sectors.
pub const SECTOR: u64 = 512;

/// What the cut leaves of the writes that were not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survivors {
    /// Nothing: only what was synced.
    None,
    /// Everything that was written (the cut came just after the page cache was flushed).
    All,
    /// Each write whole, dropped, or torn into a random subset of its sectors.
    Random,
}

/// A small deterministic generator (splitmix64), so that a failing run is repeated by its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// True with probability one half.
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// The seed in `ESHOST_POWERCUT_SEED`, or one from the clock (print it: it repeats a run).
pub fn seed_from_env() -> u64 {
    std::env::var("ESHOST_POWERCUT_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64
        })
}

/// Where a power-cut test keeps its files: a memory file system where there is one (the
/// recorder is the disk, so the real syncs need not wait for one).
pub fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// A fresh directory under [`scratch_root`].
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(scratch_root()).expect("a scratch directory")
}

#[derive(Debug)]
enum Change {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct FileRecord {
    /// The file as it is on the platters: everything synced.
    durable: Vec<u8>,
    /// What was written since, in order.
    pending: Vec<Change>,
}

#[derive(Debug)]
struct State {
    files: HashMap<PathBuf, FileRecord>,
    /// Files created since their directory was last synced.
    unsynced_entries: Vec<PathBuf>,
    operations: u64,
    cut_at: u64,
    cut: bool,
}

/// The recording tap; see the module.
#[derive(Debug)]
pub struct PowerCut {
    state: Mutex<State>,
}

impl PowerCut {
    /// A recorder whose power fails at its `cut_at`-th operation (1 = the first);
    /// `u64::MAX`: only when told.
    pub fn new(cut_at: u64) -> Arc<PowerCut> {
        Arc::new(PowerCut {
            state: Mutex::new(State {
                files: HashMap::new(),
                unsynced_entries: Vec::new(),
                operations: 0,
                cut_at: cut_at.max(1),
                cut: false,
            }),
        })
    }

    /// Cut the power now, if it has not failed yet.
    pub fn cut_now(&self) {
        self.lock().cut = true;
    }

    /// Whether the power has failed.
    pub fn is_cut(&self) -> bool {
        self.lock().cut
    }

    /// How many operations were recorded (the cut's included).
    pub fn operations(&self) -> u64 {
        self.lock().operations
    }

    /// Rewrite every file the recorder saw as the cut left it, choosing the survivors of
    /// unsynced writes with `rng`. Call after the store is closed (the power is cut first, so
    /// the close writes nothing).
    pub fn crash(&self, survivors: Survivors, rng: &mut Rng) -> io::Result<()> {
        let mut state = self.lock();
        state.cut = true;
        for (path, record) in &mut state.files {
            let mut image = std::mem::take(&mut record.durable);
            for change in record.pending.drain(..) {
                let keep = match survivors {
                    Survivors::None => Keep::Nothing,
                    Survivors::All => Keep::Whole,
                    Survivors::Random => match rng.below(3) {
                        0 => Keep::Nothing,
                        1 => Keep::Whole,
                        _ => Keep::SomeSectors,
                    },
                };
                apply(&mut image, &change, keep, rng);
            }
            std::fs::write(path, &image)?;
        }
        for path in std::mem::take(&mut state.unsynced_entries) {
            let vanishes = match survivors {
                Survivors::None => true,
                Survivors::All => false,
                Survivors::Random => rng.coin(),
            };
            if vanishes {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone, Copy)]
enum Keep {
    Nothing,
    Whole,
    SomeSectors,
}

fn apply(image: &mut Vec<u8>, change: &Change, keep: Keep, rng: &mut Rng) {
    match (change, keep) {
        (_, Keep::Nothing) => {}
        (Change::SetLen(len), _) => image.resize(*len as usize, 0),
        (Change::Write { offset, data }, Keep::Whole) => write_at(image, *offset, data),
        (Change::Write { offset, data }, Keep::SomeSectors) => {
            let end = offset + data.len() as u64;
            let mut at = *offset;
            while at < end {
                let sector_end = ((at / SECTOR + 1) * SECTOR).min(end);
                if rng.coin() {
                    let from = (at - offset) as usize;
                    let to = (sector_end - offset) as usize;
                    write_at(image, at, &data[from..to]);
                }
                at = sector_end;
            }
        }
    }
}

fn write_at(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset as usize..end].copy_from_slice(data);
}

impl State {
    /// Count an operation; an error once the power has failed.
    fn operate(&mut self) -> io::Result<()> {
        self.operations += 1;
        if self.operations >= self.cut_at {
            self.cut = true;
        }
        if self.cut {
            return Err(io::Error::other("simulated power cut: the disk is gone"));
        }
        Ok(())
    }

    /// The record of `path`, starting from what the file holds now (it was last left durable).
    fn file(&mut self, path: &Path) -> io::Result<&mut FileRecord> {
        if !self.files.contains_key(path) {
            let durable = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(error) => return Err(error),
            };
            self.files.insert(
                path.to_owned(),
                FileRecord {
                    durable,
                    pending: Vec::new(),
                },
            );
        }
        Ok(self.files.get_mut(path).expect("inserted above"))
    }
}

impl WriteTap for PowerCut {
    fn write(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        state.operate()?;
        state.file(path)?.pending.push(Change::Write {
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }

    fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        state.operate()?;
        state.file(path)?.pending.push(Change::SetLen(len));
        Ok(())
    }

    fn sync(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.operate()?;
        let record = state.file(path)?;
        let mut image = std::mem::take(&mut record.durable);
        let mut rng = Rng::new(0);
        for change in record.pending.drain(..) {
            apply(&mut image, &change, Keep::Whole, &mut rng);
        }
        record.durable = image;
        Ok(())
    }

    fn created(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        // Recorded even when refused: the entry exists in the directory either way.
        state.files.insert(path.to_owned(), FileRecord::default());
        state.unsynced_entries.push(path.to_owned());
        state.operate()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.operate()?;
        state
            .unsynced_entries
            .retain(|entry| entry.parent() != Some(dir));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_keeps_what_was_synced_and_refuses_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, b"old").unwrap();
        let cut = PowerCut::new(4);
        cut.write(&path, 0, b"new").unwrap();
        cut.sync(&path).unwrap();
        cut.write(&path, 3, b" unsynced").unwrap();
        assert!(
            cut.write(&path, 0, b"refused").is_err(),
            "the 4th operation"
        );
        assert!(cut.sync(&path).is_err(), "and every one after it");
        cut.crash(Survivors::None, &mut Rng::new(1)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn all_survivors_keep_every_write_and_an_unsynced_entry_can_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept");
        let cut = PowerCut::new(u64::MAX);
        std::fs::write(&kept, b"").unwrap();
        cut.created(&kept).unwrap();
        cut.write(&kept, 0, b"abc").unwrap();
        cut.set_len(&kept, 2).unwrap();
        cut.cut_now();
        cut.crash(Survivors::All, &mut Rng::new(1)).unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"ab");

        let gone = dir.path().join("gone");
        let cut = PowerCut::new(u64::MAX);
        std::fs::write(&gone, b"").unwrap();
        cut.created(&gone).unwrap();
        cut.write(&gone, 0, b"abc").unwrap();
        cut.sync(&gone).unwrap();
        cut.crash(Survivors::None, &mut Rng::new(1)).unwrap();
        assert!(!gone.exists(), "its directory was never synced");
    }

    #[test]
    fn torn_writes_keep_whole_sectors_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, vec![0u8; 4 * SECTOR as usize]).unwrap();
        let mut rng = Rng::new(7);
        for _ in 0..20 {
            let cut = PowerCut::new(u64::MAX);
            cut.write(&path, 0, &vec![1u8; 4 * SECTOR as usize])
                .unwrap();
            cut.crash(Survivors::Random, &mut rng).unwrap();
            let image = std::fs::read(&path).unwrap();
            for sector in image.chunks(SECTOR as usize) {
                assert!(
                    sector.iter().all(|b| *b == sector[0]),
                    "a sector is written whole or not at all"
                );
            }
            std::fs::write(&path, vec![0u8; 4 * SECTOR as usize]).unwrap();
        }
    }
}
