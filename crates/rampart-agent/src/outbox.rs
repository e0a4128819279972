//! The agent's durable on-disk queue of sealed upload batches.
//!
//! Sensors keep producing while the uplink is down, and an agent that loses its
//! queue on a restart or power cut loses exactly the data an operator wants to
//! see after an incident. So every batch is on disk (and fsynced) before
//! [`Outbox::push`] returns, and it stays there until the portal acknowledged
//! it and the sender called [`Outbox::remove`].
//!
//! The outbox only ever holds sealed frames (see `rampart_proto::batch`): it
//! treats them as opaque bytes and never sees plaintext, so the files need no
//! protection beyond ordinary permissions.
//!
//! # Layout
//!
//! One file per batch, named `{priority}-{order:020}-{batch_id}-{size}.batch`:
//!
//! - `priority` is the [`Priority`] number (0 = alarm goes first);
//! - `order` is a monotonic key (unix nanoseconds, bumped past the largest key
//!   in the directory) so that age survives restarts and clock steps backwards;
//! - `batch_id` is the 32-digit hex form of the id, so pushes are idempotent;
//! - `size` is the frame length, so listing the directory is enough to know
//!   the queue order and the byte total without opening or `stat`ing files.
//!
//! The directory is the single source of truth: there is no index file that
//! could disagree with the batches after a crash. Besides batch files it holds
//! `outbox.lock` (see below), `stats.json` (the cumulative dropped counters)
//! and, only while a write is in flight or after a crash, `*.tmp` files.
//!
//! # Concurrency
//!
//! Two processes may share one outbox: the long-running `rampart-agent run`
//! and a one-shot `rampart-agent send`. Every operation except [`Outbox::read`]
//! runs under an exclusive advisory lock on `outbox.lock`, so the byte bound
//! and the idempotency check see a stable directory. The lock is per open
//! file, so two [`Outbox`] handles in one process exclude each other too, and
//! a process that dies releases it.
//!
//! Listing ten thousand files costs milliseconds, too much to pay on every
//! peek and remove while draining a backlog. So each handle keeps an in-memory
//! index of the directory, tagged with a generation number stored in the lock
//! file. Every change to the batch files first writes a fresh random
//! generation (under the lock, before touching any file), so a handle whose
//! tag no longer matches knows another handle changed the directory and lists
//! it again. A process that crashes mid-change has already changed the
//! generation, so nobody trusts an index from before the crash.
//!
//! [`Outbox::read`] takes no lock, so sending never waits for a push's fsync:
//! a batch can be evicted or removed between peek and read, and `read`
//! reports that as `Ok(None)`. Batch files may be removed while a reader has
//! them open; that is fine on Unix, which is where the agent runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rampart_proto::batch::Priority;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Held exclusively around every operation; also holds the generation.
const LOCK_FILE: &str = "outbox.lock";
/// Cumulative dropped counters, rewritten atomically.
const STATS_FILE: &str = "stats.json";
/// Suffix of files being written; they only become visible by renaming.
const TMP_SUFFIX: &str = ".tmp";
/// Suffix of complete batch files.
const BATCH_SUFFIX: &str = ".batch";

/// Errors from the outbox. Each says which file failed and what to check.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(
        "cannot create outbox directory {}: {err}: check that the parent directory exists and is writable by the agent",
        .path.display()
    )]
    CreateDir { path: PathBuf, err: io::Error },
    #[error(
        "cannot lock outbox {}: {err}: check permissions and that the outbox is on a local filesystem that supports file locks",
        .path.display()
    )]
    Lock { path: PathBuf, err: io::Error },
    #[error(
        "cannot list outbox directory {}: {err}: check that it exists and is readable by the agent",
        .path.display()
    )]
    List { path: PathBuf, err: io::Error },
    #[error(
        "cannot write outbox file {}: {err}: check free space and permissions",
        .path.display()
    )]
    Write { path: PathBuf, err: io::Error },
    #[error(
        "cannot read outbox file {}: {err}: check permissions and the health of the disk",
        .path.display()
    )]
    Read { path: PathBuf, err: io::Error },
    #[error(
        "cannot remove outbox file {}: {err}: check permissions on the outbox directory",
        .path.display()
    )]
    Remove { path: PathBuf, err: io::Error },
}

/// A queued batch, as returned by [`Outbox::peek`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub priority: Priority,
    pub batch_id: Uuid,
    /// Frame length in bytes.
    pub size: u64,
    /// Position in the queue: smaller is older.
    order: u64,
}

/// Send order: highest priority (lowest number) first, oldest first.
type SendKey = (Priority, u64, Uuid);

impl Entry {
    /// The file this entry lives in; the only form [`Entry::parse`] accepts.
    fn file_name(&self) -> String {
        format!(
            "{}-{:020}-{}-{}{BATCH_SUFFIX}",
            self.priority as u8,
            self.order,
            self.batch_id.simple(),
            self.size
        )
    }

    /// Parses a batch file name. Only the exact form [`Entry::file_name`]
    /// produces is accepted, so one batch can never hide behind two names.
    /// Checked without allocating: it runs for every file on every listing.
    fn parse(name: &str) -> Option<Entry> {
        let stem = name.strip_suffix(BATCH_SUFFIX)?;
        let mut parts = stem.split('-');
        let (p, order, id, size) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let canonical = parts.next().is_none()
            && p.len() == 1
            && digits(p)
            && order.len() == 20
            && digits(order)
            && id.len() == 32
            && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && digits(size)
            && (size == "0" || !size.starts_with('0'));
        if !canonical {
            return None;
        }
        Some(Entry {
            priority: Priority::from_u8(p.parse().ok()?)?,
            order: order.parse().ok()?,
            batch_id: Uuid::try_parse(id).ok()?,
            size: size.parse().ok()?,
        })
    }

    fn send_key(&self) -> SendKey {
        (self.priority, self.order, self.batch_id)
    }
}

/// What [`Outbox::push`] did with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushStatus {
    /// Written and fsynced.
    Stored,
    /// A batch with this id was already queued; nothing changed.
    AlreadyQueued,
    /// The frame alone is larger than the outbox; dropped and counted.
    TooLarge,
    /// Making room would have meant evicting higher-priority batches; the new
    /// batch was dropped and counted instead.
    NoRoom,
}

