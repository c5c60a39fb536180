//! Common US given-name nicknames: which formal names "BILL" may stand for,
//! and whether two given names can belong to the same person that way.
//!
//! Names are the upper-case keys the matcher compares (see
//! `crate::flatfile::name_key`); this module does no folding of its own, so a
//! caller passes "BILL", not "Bill". It knows nothing about surnames, other
//! languages' diminutives, or spelling variants (Jon/John, Catherine/Katherine
//! appear only where one is commonly a short form of the other).

use std::collections::HashMap;
use std::sync::LazyLock;

/// Formal name -> its common nicknames, sorted by formal name (a test checks
/// it). A nickname may belong to several formal names ("ALEX" to Alexander,
/// Alexandra, Alexis); [`formal_names`] inverts the table.
const NICKNAMES: &[(&str, &[&str])] = &[
    ("ABIGAIL", &["ABBY", "ABBIE"]),
    ("ABRAHAM", &["ABE"]),
    ("ALAN", &["AL"]),
    ("ALBERT", &["AL", "BERT"]),
    ("ALEXANDER", &["ALEX", "ALEC"]),
    ("ALEXANDRA", &["ALEX", "LEXI"]),
    ("ALEXIS", &["ALEX", "LEXI"]),
    ("ALFRED", &["AL", "FRED"]),
    ("ALLISON", &["ALLIE"]),
    ("AMANDA", &["MANDY"]),
    ("AMELIA", &["AMY"]),
    ("ANDREA", &["ANDY"]),
    ("ANDREW", &["ANDY", "DREW"]),
    ("ANGELA", &["ANGIE"]),
    ("ANNE", &["ANNIE", "NAN", "NANCY"]),
    ("ANTHONY", &["TONY"]),
    ("ANTONIO", &["TONY", "TONIO"]),
    ("ARTHUR", &["ART", "ARTIE"]),
    ("BARBARA", &["BARB"]),
    ("BARTHOLOMEW", &["BART"]),
    ("BEATRICE", &["BEA"]),
    ("BENJAMIN", &["BEN", "BENNY"]),
    ("BERNARD", &["BERNIE"]),
    ("BEVERLY", &["BEV"]),
    ("BRADLEY", &["BRAD"]),
    ("CALVIN", &["CAL"]),
    ("CAMERON", &["CAM"]),
    ("CAROLINE", &["CARRIE"]),
    ("CATHERINE", &["CATHY", "KATE", "KATIE"]),
    ("CHARLES", &["CHARLIE", "CHUCK"]),
    ("CHARLOTTE", &["CHARLIE"]),
    ("CHRISTIAN", &["CHRIS"]),
    ("CHRISTINA", &["CHRIS", "TINA"]),
    ("CHRISTINE", &["CHRIS", "TINA"]),
    ("CHRISTOPHER", &["CHRIS"]),
    ("CLIFFORD", &["CLIFF"]),
    ("CONSTANCE", &["CONNIE"]),
    ("CYNTHIA", &["CINDY"]),
    ("DANIEL", &["DAN", "DANNY"]),
    ("DANIELLE", &["DANI", "ELLIE"]),
    ("DAVID", &["DAVE"]),
    ("DEBORAH", &["DEB", "DEBBIE"]),
    ("DOLORES", &["LOLA"]),
    ("DONALD", &["DON", "DONNIE"]),
    ("DOROTHY", &["DOTTIE"]),
    ("DOUGLAS", &["DOUG"]),
    ("EDWARD", &["ED", "EDDIE", "TED", "TEDDY"]),
    ("ELEANOR", &["ELLIE", "NELL", "NORA"]),
    ("ELIZABETH", &["LIZ", "BETH", "BETTY", "BETSY", "ELIZA", "LIBBY", "LISA"]),
    ("EMILY", &["EMMY"]),
    ("ERNEST", &["ERNIE"]),
    ("EUGENE", &["GENE"]),
    ("FLORENCE", &["FLO"]),
    ("FRANCES", &["FRAN", "FRANKIE"]),
    ("FRANCIS", &["FRANK", "FRANKIE"]),
    ("FRANKLIN", &["FRANK"]),
    ("FREDERICK", &["FRED", "FREDDIE"]),
    ("GABRIEL", &["GABE"]),
    ("GABRIELLE", &["GABBY"]),
    ("GERALD", &["JERRY", "GERRY"]),
    ("GERTRUDE", &["TRUDY"]),
    ("GREGORY", &["GREG"]),
    ("HAROLD", &["HAL", "HARRY"]),
    ("HARRISON", &["HARRY"]),
    ("HELEN", &["NELL", "NELLIE"]),
    ("HENRY", &["HANK", "HARRY"]),
    ("HERBERT", &["HERB"]),
    ("ISABEL", &["BELLA", "IZZY"]),
    ("ISABELLA", &["BELLA", "IZZY"]),
    ("JACOB", &["JAKE", "COBY"]),
    ("JACQUELINE", &["JACKIE"]),
    ("JAMES", &["JIM", "JIMMY", "JAMIE"]),
    ("JANET", &["JAN"]),
    ("JEFFREY", &["JEFF"]),
    ("JENNIFER", &["JEN", "JENNY"]),
    ("JEREMIAH", &["JERRY"]),
    ("JEROME", &["JERRY"]),
    ("JESSICA", &["JESS", "JESSIE"]),
    ("JOANNA", &["JO"]),
    ("JOHN", &["JACK", "JOHNNY", "JON"]),
    ("JONATHAN", &["JON", "JONNY", "NATE"]),
    ("JOSEPH", &["JOE", "JOEY"]),
    ("JOSEPHINE", &["JO", "JOSIE"]),
    ("JOSHUA", &["JOSH"]),
    ("JUDITH", &["JUDY"]),
    ("JULIA", &["JULIE"]),
    ("KATHERINE", &["KATE", "KATHY", "KATIE", "KAY"]),
    ("KATHLEEN", &["KATHY", "KATE", "KATIE", "KAY"]),
    ("KENNETH", &["KEN", "KENNY"]),
    ("KIMBERLY", &["KIM", "KIMMY"]),
    ("LAWRENCE", &["LARRY"]),
    ("LEONARD", &["LEO", "LEN", "LENNY"]),
    ("LEONARDO", &["LEO"]),
    ("LOUIS", &["LOU", "LOUIE"]),
    ("LOUISE", &["LOU"]),
    ("MADELINE", &["MADDIE"]),
    ("MARGARET", &["MAGGIE", "PEGGY", "MEG", "MARGE", "MARGIE"]),
    ("MARIE", &["MIMI"]),
    ("MARILYN", &["LYNN"]),
    ("MARJORIE", &["MARGE", "MARGIE"]),
    ("MARTHA", &["MARTY", "MATTIE"]),
    ("MARTIN", &["MARTY"]),
    ("MARY", &["MOLLY", "POLLY"]),
    ("MATILDA", &["TILLY", "MATTIE"]),
    ("MATTHEW", &["MATT"]),
    ("MELISSA", &["MEL", "MISSY"]),
    ("MICHAEL", &["MIKE", "MIKEY", "MICKEY"]),
    ("MICHELLE", &["SHELLY"]),
    ("MILDRED", &["MILLIE"]),
    ("MIRIAM", &["MIMI"]),
    ("NANCY", &["NAN"]),
    ("NATALIE", &["NAT"]),
    ("NATHAN", &["NATE", "NAT"]),
    ("NATHANIEL", &["NATE", "NAT", "NATHAN"]),
    ("NICHOLAS", &["NICK", "NICKY"]),
    ("NICOLE", &["NIKKI", "NICKY"]),
    ("OLIVER", &["OLLIE"]),
    ("OLIVIA", &["LIV"]),
    ("PAMELA", &["PAM"]),
    ("PATRICIA", &["PAT", "PATTY", "TRICIA"]),
    ("PATRICK", &["PAT"]),
    ("PENELOPE", &["PENNY"]),
    ("PETER", &["PETE"]),
    ("PHILIP", &["PHIL"]),
    ("PHILLIP", &["PHIL"]),
    ("PRISCILLA", &["CILLA"]),
    ("RANDALL", &["RANDY"]),
    ("RAYMOND", &["RAY"]),
    ("REBECCA", &["BECKY", "BECCA"]),
    ("RICHARD", &["RICH", "RICK", "RICKY", "DICK"]),
    ("ROBERT", &["BOB", "ROB", "BOBBY", "ROBBIE"]),
    ("RODNEY", &["ROD"]),
    ("RONALD", &["RON", "RONNIE"]),
    ("ROSALIND", &["ROSA", "ROZ"]),
    ("ROSEMARY", &["ROSE", "ROSIE"]),
    ("RUSSELL", &["RUSS"]),
    ("SAMANTHA", &["SAM", "SAMMY"]),
    ("SAMUEL", &["SAM", "SAMMY"]),
    ("SANDRA", &["SANDY"]),
    ("SARAH", &["SALLY", "SADIE"]),
    ("SOPHIA", &["SOPHIE"]),
    ("STANLEY", &["STAN"]),
    ("STEPHANIE", &["STEPH"]),
    ("STEPHEN", &["STEVE"]),
    ("STEVEN", &["STEVE"]),
    ("SUSAN", &["SUE", "SUSIE"]),
    ("SUZANNE", &["SUE", "SUSIE"]),
    ("TABITHA", &["TABBY"]),
    ("TERESA", &["TERRY", "TESS", "TERRI"]),
    ("THEODORE", &["TED", "TEDDY", "THEO"]),
    ("THERESA", &["TERRY", "TESS", "TERRI"]),
    ("THOMAS", &["TOM", "TOMMY"]),
    ("TIMOTHY", &["TIM", "TIMMY"]),
    ("VALERIE", &["VAL"]),
    ("VICTORIA", &["VICKY", "TORI"]),
    ("VINCENT", &["VINCE", "VINNY"]),
    ("VIRGINIA", &["GINNY"]),
    ("WALTER", &["WALT"]),
    ("WILLIAM", &["BILL", "WILL", "BILLY", "LIAM", "WILLIE"]),
    ("ZACHARY", &["ZACH", "ZACK"]),
];

