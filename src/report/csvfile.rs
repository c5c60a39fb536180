//! The one place report CSVs are built, so every file makes the same
//! choices: UTF-8 with a byte-order mark (Excel otherwise reads it as the
//! local code page and mangles "José"), CRLF line ends, every field quoted
//! only when needed, and cells that a spreadsheet would run as a formula
//! defused.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

pub struct CsvFile {
    inner: csv::Writer<BufWriter<File>>,
    path: std::path::PathBuf,
}

pub fn writer(path: &Path) -> Result<CsvFile> {
    let mut file =
        BufWriter::new(File::create(path).with_context(|| format!("cannot create {}", path.display()))?);
    file.write_all(b"\xEF\xBB\xBF")?;
    let inner = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(file);
    Ok(CsvFile { inner, path: path.to_path_buf() })
}

/// A cell a spreadsheet would run as a formula ([`crate::model::formula_like`]):
/// prefix an apostrophe (OWASP's advice).
fn defuse(cell: &str) -> std::borrow::Cow<'_, str> {
    if crate::model::formula_like(cell) { format!("'{cell}").into() } else { cell.into() }
}

impl CsvFile {
    pub fn row<'a, I: IntoIterator<Item = &'a str>>(&mut self, cells: I) -> Result<()> {
        self.inner
            .write_record(cells.into_iter().map(|c| defuse(c).into_owned()))
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Flush and sync: a report is complete on disk before its folder is renamed.
    pub fn finish(self) -> Result<()> {
        let path = self.path;
        let buf = self
            .inner
            .into_inner()
            .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error()))?;
        let file = buf
            .into_inner()
            .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error()))?;
        file.sync_all().with_context(|| format!("cannot sync {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::defuse;

    #[test]
    fn formulas_are_defused_data_is_not() {
        assert_eq!(defuse("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(defuse("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(defuse("-2+3"), "'-2+3");
        assert_eq!(defuse("+16175550142"), "+16175550142");
        assert_eq!(defuse("-12.5"), "-12.5");
        assert_eq!(defuse("Smith"), "Smith");
        assert_eq!(defuse(""), "");
        assert_eq!(defuse(" =1+1"), "' =1+1");
        assert_eq!(defuse("\n@x"), "'\n@x");
        assert_eq!(defuse("＝1+1"), "'＝1+1");
        assert_eq!(defuse(" Smith"), " Smith");
    }
}