/// The result of [`Outbox::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushOutcome {
    pub status: PushStatus,
    /// Older batches deleted to make room for this one (counted as dropped).
    pub evicted_batches: u64,
    pub evicted_bytes: u64,
}

impl PushOutcome {
    /// Whether the batch is now in the outbox (new or already there).
    pub fn stored(&self) -> bool {
        matches!(self.status, PushStatus::Stored | PushStatus::AlreadyQueued)
    }

    fn status(status: PushStatus) -> Self {
        PushOutcome {
            status,
            evicted_batches: 0,
            evicted_bytes: 0,
        }
    }
}

/// A snapshot of the outbox for metrics and `rampart-agent status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Batches queued now.
    pub batches: u64,
    /// Frame bytes queued now.
    pub bytes: u64,
    /// Batches ever dropped (evicted or refused), across restarts.
    pub dropped_batches: u64,
    /// Frame bytes ever dropped, across restarts.
    pub dropped_bytes: u64,
    /// Batches queued now, indexed by `Priority as usize`.
    pub by_priority: [u64; 3],
}

/// The persisted part of [`OutboxStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct Dropped {
    dropped_batches: u64,
    dropped_bytes: u64,
}

/// In-memory copy of the directory listing. Only trusted while
/// `generation` matches the one in the lock file.
#[derive(Debug, Default)]
struct Index {
    /// The on-disk generation this index reflects; `None` means list again.
    generation: Option<u64>,
    queue: BTreeMap<SendKey, u64>,
    ids: HashMap<Uuid, Entry>,
    bytes: u64,
    by_priority: [u64; 3],
    max_order: u64,
}

impl Index {
    fn insert(&mut self, e: Entry) {
        self.bytes = self.bytes.saturating_add(e.size);
        self.by_priority[e.priority as usize] += 1;
        self.max_order = self.max_order.max(e.order);
        self.queue.insert(e.send_key(), e.size);
        self.ids.insert(e.batch_id, e);
    }

    fn remove(&mut self, batch_id: Uuid) -> Option<Entry> {
        let e = self.ids.remove(&batch_id)?;
        self.queue.remove(&e.send_key());
        self.bytes = self.bytes.saturating_sub(e.size);
        let n = &mut self.by_priority[e.priority as usize];
        *n = n.saturating_sub(1);
        Some(e)
    }

    fn first(&self) -> Option<Entry> {
        let (&(priority, order, batch_id), &size) = self.queue.first_key_value()?;
        Some(Entry {
            priority,
            batch_id,
            size,
            order,
        })
    }

    /// Batches that may make room for one of `priority`: lowest priority
    /// first, oldest first within a priority, never anything more important.
    fn eviction_candidates(&self, priority: Priority) -> impl Iterator<Item = &Entry> + '_ {
        Priority::ALL
            .into_iter()
            .filter(move |p| *p >= priority)
            .rev()
            .flat_map(move |p| {
                self.queue
                    .range((p, 0, Uuid::nil())..=(p, u64::MAX, Uuid::max()))
                    .filter_map(|(&(_, _, id), _)| self.ids.get(&id))
            })
    }
}

/// Everything behind the in-process mutex.
#[derive(Debug)]
struct State {
    lock_file: File,
    index: Index,
}

/// A durable, byte-bounded priority queue of sealed frames in one directory.
///
/// Cheap to share: all methods take `&self`, so wrap it in an `Arc`.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    max_bytes: u64,
    /// The mutex serialises threads sharing this handle (a file lock is per
    /// open file, so it would not); the file lock taken inside serialises
    /// other handles and processes.
    state: Mutex<State>,
    /// Names already warned about, so a stray file does not flood the log on
    /// every listing.
    warned: Mutex<HashSet<OsString>>,
}

/// Holds the outbox lock with a fresh index; releases the lock on drop.
struct Locked<'a> {
    state: MutexGuard<'a, State>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Closing the file would release the lock too, but the handle lives on.
        if let Err(err) = self.state.lock_file.unlock() {
            tracing::warn!(%err, "cannot unlock the outbox lock file");
        }
    }
}