/// Nickname -> the formal names it may stand for, built once from [`NICKNAMES`].
static FORMAL: LazyLock<HashMap<&'static str, Vec<&'static str>>> = LazyLock::new(|| {
    let mut map: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
    for &(formal, nicks) in NICKNAMES {
        for &nick in nicks {
            map.entry(nick).or_default().push(formal);
        }
    }
    map
});

/// The formal names a given name may stand for ("BILL" -> ["WILLIAM"]); the
/// name itself is not included. Empty when none.
///
/// Some nicknames are formal names too ("NANCY" for Anne, "NATHAN" for
/// Nathaniel), so a name can have both nicknames and formal names.
pub fn formal_names(key: &str) -> &'static [&'static str] {
    // `FORMAL` lives for the whole program, so a slice into it is 'static.
    let map: &'static HashMap<&'static str, Vec<&'static str>> = &FORMAL;
    map.get(key).map_or(&[], Vec::as_slice)
}

/// The nicknames of a formal name ("WILLIAM" -> ["BILL", "WILL", ...]), most
/// common first. Empty when none.
pub fn nicknames_of(key: &str) -> &'static [&'static str] {
    NICKNAMES.binary_search_by(|(formal, _)| (*formal).cmp(key)).map_or(&[], |i| NICKNAMES[i].1)
}

