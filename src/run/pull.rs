//! Copying source files to local disk: each under a temporary name, hashed
//! (SHA-256) as it arrives, made durable (fsync or one `syncfs` for a
//! batch) and only then renamed into place. Nothing here knows the ledger:
//! the caller records a file once [`pull`] hands it back whole.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::transport::{self, Transport, TransportError, retry};

/// What came of copying a source file to local disk.
#[derive(Debug)]
pub enum Fetched {
    /// On local disk, fsynced, under its own name: the path and SHA-256.
    Whole(PathBuf, String),
    /// It changed while it was read (still being written); nothing kept.
    Changed(String),
    /// It was listed but is gone.
    Gone,
    /// The source refused to give it (as a file another account left
    /// unreadable): it stays there, and the other files go on.
    Refused(String),
}

/// Copy source files into `dir`: each under a temporary name (`.NAME.part`),
/// hashed as it arrives; then all of them made durable at once, renamed
/// into place, and the folder synced. A dropped connection is retried from
/// the start of that file under the transport's limits; a half-read file
/// never gets its real name. Fails when the retries are spent.
///
/// Durable at once: one `syncfs` for the batch instead of an fsync per file
/// (two journal commits each) takes 5,000 small files from ~400/s to
/// thousands per second; the guarantee is the same, since nothing is
/// renamed or recorded before the sync.
pub fn pull(transport: &mut dyn Transport, names: &[String], dir: &Path) -> Result<Vec<Fetched>> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let limits = transport.limits();
    let mut out = Vec::with_capacity(names.len());
    let mut written = Vec::new();
    for name in names {
        let name = transport::check_name(name)?;
        let tmp = dir.join(format!(".{name}.part"));
        // Local disk errors stop the run; the source's refusal of one file
        // stops only that file.
        let mut local_error = false;
        let fetched = retry(&limits, &format!("fetch {name}"), || {
            let file = File::create(&tmp).map_err(|e| {
                local_error = true;
                TransportError::Permanent { what: format!("cannot create {}", tmp.display()), cause: e }
            })?;
            let mut w = HashingWriter::new(file);
            transport.fetch(name, &mut w)?;
            w.finish().map_err(|e| {
                local_error = true;
                TransportError::Permanent { what: format!("cannot write {}", tmp.display()), cause: e }
            })
        });
        match fetched {
            Ok((file, sha256)) => {
                written.push(file);
                out.push(Fetched::Whole(tmp, sha256));
            }
            Err(TransportError::Changed { why, .. }) => {
                let _ = fs::remove_file(&tmp);
                out.push(Fetched::Changed(why));
            }
            Err(TransportError::NotFound { .. }) => {
                let _ = fs::remove_file(&tmp);
                out.push(Fetched::Gone);
            }
            Err(e @ TransportError::Permanent { .. }) if !local_error => {
                let _ = fs::remove_file(&tmp);
                out.push(Fetched::Refused(e.to_string()));
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                // The copies fetched before it are not kept: they are
                // fetched again next run.
                for f in &out {
                    if let Fetched::Whole(part, _) = f {
                        let _ = fs::remove_file(part);
                    }
                }
                return Err(e).with_context(|| format!("cannot fetch {name} from {}", transport.describe()));
            }
        }
    }
    if written.is_empty() {
        return Ok(out);
    }
    sync_files(dir, &written).with_context(|| format!("cannot sync files in {}", dir.display()))?;
    drop(written);
    for (f, name) in out.iter_mut().zip(names) {
        if let Fetched::Whole(path, _) = f {
            let real = dir.join(name);
            fs::rename(&*path, &real).with_context(|| format!("cannot rename {}", path.display()))?;
            *path = real;
        }
    }
    File::open(dir)?.sync_all()?;
    Ok(out)
}

/// Make written files durable: one fsync for a single file, else one
/// `syncfs` of the filesystem (Linux), else an fsync each.
fn sync_files(dir: &Path, files: &[File]) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if files.len() > 1 {
        use std::os::fd::AsRawFd;
        let d = File::open(dir)?;
        // SAFETY: a plain syscall on a descriptor we own for its duration.
        if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
            return Ok(());
        }
    }
    let _ = dir;
    for f in files {
        f.sync_all()?;
    }
    Ok(())
}

/// Where a fetched file is written: its `.NAME.part`, hashed (SHA-256) on
/// the way. The first [`PIPE_AFTER`] bytes are written and hashed in line,
/// as small files come whole and a thread would cost more than it saves.
/// Past that, the bytes go in [`PIPE_BUF`] blocks over a bounded channel
/// to a thread that hashes and writes them ([`BlockWriter`]), so the disk
/// and the hash run beside the network instead of in turn with it.
///
/// [`HashingWriter::finish`] hands back the file and its hash only once
/// every byte is written; dropping the writer without it (a failed
/// attempt) still waits for the thread, so a retry that truncates the
/// same file never races a write left over from the attempt before.
struct HashingWriter {
    state: WriterState,
    written: u64,
}