impl Outbox {
    /// Opens (creating if needed) the outbox in `dir`, holding at most
    /// `max_bytes` of frames.
    ///
    /// Removes temp files left by a process that crashed mid-write: they were
    /// never renamed into place, so the push that made them never returned
    /// success and nothing is lost.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Outbox, OutboxError> {
        fs::create_dir_all(dir).map_err(|err| OutboxError::CreateDir {
            path: dir.to_path_buf(),
            err,
        })?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|err| OutboxError::Lock {
                path: lock_path,
                err,
            })?;
        let outbox = Outbox {
            dir: dir.to_path_buf(),
            max_bytes,
            state: Mutex::new(State {
                lock_file,
                index: Index::default(),
            }),
            warned: Mutex::default(),
        };
        {
            // Under the lock no other process is mid-write, so every temp
            // file is a crash leftover and not someone's in-flight push.
            let locked = outbox.lock()?;
            outbox.remove_temp_files()?;
            let bytes = locked.state.index.bytes;
            if bytes > max_bytes {
                tracing::warn!(
                    dir = %outbox.dir.display(),
                    bytes,
                    max_bytes,
                    "outbox holds more than its limit; new batches will evict the oldest low-priority ones"
                );
            }
            tracing::debug!(
                dir = %outbox.dir.display(),
                batches = locked.state.index.ids.len(),
                bytes,
                "outbox opened"
            );
        }
        Ok(outbox)
    }

    /// The directory this outbox lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The byte bound given to [`Outbox::open`].
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Queues `frame` durably: when this returns `Ok` with
    /// [`PushOutcome::stored`], the batch survives a crash or power cut.
    ///
    /// If the outbox would exceed `max_bytes`, batches of the same or lower
    /// priority are evicted, lowest priority and oldest first, until it fits.
    /// Higher-priority batches are never evicted for this one: if it cannot
    /// fit without that, it is the new batch that is dropped (and nothing is
    /// evicted in vain). Dropped batches are counted in [`OutboxStats`].
    pub fn push(
        &self,
        priority: Priority,
        batch_id: Uuid,
        frame: &[u8],
    ) -> Result<PushOutcome, OutboxError> {
        let size = u64::try_from(frame.len()).unwrap_or(u64::MAX);
        let mut locked = self.lock()?;

        if size > self.max_bytes {
            tracing::warn!(
                %batch_id,
                priority = priority.as_str(),
                size,
                max_bytes = self.max_bytes,
                "batch is larger than the whole outbox; dropped"
            );
            self.record_dropped(1, size)?;
            return Ok(PushOutcome::status(PushStatus::TooLarge));
        }

        let index = &locked.state.index;
        if index.ids.contains_key(&batch_id) {
            return Ok(PushOutcome::status(PushStatus::AlreadyQueued));
        }

        // Pick victims before touching the disk, so a batch that cannot fit
        // anyway costs nobody else their place.
        let mut victims = Vec::new();
        let room = self.max_bytes - size;
        if index.bytes > room {
            let need = index.bytes - room;
            let mut freed = 0u64;
            for c in index.eviction_candidates(priority) {
                if freed >= need {
                    break;
                }
                freed = freed.saturating_add(c.size);
                victims.push(c.clone());
            }
            if freed < need {
                tracing::warn!(
                    %batch_id,
                    priority = priority.as_str(),
                    size,
                    "outbox is full of higher-priority batches; new batch dropped"
                );
                self.record_dropped(1, size)?;
                return Ok(PushOutcome::status(PushStatus::NoRoom));
            }
        }

        let entry = Entry {
            priority,
            batch_id,
            size,
            order: index.max_order.saturating_add(1).max(now_nanos()),
        };
        let name = entry.file_name();
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));

        // Write and fsync first: if the disk is full we fail here, before
        // evicting anything. Temp files are invisible to every index.
        if let Err(err) = write_synced(&tmp, frame) {
            remove_quietly(&tmp);
            return Err(OutboxError::Write { path: tmp, err });
        }

        let generation = match self.begin_change(&mut locked) {
            Ok(g) => g,
            Err(err) => {
                remove_quietly(&tmp);
                return Err(err);
            }
        };
        let (mut evicted_batches, mut evicted_bytes) = (0u64, 0u64);
        let mut failure = None;
        for v in &victims {
            let vpath = self.dir.join(v.file_name());
            match fs::remove_file(&vpath) {
                Ok(()) => {
                    evicted_batches += 1;
                    evicted_bytes = evicted_bytes.saturating_add(v.size);
                }
                // Deleted behind our back: gone all the same.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    failure = Some(OutboxError::Remove { path: vpath, err });
                    break;
                }
            }
            locked.state.index.remove(v.batch_id);
        }
        if evicted_batches > 0 {
            tracing::warn!(
                %batch_id,
                evicted_batches,
                evicted_bytes,
                "outbox full; evicted the oldest lower-priority batches"
            );
        }

        let stored = match failure {
            Some(err) => Err(err),
            None => fs::rename(&tmp, &path)
                .and_then(|()| sync_dir(&self.dir))
                .map_err(|err| OutboxError::Write {
                    path: path.clone(),
                    err,
                }),
        };
        match stored {
            Ok(()) => {
                locked.state.index.insert(entry);
                locked.state.index.generation = Some(generation);
            }
            // The index stays invalid, so the next operation lists again.
            Err(_) => remove_quietly(&tmp),
        }
        // Count what is gone even if the push itself failed afterwards.
        if evicted_batches > 0 {
            self.record_dropped(evicted_batches, evicted_bytes)?;
        }
        stored?;
        Ok(PushOutcome {
            status: PushStatus::Stored,
            evicted_batches,
            evicted_bytes,
        })
    }

    /// The next batch to send: highest priority first, oldest first within a
    /// priority. `None` when the outbox is empty.
    pub fn peek(&self) -> Result<Option<Entry>, OutboxError> {
        Ok(self.lock()?.state.index.first())
    }

    /// The frame bytes of `entry`.
    ///
    /// `Ok(None)` means the batch is no longer available: it was evicted or
    /// removed since [`Outbox::peek`], or its file was damaged (wrong length)
    /// and has been discarded and counted as dropped. Either way, peek again.
    pub fn read(&self, entry: &Entry) -> Result<Option<Vec<u8>>, OutboxError> {
        let path = self.dir.join(entry.file_name());
        let read_err = |err| OutboxError::Read {
            path: path.clone(),
            err,
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                // Normally another handle's change, which the generation
                // already reports; but if someone deleted the file by hand,
                // only a fresh listing stops peek returning it forever.
                self.state_guard().index.generation = None;
                return Ok(None);
            }
            Err(err) => return Err(read_err(err)),
        };
        // Bound the read by the size in the name, so a damaged file cannot
        // make us allocate more than the batch should hold.
        let mut buf = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
        file.take(entry.size.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(read_err)?;
        if u64::try_from(buf.len()).ok() == Some(entry.size) {
            return Ok(Some(buf));
        }
        self.discard_damaged(entry, buf.len())?;
        Ok(None)
    }

    /// Deletes a batch once the portal acknowledged it. Removing an id that is
    /// not (or no longer) queued is fine: it may have been evicted meanwhile,
    /// or removed by a retry.
    pub fn remove(&self, batch_id: Uuid) -> Result<(), OutboxError> {
        let mut locked = self.lock()?;
        let Some(entry) = locked.state.index.ids.get(&batch_id).cloned() else {
            return Ok(());
        };
        let generation = self.begin_change(&mut locked)?;
        let path = self.dir.join(entry.file_name());
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(OutboxError::Remove { path, err }),
        }
        locked.state.index.remove(batch_id);
        // Without this a crash could resurrect an acked batch; harmless (the
        // portal deduplicates) but wasteful, and cheap to avoid.
        sync_dir(&self.dir).map_err(|err| OutboxError::Write {
            path: self.dir.clone(),
            err,
        })?;
        locked.state.index.generation = Some(generation);
        Ok(())
    }

    /// Current contents and cumulative dropped counters, as one consistent
    /// snapshot (taken under the lock, so never torn by a concurrent push).
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let locked = self.lock()?;
        let index = &locked.state.index;
        let dropped = self.load_dropped()?;
        Ok(OutboxStats {
            batches: u64::try_from(index.ids.len()).unwrap_or(u64::MAX),
            bytes: index.bytes,
            dropped_batches: dropped.dropped_batches,
            dropped_bytes: dropped.dropped_bytes,
            by_priority: index.by_priority,
        })
    }

    fn state_guard(&self) -> MutexGuard<'_, State> {
        // All state that matters is on disk; after a panic elsewhere, just
        // distrust the index.
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut state = poisoned.into_inner();
            state.index.generation = None;
            state
        })
    }

    /// Takes the outbox lock and makes sure the index matches the directory.
    fn lock(&self) -> Result<Locked<'_>, OutboxError> {
        let state = self.state_guard();
        state.lock_file.lock().map_err(|err| self.lock_err(err))?;
        let mut locked = Locked { state };
        let on_disk =
            read_generation(&mut locked.state.lock_file).map_err(|err| self.lock_err(err))?;
        match on_disk {
            Some(g) if locked.state.index.generation == Some(g) => {}
            Some(g) => {
                locked.state.index = self.build_index()?;
                locked.state.index.generation = Some(g);
            }
            // A new (or damaged) lock file: start a generation.
            None => {
                let g = self.begin_change(&mut locked)?;
                locked.state.index = self.build_index()?;
                locked.state.index.generation = Some(g);
            }
        }
        Ok(locked)
    }

    fn lock_err(&self, err: io::Error) -> OutboxError {
        OutboxError::Lock {
            path: self.dir.join(LOCK_FILE),
            err,
        }
    }

    /// Announces a change to the batch files to every other handle. Call
    /// before touching them; store the returned generation in the index once
    /// the index matches the directory again.
    fn begin_change(&self, locked: &mut Locked<'_>) -> Result<u64, OutboxError> {
        // Random rather than incremented, so a recreated lock file can never
        // repeat a generation some handle still trusts.
        let generation = rand::random::<u64>();
        locked.state.index.generation = None;
        write_generation(&mut locked.state.lock_file, generation).map_err(|err| {
            OutboxError::Write {
                path: self.dir.join(LOCK_FILE),
                err,
            }
        })?;
        Ok(generation)
    }

    /// Lists the directory into a fresh index (generation left unset).
    fn build_index(&self) -> Result<Index, OutboxError> {
        let mut entries = self.list()?;
        entries.sort_unstable_by_key(Entry::send_key);
        let mut index = Index::default();
        for e in entries {
            if index.ids.contains_key(&e.batch_id) {
                // Only a copy made by hand can do this; send the first.
                self.warn_ignored(OsString::from(e.file_name()), "duplicate batch id");
                continue;
            }
            index.insert(e);
        }
        Ok(index)
    }

    /// All batch files, in directory order. Anything else is skipped; names
    /// that look like nothing we write are warned about once.
    fn list(&self) -> Result<Vec<Entry>, OutboxError> {
        let list_err = |err| OutboxError::List {
            path: self.dir.clone(),
            err,
        };
        let mut out = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(list_err)? {
            let item = item.map_err(list_err)?;
            let name = item.file_name();
            let Some(name_str) = name.to_str() else {
                self.warn_ignored(name, "name is not utf-8");
                continue;
            };
            if name_str == LOCK_FILE || name_str == STATS_FILE || name_str.ends_with(TMP_SUFFIX) {
                continue;
            }
            let Some(entry) = Entry::parse(name_str) else {
                self.warn_ignored(name, "not an outbox batch file name");
                continue;
            };
            match item.file_type() {
                Ok(t) if t.is_file() => out.push(entry),
                Ok(_) => self.warn_ignored(name, "not a regular file"),
                // Vanished between the listing and now: it is not queued.
                Err(_) => {}
            }
        }
        Ok(out)
    }

    fn warn_ignored(&self, name: OsString, why: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.len() < 1024 && !warned.contains(&name) {
            tracing::warn!(
                dir = %self.dir.display(),
                file = %name.to_string_lossy(),
                why,
                "ignoring unexpected file in the outbox directory; move it elsewhere"
            );
            warned.insert(name);
        }
    }

    /// Deletes `*.tmp` files. Call with the lock held.
    fn remove_temp_files(&self) -> Result<(), OutboxError> {
        let list_err = |err| OutboxError::List {
            path: self.dir.clone(),
            err,
        };
        for item in fs::read_dir(&self.dir).map_err(list_err)? {
            let item = item.map_err(list_err)?;
            let name = item.file_name();
            if !name.to_str().is_some_and(|n| n.ends_with(TMP_SUFFIX)) {
                continue;
            }
            let path = item.path();
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "removed a temp file left by an interrupted write")
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                // Leftovers are invisible to the queue, so this need not stop
                // the agent; a real permission problem will fail the next push.
                Err(err) => {
                    tracing::warn!(file = %path.display(), %err, "cannot remove a leftover temp file")
                }
            }
        }
        Ok(())
    }

    /// Deletes a batch file whose length disagrees with its name, counting it
    /// as dropped. Frames only appear by rename after an fsync, so this means
    /// damage from outside; sending it would only be rejected by the portal,
    /// and keeping it would wedge the head of the queue.
    fn discard_damaged(&self, entry: &Entry, found: usize) -> Result<(), OutboxError> {
        let mut locked = self.lock()?;
        if locked.state.index.ids.get(&entry.batch_id) != Some(entry) {
            return Ok(()); // already gone, or replaced by a fresh push
        }
        let generation = self.begin_change(&mut locked)?;
        let path = self.dir.join(entry.file_name());
        let removed = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(err) if err.kind() == io::ErrorKind::NotFound => false,
            Err(err) => return Err(OutboxError::Remove { path, err }),
        };
        locked.state.index.remove(entry.batch_id);
        locked.state.index.generation = Some(generation);
        if removed {
            tracing::warn!(
                file = %path.display(),
                expected = entry.size,
                found,
                "outbox file has the wrong length; discarded it"
            );
            self.record_dropped(1, entry.size)?;
        }
        Ok(())
    }

    fn stats_path(&self) -> PathBuf {
        self.dir.join(STATS_FILE)
    }

    /// Reads the dropped counters. A missing file means none dropped yet; a
    /// damaged one is reset with a warning rather than blocking the queue
    /// over a metric.
    fn load_dropped(&self) -> Result<Dropped, OutboxError> {
        let path = self.stats_path();
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                tracing::warn!(file = %path.display(), %err, "outbox stats file is damaged; dropped counters restart from zero");
                Dropped::default()
            })),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Dropped::default()),
            Err(err) => Err(OutboxError::Read { path, err }),
        }
    }

    /// Adds to the persisted dropped counters. Call with the lock held: the
    /// read-modify-write must not interleave with another process's.
    fn record_dropped(&self, batches: u64, bytes: u64) -> Result<(), OutboxError> {
        let mut d = self.load_dropped()?;
        d.dropped_batches = d.dropped_batches.saturating_add(batches);
        d.dropped_bytes = d.dropped_bytes.saturating_add(bytes);
        let path = self.stats_path();
        let tmp = self.dir.join(format!("{STATS_FILE}{TMP_SUFFIX}"));
        let json = serde_json::to_vec(&d).map_err(|err| OutboxError::Write {
            path: path.clone(),
            err: io::Error::other(err),
        })?;
        let written = write_synced(&tmp, &json)
            .and_then(|()| fs::rename(&tmp, &path))
            .and_then(|()| sync_dir(&self.dir));
        if let Err(err) = written {
            remove_quietly(&tmp);
            return Err(OutboxError::Write { path, err });
        }
        Ok(())
    }
}