/// Every other form of a given name: the formal names it may stand for, its
/// own nicknames, and the nicknames of those formal names ("JIM" -> James,
/// Jimmy, Jamie, ...), each once, the name itself left out. Empty when none.
pub fn forms(key: &str) -> Box<[&'static str]> {
    let formal = formal_names(key);
    let mut out: Vec<&'static str> = Vec::new();
    for f in formal.iter().chain(nicknames_of(key)).chain(formal.iter().flat_map(|f| nicknames_of(f))) {
        if *f != key && !out.contains(f) {
            out.push(f);
        }
    }
    out.into_boxed_slice()
}

/// True when one name is a known nickname of the other, or both are
/// nicknames of the same formal name ("BILL" and "WILL"). A name is not its
/// own nickname: equal names give false, so callers test equality first.
pub fn are_nicknames(a: &str, b: &str) -> bool {
    a != b && nicknames_by_formal((a, formal_names(a)), (b, formal_names(b)))
}

/// [`are_nicknames`] for two different names whose [`formal_names`] the
/// caller looked up already (the matcher does, once per record).
pub fn nicknames_by_formal((a, fa): (&str, &[&str]), (b, fb): (&str, &[&str])) -> bool {
    fa.contains(&b) || fb.contains(&a) || fa.iter().any(|f| fb.contains(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_upper_case_and_has_no_repeats() {
        assert!(NICKNAMES.windows(2).all(|w| w[0].0 < w[1].0), "sorted by formal name, no repeats");
        let pairs: usize = NICKNAMES.iter().map(|(_, n)| n.len()).sum();
        assert!((150..=300).contains(&pairs), "{pairs} pairs");
        for (formal, nicks) in NICKNAMES {
            for name in std::iter::once(formal).chain(nicks.iter()) {
                assert!(name.bytes().all(|b| b.is_ascii_uppercase()), "{name:?} is not an upper-case key");
            }
            for (i, n) in nicks.iter().enumerate() {
                assert!(n != formal && !nicks[..i].contains(n), "{formal}: {n} twice or its own nickname");
            }
        }
    }

    #[test]
    fn formal_names_of_a_nickname() {
        assert_eq!(formal_names("BILL"), ["WILLIAM"]);
        assert_eq!(formal_names("PEGGY"), ["MARGARET"]);
        let mut alex = formal_names("ALEX").to_vec();
        alex.sort();
        assert_eq!(alex, ["ALEXANDER", "ALEXANDRA", "ALEXIS"]);
        assert!(formal_names("WILLIAM").is_empty(), "a formal name is not its own formal name");
        assert!(formal_names("ZELDA").is_empty());
        assert!(formal_names("bill").is_empty(), "keys are upper case");
    }

    #[test]
    fn nicknames_of_a_formal_name() {
        assert_eq!(nicknames_of("ROBERT")[0], "BOB");
        assert!(nicknames_of("ELIZABETH").contains(&"BETTY"));
        assert!(nicknames_of("BOB").is_empty());
    }

    #[test]
    fn forms_of_a_name() {
        let jim = forms("JIM");
        assert!(jim.contains(&"JAMES") && jim.contains(&"JIMMY"), "{jim:?}");
        assert!(!jim.contains(&"JIM"), "not the name itself");
        assert!(forms("ROBERT").contains(&"BOB"));
        assert!(forms("ZELDA").is_empty());
    }

    #[test]
    fn nickname_pairs() {
        assert!(are_nicknames("BILL", "WILLIAM"));
        assert!(are_nicknames("WILLIAM", "BILL"), "either order");
        assert!(are_nicknames("BILL", "LIAM"), "two nicknames of William");
        assert!(are_nicknames("KATE", "KATHY"));
        assert!(are_nicknames("NANCY", "ANNE"), "a formal name that is also a nickname");
        assert!(are_nicknames("NAN", "NANCY"));
        assert!(!are_nicknames("BILL", "BILL"), "equal is not a nickname");
        assert!(!are_nicknames("BILL", "ROBERT"));
        assert!(!are_nicknames("WILLIAM", "ROBERT"));
        assert!(!are_nicknames("ZELDA", "ZORA"));
    }
}
