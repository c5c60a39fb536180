//! A folder on this machine. This is the practice-hosted SFTP method as
//! ferry sees it: the EHR logs in to our SSH server and drops files into a
//! folder that fills up while we read it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::{Entry, Transport, TransportError};

pub struct LocalTransport {
    dir: PathBuf,
}

impl LocalTransport {
    pub fn new(dir: &Path) -> LocalTransport {
        LocalTransport { dir: dir.to_path_buf() }
    }

    fn path(&self, name: &str) -> Result<PathBuf, TransportError> {
        Ok(self.dir.join(super::check_name(name)?))
    }
}

fn classify(what: String, source: io::Error) -> TransportError {
    match source.kind() {
        io::ErrorKind::NotFound => TransportError::NotFound { what },
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            TransportError::Temporary { what, cause: source }
        }
        _ => TransportError::Permanent { what, cause: source },
    }
}

impl Transport for LocalTransport {
    fn describe(&self) -> String {
        format!("local folder {}", self.dir.display())
    }

    fn list(&mut self) -> Result<Vec<Entry>, TransportError> {
        let what = || self.dir.display().to_string();
        let mut out = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(|e| classify(what(), e))? {
            let item = item.map_err(|e| classify(what(), e))?;
            // symlink_metadata: a link is not a plain file, so it is never
            // followed out of the folder.
            let meta = match item.path().symlink_metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // taken meanwhile
                Err(e) => return Err(classify(item.path().display().to_string(), e)),
            };
            if !meta.is_file() {
                continue;
            }
            let name = item.file_name().to_string_lossy().into_owned();
            let mtime = meta.modified().map_err(|e| classify(name.clone(), e))?;
            out.push(Entry { name, size: meta.len(), mtime });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn fetch(&mut self, name: &str, out: &mut dyn Write) -> Result<u64, TransportError> {
        let path = self.path(name)?;
        let mut f = File::open(&path).map_err(|e| classify(path.display().to_string(), e))?;
        io::copy(&mut f, out).map_err(|e| classify(path.display().to_string(), e))
    }

    fn rename(&mut self, from: &str, to_dir: &str, as_name: &str) -> Result<(), TransportError> {
        let src = self.path(from)?;
        super::check_name(as_name)?;
        let dir = self.dir.join(to_dir);
        fs::create_dir_all(&dir).map_err(|e| classify(dir.display().to_string(), e))?;
        let dest = dir.join(as_name);
        if dest.exists() {
            return Err(TransportError::Exists { what: dest.display().to_string() });
        }
        match fs::rename(&src, &dest) {
            Ok(()) => {}
            // An archive on another filesystem: copy durably, then remove.
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                let tmp = dir.join(format!(".{as_name}.part"));
                fs::copy(&src, &tmp)
                    .and_then(|_| File::open(&tmp)?.sync_all())
                    .and_then(|()| fs::rename(&tmp, &dest))
                    .map_err(|e| classify(dest.display().to_string(), e))?;
                fs::remove_file(&src).map_err(|e| classify(src.display().to_string(), e))?;
            }
            Err(e) => return Err(classify(src.display().to_string(), e)),
        }
        // The rename is durable only once the folders are synced.
        for d in [&self.dir, &dir] {
            File::open(d).and_then(|f| f.sync_all()).map_err(|e| classify(d.display().to_string(), e))?;
        }
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<(), TransportError> {
        let path = self.path(name)?;
        fs::remove_file(&path).map_err(|e| classify(path.display().to_string(), e))
    }

    fn put(&mut self, name: &str, data: &mut dyn Read, size: u64) -> Result<u64, TransportError> {
        let dest = self.path(name)?;
        let tmp = self.dir.join(super::part_name(name));
        let what = || dest.display().to_string();
        let written = (|| {
            let mut f = File::create(&tmp)?;
            if let Some(mode) = crate::handed_over_mode() {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(fs::Permissions::from_mode(mode))?;
            }
            let n = io::copy(data, &mut f)?;
            f.sync_all()?;
            Ok(n)
        })()
        .map_err(|e| classify(what(), e));
        let written = match written {
            Ok(n) if n == size => n,
            Ok(n) => {
                let _ = fs::remove_file(&tmp);
                return Err(TransportError::Temporary {
                    what: what(),
                    cause: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("wrote {n} bytes, expected {size}"),
                    ),
                });
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        fs::rename(&tmp, &dest).map_err(|e| classify(what(), e))?;
        File::open(&self.dir).and_then(|f| f.sync_all()).map_err(|e| classify(what(), e))?;
        Ok(written)
    }
}