enum WriterState {
    Inline {
        file: File,
        hash: Sha256,
    },
    Piped(Pipe),
    /// Between states, or after an error ended the thread.
    Done,
}

struct Pipe {
    /// Filled by `write`, sent when full.
    block: Block,
    full: Option<std::sync::mpsc::SyncSender<Block>>,
    /// Emptied blocks back from the thread, to fill again.
    empty: std::sync::mpsc::Receiver<Block>,
    thread: Option<std::thread::JoinHandle<io::Result<(File, Sha256)>>>,
}

/// Bytes written in line before a file gets a writer thread.
const PIPE_AFTER: u64 = 4 << 20;
/// Bytes per hand-over to the writer thread.
const PIPE_BUF: usize = 1 << 20;
/// Full blocks waiting for the writer thread, at most.
const PIPE_DEPTH: usize = 8;
/// What direct I/O wants aligned: file offsets, lengths and memory.
const DIRECT_ALIGN: usize = 4096;

/// Page-aligned memory (an anonymous map), so the writer thread can hand
/// it to the disk directly.
struct Block {
    mem: memmap2::MmapMut,
    len: usize,
    /// Bytes this block takes: less than its size for the first one, so
    /// that every later block starts at a multiple of [`PIPE_BUF`] in the
    /// file.
    cap: usize,
}

impl Block {
    fn new() -> io::Result<Block> {
        Ok(Block { mem: memmap2::MmapMut::map_anon(PIPE_BUF)?, len: 0, cap: PIPE_BUF })
    }

    fn bytes(&self) -> &[u8] {
        &self.mem[..self.len]
    }
}

impl HashingWriter {
    fn new(file: File) -> HashingWriter {
        HashingWriter { state: WriterState::Inline { file, hash: Sha256::new() }, written: 0 }
    }

    /// Move the file and the hash to a writer thread.
    fn start_pipe(&mut self) -> io::Result<()> {
        let WriterState::Inline { file, hash } = std::mem::replace(&mut self.state, WriterState::Done) else {
            return Ok(());
        };
        let mut block = Block::new()?;
        block.cap = PIPE_BUF - (self.written % PIPE_BUF as u64) as usize;
        let (full, full_rx) = std::sync::mpsc::sync_channel::<Block>(PIPE_DEPTH);
        let (empty_tx, empty) = std::sync::mpsc::channel();
        let mut w = BlockWriter::new(file, self.written);
        let thread = std::thread::Builder::new().name("ferry-write".into()).spawn(move || {
            let mut hash = hash;
            for mut block in full_rx {
                hash.update(block.bytes());
                w.write(block.bytes())?;
                block.len = 0;
                block.cap = PIPE_BUF;
                let _ = empty_tx.send(block);
            }
            Ok((w.into_file()?, hash))
        })?;
        self.state = WriterState::Piped(Pipe { block, full: Some(full), empty, thread: Some(thread) });
        Ok(())
    }

    /// Everything written, the file and its SHA-256 in hex.
    fn finish(mut self) -> io::Result<(File, String)> {
        match std::mem::replace(&mut self.state, WriterState::Done) {
            WriterState::Inline { file, hash } => Ok((file, hex(&hash.finalize()))),
            WriterState::Piped(mut pipe) => {
                pipe.send()?;
                let (file, hash) = pipe.join()?;
                Ok((file, hex(&hash.finalize())))
            }
            WriterState::Done => Err(io::Error::other("the writer thread stopped")),
        }
    }
}

impl Pipe {
    /// Hand the filled block to the thread and take an empty one.
    fn send(&mut self) -> io::Result<()> {
        if self.block.len == 0 {
            return Ok(());
        }
        let next = match self.empty.try_recv() {
            Ok(b) => b,
            Err(_) => Block::new()?,
        };
        let full = std::mem::replace(&mut self.block, next);
        let sent = self.full.as_ref().is_some_and(|tx| tx.send(full).is_ok());
        if sent {
            return Ok(());
        }
        // The thread stopped on an error: that error is the answer.
        Err(match self.join() {
            Err(e) => e,
            Ok(_) => io::Error::other("the writer thread stopped"),
        })
    }