/// The generation in the lock file; `None` if it has none yet. Only read and
/// written under the lock, so it is never torn by a concurrent writer (a
/// crash mid-write leaves a value no index carries, which is just as good).
fn read_generation(file: &mut File) -> io::Result<Option<u64>> {
    let mut buf = [0u8; 8];
    file.seek(SeekFrom::Start(0))?;
    match file.read_exact(&mut buf) {
        Ok(()) => Ok(Some(u64::from_le_bytes(buf))),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(err) => Err(err),
    }
}

/// No fsync: indexes live in memory only, so after a power cut there is none
/// left to invalidate.
fn write_generation(file: &mut File, generation: u64) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&generation.to_le_bytes())
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Creates or truncates `path` with `bytes` and fsyncs it, so that a later
/// rename publishes complete content.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Makes renames and unlinks in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Best-effort cleanup on an error path, where the original error matters more.
fn remove_quietly(path: &Path) {
    if let Err(err) = fs::remove_file(path) {
        if err.kind() != io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), %err, "cannot remove temp file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// Pops everything in send order, returning (priority, id) pairs.
    fn drain(ob: &Outbox) -> Result<Vec<(Priority, Uuid)>, OutboxError> {
        let mut out = Vec::new();
        while let Some(e) = ob.peek()? {
            out.push((e.priority, e.batch_id));
            ob.remove(e.batch_id)?;
        }
        Ok(out)
    }

    fn ids_in_dir(dir: &Path) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|i| Entry::parse(i.file_name().to_str()?))
            .map(|e| e.batch_id)
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn peek_sends_highest_priority_first_then_oldest() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ob = Outbox::open(dir.path(), 1 << 20)?;
        ob.push(Priority::Data, id(1), b"d1")?;
        ob.push(Priority::Health, id(2), b"h1")?;
        ob.push(Priority::Data, id(3), b"d2")?;
        ob.push(Priority::Alarm, id(4), b"a1")?;
        ob.push(Priority::Health, id(5), b"h2")?;
        ob.push(Priority::Alarm, id(6), b"a2")?;
        // Many pushes within the same clock tick must still keep push order.
        for n in 100..150 {
            ob.push(Priority::Data, id(n), b"x")?;
        }

        let head = ob.peek()?.ok_or("empty")?;
        assert_eq!(
            (head.priority, head.batch_id, head.size),
            (Priority::Alarm, id(4), 2)
        );
        assert_eq!(ob.read(&head)?.as_deref(), Some(&b"a1"[..]));

        let mut expected = vec![
            (Priority::Alarm, id(4)),
            (Priority::Alarm, id(6)),
            (Priority::Health, id(2)),
            (Priority::Health, id(5)),
            (Priority::Data, id(1)),
            (Priority::Data, id(3)),
        ];
        expected.extend((100..150).map(|n| (Priority::Data, id(n))));
        assert_eq!(drain(&ob)?, expected);
        assert_eq!(ob.peek()?, None);
        Ok(())
    }

    #[test]
    fn reopen_keeps_batches_order_and_dropped_counters() -> TestResult {
        let dir = tempfile::tempdir()?;
        {
            let ob = Outbox::open(dir.path(), 10)?;
            ob.push(Priority::Data, id(1), b"1111")?;
            ob.push(Priority::Alarm, id(2), b"22")?;
            ob.push(Priority::Data, id(3), b"3333")?;
            // Forces eviction of id(1) (4 bytes) and one oversize drop (11).
            ob.push(Priority::Health, id(4), b"444")?;
            ob.push(Priority::Data, id(5), b"this is too big")?;
        }
        let before = {
            let ob = Outbox::open(dir.path(), 10)?;
            ob.stats()?
        };
        assert_eq!(before.dropped_batches, 2);
        assert_eq!(before.dropped_bytes, 4 + 15);

        let ob = Outbox::open(dir.path(), 10)?;
        let stats = ob.stats()?;
        assert_eq!(stats, before);
        assert_eq!(stats.batches, 3);
        assert_eq!(stats.bytes, 2 + 4 + 3);
        assert_eq!(stats.by_priority, [1, 1, 1]);
        let head = ob.peek()?.ok_or("empty")?;
        assert_eq!(ob.read(&head)?.as_deref(), Some(&b"22"[..]));
        assert_eq!(
            drain(&ob)?,
            vec![
                (Priority::Alarm, id(2)),
                (Priority::Health, id(4)),
                (Priority::Data, id(3)),
            ]
        );

        // Counters are cumulative across handles and restarts.
        ob.push(Priority::Data, id(6), b"way too large!")?;
        drop(ob);
        let stats = Outbox::open(dir.path(), 10)?.stats()?;
        assert_eq!(stats.dropped_batches, 3);
        assert_eq!(stats.dropped_bytes, 4 + 15 + 14);
        Ok(())
    }

    #[test]
    fn eviction_drops_lowest_priority_oldest_first_and_counts_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ob = Outbox::open(dir.path(), 100)?;
        ob.push(Priority::Health, id(1), &[1; 20])?;
        ob.push(Priority::Data, id(2), &[2; 20])?;
        ob.push(Priority::Alarm, id(3), &[3; 20])?;
        ob.push(Priority::Data, id(4), &[4; 20])?;
        ob.push(Priority::Data, id(5), &[5; 20])?;
        assert_eq!(ob.stats()?.bytes, 100);

        // 30 more bytes: the two oldest Data batches (40 bytes) must go.
        let out = ob.push(Priority::Health, id(6), &[6; 30])?;
        assert_eq!(out.status, PushStatus::Stored);
        assert!(out.stored());
        assert_eq!((out.evicted_batches, out.evicted_bytes), (2, 40));
        assert_eq!(ids_in_dir(dir.path()), vec![id(1), id(3), id(5), id(6)]);

        // Next: Data id(5) (20) is the only Data left, then the oldest Health.
        let out = ob.push(Priority::Alarm, id(7), &[7; 40])?;
        assert_eq!((out.evicted_batches, out.evicted_bytes), (2, 40));
        assert_eq!(ids_in_dir(dir.path()), vec![id(3), id(6), id(7)]);

        // Same priority: a newer Data batch displaces an older one.
        let dir2 = tempfile::tempdir()?;
        let ob2 = Outbox::open(dir2.path(), 10)?;
        ob2.push(Priority::Data, id(1), &[0; 5])?;
        ob2.push(Priority::Data, id(2), &[0; 5])?;
        let out = ob2.push(Priority::Data, id(3), &[0; 5])?;
        assert_eq!((out.status, out.evicted_batches), (PushStatus::Stored, 1));
        assert_eq!(
            drain(&ob2)?,
            vec![(Priority::Data, id(2)), (Priority::Data, id(3))]
        );

        let stats = ob.stats()?;
        assert_eq!((stats.dropped_batches, stats.dropped_bytes), (4, 80));
        assert_eq!(stats.bytes, 90);
        assert!(stats.bytes <= ob.max_bytes());
        Ok(())
    }

    #[test]
    fn higher_priority_batch_is_never_evicted_for_a_lower_one() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ob = Outbox::open(dir.path(), 100)?;
        ob.push(Priority::Alarm, id(1), &[1; 40])?;
        ob.push(Priority::Health, id(2), &[2; 40])?;
        ob.push(Priority::Data, id(3), &[3; 10])?;

        // Data needing 30 bytes could only fit by evicting Health or Alarm.
        let out = ob.push(Priority::Data, id(4), &[4; 30])?;
        assert_eq!(out.status, PushStatus::NoRoom);
        assert!(!out.stored());
        // And the one Data batch that could go was not evicted in vain.
        assert_eq!(out.evicted_batches, 0);
        assert_eq!(ids_in_dir(dir.path()), vec![id(1), id(2), id(3)]);
        let stats = ob.stats()?;
        assert_eq!((stats.dropped_batches, stats.dropped_bytes), (1, 30));

        // Health may evict Data and Health but never Alarm.
        let out = ob.push(Priority::Health, id(5), &[5; 70])?;
        assert_eq!(out.status, PushStatus::NoRoom);
        let out = ob.push(Priority::Health, id(6), &[6; 60])?;
        assert_eq!(out.status, PushStatus::Stored);
        assert_eq!((out.evicted_batches, out.evicted_bytes), (2, 50));
        assert_eq!(ids_in_dir(dir.path()), vec![id(1), id(6)]);

        // Alarm may evict anything.
        let out = ob.push(Priority::Alarm, id(7), &[7; 100])?;
        assert_eq!((out.status, out.evicted_batches), (PushStatus::Stored, 2));
        assert_eq!(ids_in_dir(dir.path()), vec![id(7)]);
        Ok(())
    }

    #[test]
    fn oversize_frame_is_dropped_and_counted() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ob = Outbox::open(dir.path(), 64)?;
        ob.push(Priority::Data, id(1), &[0; 10])?;
        let out = ob.push(Priority::Alarm, id(2), &[0; 65])?;
        assert_eq!(out.status, PushStatus::TooLarge);
        assert!(!out.stored());
        assert_eq!(out.evicted_batches, 0);
        // Exactly max_bytes still fits (after evicting the rest).
        let out = ob.push(Priority::Alarm, id(3), &[0; 64])?;
        assert_eq!(out.status, PushStatus::Stored);

        let stats = ob.stats()?;
        assert_eq!(stats.batches, 1);
        assert_eq!(stats.dropped_batches, 2);
        assert_eq!(stats.dropped_bytes, 65 + 10);
        assert_eq!(ids_in_dir(dir.path()), vec![id(3)]);
        Ok(())
    }

    #[test]
    fn pushing_the_same_batch_id_twice_is_a_no_op() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ob = Outbox::open(dir.path(), 100)?;
        let first = ob.push(Priority::Data, id(1), b"first")?;
        assert_eq!(first.status, PushStatus::Stored);
        // Even with another priority or body: the id is what the portal
        // deduplicates on, so the outbox does too.
        let again = ob.push(Priority::Alarm, id(1), b"second")?;
        assert_eq!(again.status, PushStatus::AlreadyQueued);
        assert!(again.stored());

        let stats = ob.stats()?;
        assert_eq!(
            (stats.batches, stats.bytes, stats.dropped_batches),
            (1, 5, 0)
        );
        let e = ob.peek()?.ok_or("empty")?;
        assert_eq!(e.priority, Priority::Data);
        assert_eq!(ob.read(&e)?.as_deref(), Some(&b"first"[..]));
        Ok(())
    }

    #[test]
    fn remove_deletes_the_batch_and_absent_ids_are_fine() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ob = Outbox::open(dir.path(), 100)?;
        ob.push(Priority::Alarm, id(1), b"a")?;
        ob.push(Priority::Data, id(2), b"dd")?;
        ob.remove(id(1))?;
        ob.remove(id(1))?;
        ob.remove(id(99))?;
        let stats = ob.stats()?;
        assert_eq!(
            (stats.batches, stats.bytes, stats.by_priority),
            (1, 2, [0, 0, 1])
        );
        // Removal is not a drop.
        assert_eq!(stats.dropped_batches, 0);
        assert_eq!(ob.peek()?.map(|e| e.batch_id), Some(id(2)));
        // A removed id may be queued again later.
        assert_eq!(
            ob.push(Priority::Alarm, id(1), b"a")?.status,
            PushStatus::Stored
        );
        assert_eq!(ob.peek()?.map(|e| e.batch_id), Some(id(1)));
        Ok(())
    }

    #[test]
    fn read_returns_none_when_the_batch_vanished() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ob = Outbox::open(dir.path(), 100)?;
        let other = Outbox::open(dir.path(), 100)?;
        ob.push(Priority::Data, id(1), b"x")?;
        let e = ob.peek()?.ok_or("empty")?;
        other.remove(id(1))?;
        assert_eq!(ob.read(&e)?, None);
        // Evicted by another handle between peek and read.
        ob.push(Priority::Data, id(2), &[0; 60])?;
        let e = ob.peek()?.ok_or("empty")?;
        other.push(Priority::Data, id(3), &[0; 60])?;
        assert_eq!(ob.read(&e)?, None);
        assert_eq!(ob.peek()?.map(|e| e.batch_id), Some(id(3)));
        Ok(())
    }

    #[test]
    fn damaged_batch_file_is_discarded_and_counted_instead_of_wedging_the_queue() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ob = Outbox::open(dir.path(), 100)?;
        ob.push(Priority::Alarm, id(1), b"0123456789")?;
        ob.push(Priority::Data, id(2), b"ok")?;
        let e = ob.peek()?.ok_or("empty")?;
        fs::write(dir.path().join(e.file_name()), b"01234")?;
        assert_eq!(ob.read(&e)?, None);
        let next = ob.peek()?.ok_or("empty")?;
        assert_eq!(next.batch_id, id(2));
        assert_eq!(ob.read(&next)?.as_deref(), Some(&b"ok"[..]));
        let stats = ob.stats()?;
        assert_eq!(
            (stats.batches, stats.dropped_batches, stats.dropped_bytes),
            (1, 1, 10)
        );
        Ok(())
    }

    #[test]
    fn crash_leftover_temp_files_are_cleaned_on_open() -> TestResult {
        let dir = tempfile::tempdir()?;
        {
            let ob = Outbox::open(dir.path(), 100)?;
            ob.push(Priority::Data, id(1), b"kept")?;
        }
        // What a crash between write and rename leaves behind.
        let stray = Entry {
            priority: Priority::Alarm,
            batch_id: id(2),
            size: 4,
            order: 1,
        };
        let stray_tmp = dir
            .path()
            .join(format!("{}{TMP_SUFFIX}", stray.file_name()));
        fs::write(&stray_tmp, b"half")?;
        let stats_tmp = dir.path().join(format!("{STATS_FILE}{TMP_SUFFIX}"));
        fs::write(&stats_tmp, b"{\"dropp")?;
        // Invisible to the queue even before cleanup.
        let ob = Outbox::open(dir.path(), 100)?;
        assert!(!stray_tmp.exists());
        assert!(!stats_tmp.exists());
        assert_eq!(ids_in_dir(dir.path()), vec![id(1)]);
        let stats = ob.stats()?;
        assert_eq!((stats.batches, stats.bytes), (1, 4));
        Ok(())
    }

    #[test]
    fn garbage_files_in_the_dir_are_ignored() -> TestResult {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        fs::create_dir_all(d)?;
        let junk = [
            "README",
            "notes.batch",
            "9-00000000000000000001-00000000000000000000000000000001-1.batch",
            "0-1-00000000000000000000000000000001-1.batch",
            "0-00000000000000000001-not-a-uuid-1.batch",
            "0-00000000000000000001-00000000000000000000000000000001-x.batch",
            "0-00000000000000000001-00000000000000000000000000000001-+1.batch",
            "0-00000000000000000001-00000000000000000000000000000001-1-2.batch",
            "0-00000000000000000001-0000000000000000000000000000000A-1.batch",
            "0-99999999999999999999-00000000000000000000000000000001-1.batch",
        ];
        for name in junk {
            fs::write(d.join(name), b"junk")?;
        }
        // A directory with a valid-looking name is not a batch either.
        let fake = Entry {
            priority: Priority::Alarm,
            batch_id: id(7),
            size: 0,
            order: 1,
        };
        fs::create_dir(d.join(fake.file_name()))?;
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            fs::write(d.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), b"junk")?;
        }
        fs::write(d.join(STATS_FILE), b"not json")?;

        let ob = Outbox::open(d, 1000)?;
        assert_eq!(ob.peek()?, None);
        let stats = ob.stats()?;
        assert_eq!(stats, OutboxStats::default());
        ob.push(Priority::Data, id(1), b"real")?;
        assert_eq!(ob.peek()?.map(|e| e.batch_id), Some(id(1)));
        assert_eq!(ob.stats()?.bytes, 4);
        // The junk is left alone for a human to look at.
        for name in junk {
            assert!(d.join(name).exists(), "{name}");
        }
        Ok(())
    }

    #[test]
    fn file_names_round_trip() {
        let e = Entry {
            priority: Priority::Health,
            batch_id: Uuid::new_v4(),
            size: 12345,
            order: 1_700_000_000_000_000_000,
        };
        assert_eq!(Entry::parse(&e.file_name()), Some(e.clone()));
        let max = Entry {
            priority: Priority::Data,
            batch_id: Uuid::max(),
            size: u64::MAX,
            order: u64::MAX,
        };
        assert_eq!(Entry::parse(&max.file_name()), Some(max));
    }

    #[test]
    fn two_handles_pushing_concurrently_stay_consistent_and_bounded() -> TestResult {
        const MAX: u64 = 8 * 1024;
        const PER_THREAD: u128 = 200;
        let dir = tempfile::tempdir()?;
        let handles = [
            Arc::new(Outbox::open(dir.path(), MAX)?),
            Arc::new(Outbox::open(dir.path(), MAX)?),
        ];
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

        // Watches the bound from a third handle while the pushers run.
        let watcher = {
            let ob = Outbox::open(dir.path(), MAX)?;
            let done = Arc::clone(&done);
            std::thread::spawn(move || -> Result<u64, OutboxError> {
                let mut max_seen = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let s = ob.stats()?;
                    assert!(s.bytes <= MAX, "{} bytes queued", s.bytes);
                    max_seen = max_seen.max(s.bytes);
                }
                Ok(max_seen)
            })
        };

        let pushers: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(t, ob)| {
                let ob = Arc::clone(ob);
                std::thread::spawn(move || -> Result<(u64, u64, u64, u64, u64), OutboxError> {
                    let (mut stored, mut stored_bytes) = (0, 0);
                    let (mut evicted, mut evicted_bytes, mut refused) = (0, 0, 0);
                    for n in 0..PER_THREAD {
                        let priority = Priority::ALL[(n % 3) as usize];
                        let size = 100 + (n as usize * 37 + t * 11) % 400;
                        let batch = id(((t as u128) << 64) | n);
                        let out = ob.push(priority, batch, &vec![t as u8; size])?;
                        assert!(out.status != PushStatus::AlreadyQueued);
                        evicted += out.evicted_batches;
                        evicted_bytes += out.evicted_bytes;
                        if out.status == PushStatus::Stored {
                            stored += 1;
                            stored_bytes += size as u64;
                        } else {
                            refused += 1;
                        }
                        // Pushing again from the other side is still a no-op
                        // (or a refusal if it was evicted meanwhile).
                        if n % 50 == 0 {
                            let again = ob.push(priority, batch, &vec![0; size])?;
                            assert!(
                                again.evicted_batches == 0 || again.status == PushStatus::Stored
                            );
                            if again.status == PushStatus::Stored {
                                stored += 1;
                                stored_bytes += size as u64;
                                evicted += again.evicted_batches;
                                evicted_bytes += again.evicted_bytes;
                            } else if again.status != PushStatus::AlreadyQueued {
                                refused += 1;
                            }
                        }
                    }
                    Ok((stored, stored_bytes, evicted, evicted_bytes, refused))
                })
            })
            .collect();

        let mut totals = (0u64, 0u64, 0u64, 0u64, 0u64);
        for p in pushers {
            let (s, sb, e, eb, r) = p.join().map_err(|_| "pusher panicked")??;
            totals = (
                totals.0 + s,
                totals.1 + sb,
                totals.2 + e,
                totals.3 + eb,
                totals.4 + r,
            );
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let max_seen = watcher.join().map_err(|_| "watcher panicked")??;
        assert!(max_seen <= MAX);

        let (stored, stored_bytes, evicted, evicted_bytes, refused) = totals;
        let stats = handles[0].stats()?;
        assert_eq!(stats, handles[1].stats()?);
        assert!(stats.bytes <= MAX);
        assert!(evicted > 0, "the test should exercise eviction");
        assert_eq!(stats.batches, stored - evicted);
        assert_eq!(stats.bytes, stored_bytes - evicted_bytes);
        assert_eq!(stats.by_priority.iter().sum::<u64>(), stats.batches);
        assert_eq!(stats.dropped_batches, evicted + refused);
        assert_eq!(ids_in_dir(dir.path()).len() as u64, stats.batches);
        // No temp files left behind.
        let leftovers = fs::read_dir(dir.path())?
            .flatten()
            .filter(|i| i.file_name().to_string_lossy().ends_with(TMP_SUFFIX))
            .count();
        assert_eq!(leftovers, 0);
        Ok(())
    }

    #[test]
    fn errors_say_what_to_do() {
        let err = OutboxError::Write {
            path: PathBuf::from("/var/lib/rampart/outbox/x.batch"),
            err: io::Error::other("disk full"),
        };
        let msg = err.to_string();
        assert!(msg.starts_with(
            "cannot write outbox file /var/lib/rampart/outbox/x.batch: disk full: check"
        ));
        assert!(!msg.ends_with('.'));
    }

    #[test]
    fn changes_by_another_handle_are_seen_despite_the_cached_index() -> TestResult {
        let dir = tempfile::tempdir()?;
        let a = Outbox::open(dir.path(), 100)?;
        let b = Outbox::open(dir.path(), 100)?;
        a.push(Priority::Data, id(1), &[1; 40])?;
        assert_eq!(a.peek()?.map(|e| e.batch_id), Some(id(1)));

        // b pushes an alarm: a must send it first.
        b.push(Priority::Alarm, id(2), &[2; 40])?;
        assert_eq!(a.peek()?.map(|e| e.batch_id), Some(id(2)));
        // a's idempotency check sees b's batch.
        assert_eq!(
            a.push(Priority::Alarm, id(2), b"x")?.status,
            PushStatus::AlreadyQueued
        );
        // a's byte bound counts b's batch: this must evict id(1), not overflow.
        let out = a.push(Priority::Health, id(3), &[3; 40])?;
        assert_eq!((out.status, out.evicted_batches), (PushStatus::Stored, 1));
        // b sees a's eviction and push.
        assert_eq!(b.stats()?.bytes, 80);
        b.remove(id(2))?;
        assert_eq!(a.peek()?.map(|e| e.batch_id), Some(id(3)));
        assert_eq!(a.stats()?, b.stats()?);
        Ok(())
    }

    #[test]
    fn batch_deleted_by_hand_is_skipped_once_read_reports_it_gone() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ob = Outbox::open(dir.path(), 100)?;
        ob.push(Priority::Alarm, id(1), b"a")?;
        ob.push(Priority::Data, id(2), b"d")?;
        let head = ob.peek()?.ok_or("empty")?;
        fs::remove_file(dir.path().join(head.file_name()))?;
        assert_eq!(ob.read(&head)?, None);
        let next = ob.peek()?.ok_or("empty")?;
        assert_eq!(next.batch_id, id(2));
        assert_eq!(ob.read(&next)?.as_deref(), Some(&b"d"[..]));
        assert_eq!(ob.stats()?.batches, 1);
        Ok(())
    }

    #[test]
    fn cached_index_matches_a_fresh_listing_after_mixed_operations() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ob = Outbox::open(dir.path(), 2_000)?;
        for n in 0..300u128 {
            let priority = Priority::ALL[(n * 7 % 3) as usize];
            ob.push(priority, id(n % 250), &vec![0; (n as usize * 53) % 300])?;
            if n % 4 == 0 {
                ob.remove(id(n / 2))?;
            }
            if n % 9 == 0 {
                if let Some(e) = ob.peek()? {
                    ob.read(&e)?;
                    ob.remove(e.batch_id)?;
                }
            }
        }
        let fresh = Outbox::open(dir.path(), 2_000)?;
        assert_eq!(ob.stats()?, fresh.stats()?);
        assert!(ob.stats()?.bytes <= 2_000);
        let mut on_disk = fresh.list()?;
        on_disk.sort_by_key(Entry::send_key);
        assert!(!on_disk.is_empty());
        let mut from_cache = Vec::new();
        while let Some(e) = ob.peek()? {
            from_cache.push(e.clone());
            ob.remove(e.batch_id)?;
        }
        assert_eq!(from_cache, on_disk);
        Ok(())
    }
}
