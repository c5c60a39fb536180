//! `tune_memory` and `map_file` in a process of their own (they change the
//! whole process), with the allocator the `ferry` binary uses.

use std::io::Write;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Each map of /proc/self/smaps: its first line and its fields.
fn maps() -> Vec<(String, Vec<String>)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            out.push((line.to_string(), Vec::new()));
        } else if let Some((_, fields)) = out.last_mut() {
            fields.push(line.to_string());
        }
    }
    out
}

fn field<'a>(fields: &'a [String], name: &str) -> Option<&'a str> {
    fields.iter().find_map(|f| f.strip_prefix(name)).map(str::trim)
}

#[test]
fn the_heap_never_takes_huge_pages_and_a_mapped_file_asks_for_them() {
    ferry::tune_memory();
    // Memory from mimalloc's arenas, beyond its first one (1 GiB).
    let blocks: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; 32 << 20]).collect();
    assert_eq!(blocks.iter().map(|b| b[b.len() - 1] as usize).sum::<usize>(), (0..40).sum::<usize>());

    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&vec![b'x'; 4 << 20]).unwrap();
    // SAFETY: the test's own file, not written while mapped.
    let map = unsafe { ferry::map_file(file.as_file()).unwrap() };
    assert_eq!(map[map.len() - 1], b'x');

    let maps = maps();
    let anonymous: Vec<_> =
        maps.iter().filter(|(head, _)| head.split_whitespace().nth(4) == Some("0")).collect();
    assert!(!anonymous.is_empty());
    for (head, fields) in &anonymous {
        assert_eq!(field(fields, "THPeligible:"), Some("0"), "anonymous map may take huge pages: {head}");
    }
    if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
        return; // a kernel without THP refuses the advice
    }
    let path = file.path().to_str().unwrap();
    let (_, fields) = maps.iter().find(|(head, _)| head.ends_with(path)).expect("the file's map");
    let flags = field(fields, "VmFlags:").unwrap();
    assert!(flags.split_whitespace().any(|f| f == "hg"), "no MADV_HUGEPAGE on the file's map: {flags}");
}