    /// Close the channel and wait for the thread to write what it holds.
    fn join(&mut self) -> io::Result<(File, Sha256)> {
        self.full = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the writer thread panicked")),
            None => Err(io::Error::other("the writer thread stopped")),
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// Writes a large file's blocks with direct I/O where it can (Linux
/// `O_DIRECT`): the bytes go from the block to the disk without a copy
/// into the page cache, which was the largest single cost of a 1 GiB pull
/// after the network, and the final fsync has little left to write. What
/// is not aligned (the start after the in-line part, the tail) is written
/// through the page cache as before, and a filesystem without direct I/O
/// (tmpfs) gets plain writes throughout. The fsync before the rename is
/// unchanged: direct I/O skips the page cache, not the device's cache.
struct BlockWriter {
    file: File,
    /// The file offset of the next byte.
    pos: u64,
    /// Direct I/O is on for the file now.
    direct: bool,
    /// Direct I/O may still be tried (not refused by the filesystem).
    can_direct: bool,
}

impl BlockWriter {
    fn new(file: File, pos: u64) -> BlockWriter {
        BlockWriter { file, pos, direct: false, can_direct: cfg!(target_os = "linux") }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let aligned = rest.len() / DIRECT_ALIGN * DIRECT_ALIGN;
            let use_direct = self.can_direct
                && aligned > 0
                && self.pos.is_multiple_of(DIRECT_ALIGN as u64)
                && (rest.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN);
            let use_direct = use_direct && self.set_direct(true);
            if !use_direct {
                self.set_direct(false);
            }
            let part = if use_direct { &rest[..aligned] } else { rest };
            match self.file.write(part) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pos += n as u64;
                    rest = &rest[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Refused for this file or filesystem: plain writes from here.
                Err(e) if use_direct && e.raw_os_error() == Some(libc::EINVAL) => self.can_direct = false,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Turn direct I/O on or off; false if it is not on afterwards.
    #[cfg(target_os = "linux")]
    fn set_direct(&mut self, on: bool) -> bool {
        use std::os::fd::AsRawFd;
        if self.direct == on {
            return on;
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, with flags from F_GETFL.
        let ok = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            let flags = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
            flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags) == 0
        };
        if ok {
            self.direct = on;
        } else if on {
            self.can_direct = false;
        }
        self.direct
    }

    #[cfg(not(target_os = "linux"))]
    fn set_direct(&mut self, _on: bool) -> bool {
        false
    }

    fn into_file(mut self) -> io::Result<File> {
        if self.set_direct(false) {
            return Err(io::Error::other("cannot turn direct I/O off"));
        }
        Ok(self.file)
    }
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Test hooks: a crash, or a pause, part-way through a download.
        crate::store::failpoint("fetch-write");
        crate::store::pausepoint("fetch-write");
        if self.written >= PIPE_AFTER && matches!(self.state, WriterState::Inline { .. }) {
            self.start_pipe()?;
        }
        let n = match &mut self.state {
            WriterState::Inline { file, hash } => {
                let n = file.write(buf)?;
                hash.update(&buf[..n]);
                n
            }
            WriterState::Piped(pipe) => {
                let b = &mut pipe.block;
                let n = buf.len().min(b.cap - b.len);
                b.mem[b.len..b.len + n].copy_from_slice(&buf[..n]);
                b.len += n;
                if b.len == b.cap {
                    pipe.send()?;
                }
                n
            }
            WriterState::Done => return Err(io::Error::other("the writer thread stopped")),
        };
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.state {
            WriterState::Inline { file, .. } => file.flush(),
            _ => Ok(()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large file goes through the writer thread (and direct I/O where
    /// the filesystem has it): every byte lands in order, and the hash is
    /// the file's, whatever the sizes of the writes.
    #[test]
    fn hashing_writer_keeps_every_byte_of_a_large_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; (PIPE_AFTER as usize) + 3 * PIPE_BUF + 12_345];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        // Odd write sizes, as the network hands them over; one past a block.
        for sizes in [&[261_120usize, 7, 65_536, 1][..], &[PIPE_BUF + 1][..], &[data.len()][..]] {
            let path = dir.path().join("f.part");
            let mut w = HashingWriter::new(File::create(&path).unwrap());
            let mut at = 0;
            for &n in sizes.iter().cycle() {
                if at == data.len() {
                    break;
                }
                let end = (at + n).min(data.len());
                w.write_all(&data[at..end]).unwrap();
                at = end;
            }
            let (file, sha256) = w.finish().unwrap();
            file.sync_all().unwrap();
            drop(file);
            assert_eq!(sha256, hex(&Sha256::digest(&data)), "{sizes:?}");
            assert!(fs::read(&path).unwrap() == data, "{sizes:?}: contents differ");
        }
    }
}
