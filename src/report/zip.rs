//! One zip of a run's report folder, for the email: every file in the
//! folder, deflated, and with a password each one AES-256 encrypted (WinZip
//! AE-2, which 7-Zip and WinZip open; Windows Explorer's own zip support
//! does not).

use std::io::{Cursor, Write};
use std::path::Path;

use anyhow::{Context, Result};
use zip::write::SimpleFileOptions;
use zip::{AesMode, CompressionMethod, ZipWriter};

/// The folder's plain files (sorted by name) zipped in memory.
pub fn zip_folder(dir: &Path, password: Option<&str>) -> Result<Vec<u8>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let plain =
        SimpleFileOptions::default().compression_method(CompressionMethod::Deflated).large_file(false);
    for name in &names {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let options = match password {
            Some(p) => plain.with_aes_encryption(AesMode::Aes256, p),
            None => plain,
        };
        let options = options.large_file(bytes.len() as u64 >= u32::MAX as u64);
        zip.start_file(name.as_str(), options).with_context(|| format!("cannot add {name} to the zip"))?;
        zip.write_all(&bytes).with_context(|| format!("cannot add {name} to the zip"))?;
    }
    Ok(zip.finish().context("cannot finish the zip")?.into_inner())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn zip_round_trip_plain_and_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("matched.csv"), "ehr_id,practice_mrn\r\nE1,M1\r\n").unwrap();
        std::fs::write(dir.path().join("summary.csv"), "scope,metric,value\r\n").unwrap();
        std::fs::write(dir.path().join(".hidden"), "x").unwrap();

        let bytes = zip_folder(dir.path(), None).unwrap();
        let mut z = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        assert_eq!(z.len(), 2);
        let mut s = String::new();
        z.by_name("matched.csv").unwrap().read_to_string(&mut s).unwrap();
        assert!(s.contains("E1,M1"));

        let bytes = zip_folder(dir.path(), Some("correct horse")).unwrap();
        // The patient rows are not readable in the encrypted bytes.
        assert!(!bytes.windows(5).any(|w| w == b"E1,M1"));
        let mut z = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        assert!(z.by_name_decrypt("matched.csv", b"wrong").is_err());
        let mut s = String::new();
        z.by_name_decrypt("matched.csv", b"correct horse").unwrap().read_to_string(&mut s).unwrap();
        assert!(s.contains("E1,M1"));
    }
}
