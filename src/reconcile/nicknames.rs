//! Placeholder until the nickname table lands (branch `gen`).

pub fn are_nicknames(a: &str, b: &str) -> bool {
    const PAIRS: &[(&str, &str)] = &[("WILLIAM", "BILL"), ("ROBERT", "BOB"), ("ELIZABETH", "LIZ")];
    PAIRS.iter().any(|&(x, y)| (a == x && b == y) || (a == y && b == x))
}
