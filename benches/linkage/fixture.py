#!/usr/bin/env python3
"""Write a synthetic linkage fixture in the formats of ferry's benchmark generator.

    python3 benches/linkage/fixture.py OUT_DIR [--records 10000] [--seed 7]

writes three files into OUT_DIR:

    ehr_patients.csv      the EHR export: UTF-8 with a BOM, CRLF, DOB as MM/DD/YYYY
    practice_roster.csv   the practice roster: Windows-1252, CRLF, DOB as YYYY-MM-DD
    truth.csv             person_id,side,record_id (UTF-8, LF)

Each side holds exactly --records rows. It is only a test fixture for
compare.py (ferry's own generator writes the benchmark data); it uses nothing
but the standard library, so it runs with any python3.

Who is where (per side, with --records N):
  * about 2% of the rows are within-side duplicates: a second record of a
    person already on that side, under a new ID, with light noise of its own;
  * of the people on a side, 85% are on both sides and 15% on that side only.
Households share a last name, an address and a home phone; about 1% of the
people are one of a pair of twins (same last name, date of birth, address and
phone, different first name), the hardest case for precision.

Noise, drawn independently for each record (the practice side is the noisier):
first-name nicknames, one-edit typos in names, married names, hyphenated last
names, letter case, day and month swapped, a wrong digit or year in the birth
date, a move (new street, city and ZIP, often a new phone), street-suffix
abbreviations, ZIP+4, phone formats, missing e-mail, phone, address and sex,
and a few non-ASCII names (which the roster stores in Windows-1252).

Everything is made up: phones are in the 555 exchange, e-mail addresses use
the reserved example.com/.net/.org domains. The output is deterministic for a
given --records and --seed.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
from dataclasses import dataclass, replace
from pathlib import Path

EHR_HEADER = [
    "PatientID", "FirstName", "LastName", "DOB", "Gender", "Address1", "Address2",
    "City", "State", "Zip", "Phone", "Email", "InsuranceProvider", "MemberID",
    "GroupNumber", "PracticeMRN",
]
ROSTER_HEADER = [
    "Chart Number", "EHR Patient ID", "Last Name", "First Name", "Middle Name",
    "Date of Birth", "Sex", "Street", "Street 2", "City", "ST", "ZIP Code",
    "Home Phone", "Cell Phone", "E-mail",
]

# Formal first name -> nicknames a clerk might type instead.
MALE = {
    "James": ["Jim", "Jimmy"], "John": ["Jack", "Johnny"], "Robert": ["Bob", "Rob", "Bobby"],
    "Michael": ["Mike"], "William": ["Bill", "Will", "Billy"], "David": ["Dave"],
    "Richard": ["Rick", "Dick", "Rich"], "Joseph": ["Joe", "Joey"], "Thomas": ["Tom", "Tommy"],
    "Charles": ["Chuck", "Charlie"], "Christopher": ["Chris"], "Daniel": ["Dan", "Danny"],
    "Matthew": ["Matt"], "Anthony": ["Tony"], "Mark": [], "Donald": ["Don"],
    "Steven": ["Steve"], "Paul": [], "Andrew": ["Andy", "Drew"], "Joshua": ["Josh"],
    "Kenneth": ["Ken", "Kenny"], "Kevin": [], "Brian": [], "George": [], "Timothy": ["Tim"],
    "Ronald": ["Ron"], "Edward": ["Ed", "Eddie", "Ted"], "Jason": [], "Jeffrey": ["Jeff"],
    "Ryan": [], "Jacob": ["Jake"], "Gary": [], "Nicholas": ["Nick"], "Eric": [],
    "Jonathan": ["Jon"], "Stephen": ["Steve"], "Larry": [], "Justin": [], "Scott": [],
    "Brandon": [], "Benjamin": ["Ben"], "Samuel": ["Sam"], "Gregory": ["Greg"],
    "Alexander": ["Alex"], "Frank": [], "Patrick": ["Pat"], "Raymond": ["Ray"],
    "Dennis": [], "Henry": ["Hank"], "Douglas": ["Doug"], "Peter": ["Pete"], "Nathan": ["Nate"],
    "Walter": ["Walt"], "Ethan": [], "Liam": [], "Noah": [], "Owen": [], "Lucas": ["Luke"],
    "Caleb": [], "José": ["Jose"], "Luis": [], "Carlos": [], "Juan": [], "Miguel": [],
    "François": ["Francois"], "Wei": [], "Minh": [], "Arjun": [], "Ivan": [],
}
FEMALE = {
    "Mary": [], "Patricia": ["Pat", "Patty", "Trish"], "Jennifer": ["Jen", "Jenny"],
    "Linda": [], "Elizabeth": ["Liz", "Beth", "Betsy", "Eliza"], "Barbara": ["Barb"],
    "Susan": ["Sue", "Susie"], "Jessica": ["Jess"], "Sarah": [], "Karen": [], "Lisa": [],
    "Nancy": [], "Betty": [], "Margaret": ["Maggie", "Peggy", "Meg"], "Sandra": ["Sandy"],
    "Ashley": [], "Kimberly": ["Kim"], "Emily": [], "Donna": [], "Michelle": [],
    "Carol": [], "Amanda": ["Mandy"], "Dorothy": ["Dot", "Dottie"], "Melissa": ["Missy"],
    "Deborah": ["Deb", "Debbie"], "Stephanie": ["Steph"], "Rebecca": ["Becky"],
    "Sharon": [], "Laura": [], "Cynthia": ["Cindy"], "Kathleen": ["Kathy"], "Amy": [],
    "Angela": ["Angie"], "Shirley": [], "Anna": [], "Brenda": [], "Pamela": ["Pam"],
    "Emma": [], "Nicole": ["Nikki"], "Helen": [], "Samantha": ["Sam"],
    "Katherine": ["Kate", "Katie", "Kathy"], "Christine": ["Chris"], "Rachel": [],
    "Carolyn": [], "Janet": [], "Catherine": ["Cathy", "Kate"], "Maria": [], "Heather": [],
    "Diane": [], "Ruth": [], "Julie": [], "Olivia": ["Liv"], "Joyce": [],
    "Virginia": ["Ginny"], "Victoria": ["Vicky", "Tori"], "Kelly": [], "Lauren": [],
    "Grace": [], "Abigail": ["Abby"], "Zoë": ["Zoe"], "Renée": ["Renee"], "Inés": ["Ines"],
    "Mei": [], "Priya": [], "Ana": [], "Sofia": [], "Chloé": ["Chloe"],
}
LAST_NAMES = """
Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez
Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson
White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott
Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter
Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris
Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly
Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood James Bennett Gray
Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez
Powell Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes Gonzales
Fisher Vasquez Simmons Romero Jordan Patterson Alexander Hamilton Graham Reynolds
Griffin Wallace Moreno West Cole Hayes Bryant Herrera Gibson Ellis Tran Medina Aguilar
Stevens Murray Ford Castro Marshall Owens Harrison Fernandez McDonald Woods Washington
Kennedy Wells Vargas Henry Chen Freeman Webb Tucker Guzman Burns Crawford Olson Simpson
Porter Hunter Gordon Mendez Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks Holmes
Palmer Wagner Black Robertson Boyd Rose Stone Salazar Fox Warren Mills Meyer Rice
Schmidt Garza Daniels Ferguson Nichols Stephens Soto Weaver Ryan Gardner Payne Grant
Dunn Kelley Spencer Hawkins Arnold Pierce Vazquez Hansen Peters Santos Hart Bradley
Knight Elliott Cunningham Duncan Armstrong Hudson Carroll Lane Riley Andrews Alvarado
Ray Delgado Berry Perkins Hoffman Johnston Matthews Pena Richards Contreras Willis
Carpenter Lawrence Sandoval O'Brien O'Connor Gallagher McCarthy Fitzgerald Doherty
Walsh Quinn Donovan Lynch Brennan Costa Pereira Medeiros Souza Ferreira Tavares Russo
Romano DeLuca Marino Ricci Esposito Caruso Greco LeBlanc Gagnon Pelletier Thibodeau
Cohen Levine Goldberg Friedman Wang Liu Pham Huang Shah Singh Johansson Novak Kowalski
Nowak Muñoz Peña Núñez Ibáñez Müller Côté Bélanger Lévesque
""".split()
STREETS = """
Main Oak Elm Maple Pine Cedar Washington Lincoln Highland Pleasant Park Summer Spring
Church School Prospect Union Water Chestnut Walnut Hill Center Mill Franklin Adams
Jefferson Madison Grove Forest Lake River Bridge North South Winter Cherry Willow
Birch Spruce Hawthorn Ridge Valley Meadow Orchard Sunset Liberty Academy Bay Harbor
Beacon Clinton Warren Putnam Salem Boston Dover Essex Quincy Hancock Otis Revere
""".split()
SUFFIXES = [("Street", "St"), ("Road", "Rd"), ("Avenue", "Ave"), ("Lane", "Ln"),
            ("Drive", "Dr"), ("Court", "Ct"), ("Place", "Pl"), ("Terrace", "Ter")]
# (city, state, zip, area code): New England towns.
TOWNS = [
    ("Boston", "MA", "02118", "617"), ("Cambridge", "MA", "02139", "617"),
    ("Somerville", "MA", "02144", "617"), ("Quincy", "MA", "02169", "617"),
    ("Newton", "MA", "02458", "617"), ("Brookline", "MA", "02446", "617"),
    ("Worcester", "MA", "01603", "508"), ("Framingham", "MA", "01701", "508"),
    ("New Bedford", "MA", "02740", "508"), ("Fall River", "MA", "02720", "508"),
    ("Brockton", "MA", "02301", "508"), ("Plymouth", "MA", "02360", "508"),
    ("Lowell", "MA", "01852", "978"), ("Lawrence", "MA", "01841", "978"),
    ("Salem", "MA", "01970", "978"), ("Lynn", "MA", "01902", "781"),
    ("Waltham", "MA", "02453", "781"), ("Medford", "MA", "02155", "781"),
    ("Springfield", "MA", "01103", "413"), ("Northampton", "MA", "01060", "413"),
    ("Pittsfield", "MA", "01201", "413"), ("Hartford", "CT", "06106", "860"),
    ("West Hartford", "CT", "06107", "860"), ("New Haven", "CT", "06511", "203"),
    ("Stamford", "CT", "06902", "203"), ("Bridgeport", "CT", "06604", "203"),
    ("Providence", "RI", "02906", "401"), ("Warwick", "RI", "02886", "401"),
    ("Cranston", "RI", "02910", "401"), ("Manchester", "NH", "03101", "603"),
    ("Nashua", "NH", "03060", "603"), ("Keene", "NH", "03431", "603"),
    ("Portland", "ME", "04101", "207"), ("Bangor", "ME", "04401", "207"),
    ("Burlington", "VT", "05401", "802"), ("Rutland", "VT", "05701", "802"),
]
INSURERS = ["Medicare", "Medicaid", "Blue Harbor Health", "Granite Mutual",
            "Northeast Benefit Administrators", "Self-pay"]
KEYBOARD_NEIGHBOURS = {
    "a": "qsz", "b": "vgn", "c": "xdv", "d": "sfe", "e": "wrd", "f": "dgr", "g": "fht",
    "h": "gjy", "i": "uok", "j": "hku", "k": "jli", "l": "kop", "m": "nj", "n": "bmh",
    "o": "ipl", "p": "ol", "q": "wa", "r": "etf", "s": "adw", "t": "ryg", "u": "yij",
    "v": "cbf", "w": "qes", "x": "zcs", "y": "tuh", "z": "xa",
}


@dataclass(frozen=True)
class Person:
    """The truth about one human."""
    pid: int
    first: str
    middle: str
    last: str
    sex: str
    dob: dt.date
    house: int
    street: str          # e.g. "12 Maple" (suffix kept apart so it can be abbreviated)
    suffix: int          # index into SUFFIXES
    unit: str
    town: tuple[str, str, str, str]
    phone: str           # 10 digits, the household's home phone
    cell: str            # 10 digits or ""
    email: str


class Gen:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.used_phones: set[str] = set()
        self.used_emails: set[str] = set()
        # A Zipf-like weighting, so common surnames are common.
        self.last_weights = [1.0 / (i + 10) for i in range(len(LAST_NAMES))]

    # -- people ---------------------------------------------------------------
    def phone(self, area: str) -> str:
        while True:
            p = f"{area}555{self.rng.randrange(10000):04d}"
            if p not in self.used_phones:
                self.used_phones.add(p)
                return p

    def first_name(self, sex: str) -> str:
        return self.rng.choice(list((MALE if sex == "M" else FEMALE).keys()))

    def dob(self) -> dt.date:
        return dt.date(1935, 1, 1) + dt.timedelta(days=self.rng.randrange(365 * 89))

    def address(self) -> dict:
        return dict(
            house=self.rng.randrange(1, 999),
            street=self.rng.choice(STREETS),
            suffix=self.rng.randrange(len(SUFFIXES)),
            unit=self.rng.choice(["", "", "", "", "Apt 2", "Unit 3B", "Apt 1, Rear", "#4"]),
            town=self.town(),
        )

    def town(self) -> tuple[str, str, str, str]:
        """A town with one of its ZIP codes: each town gets the 6 consecutive
        ZIPs from its listed one, so ZIPs are about as many as in a region."""
        city, state, zip5, area = self.rng.choice(TOWNS)
        return city, state, f"{int(zip5) + self.rng.randrange(6):05d}", area

    def email(self, first: str, last: str, dob: dt.date) -> str:
        if self.rng.random() < 0.35:
            return ""
        f, l = ascii_fold(first).lower(), ascii_fold(last).lower().replace("'", "")
        user = self.rng.choice([f"{f}.{l}", f"{f}{l}{dob.year % 100:02d}", f"{f[0]}{l}",
                                f"{f}{l}{self.rng.randrange(100)}"])
        domain = self.rng.choice(["example.com", "example.net", "example.org"])
        # An address belongs to one person: add digits until it is new.
        while f"{user}@{domain}" in self.used_emails:
            user += str(self.rng.randrange(10))
        self.used_emails.add(f"{user}@{domain}")
        return f"{user}@{domain}"

    def person(self, pid: int, *, last=None, home=None, dob=None, sex=None) -> Person:
        sex = sex or self.rng.choice("MF")
        first = self.first_name(sex)
        last = last or self.rng.choices(LAST_NAMES, self.last_weights)[0]
        dob = dob or self.dob()
        home = home or dict(self.address(), phone=None)
        phone = home["phone"] or self.phone(home["town"][3])
        cell = self.phone(home["town"][3]) if self.rng.random() < 0.6 else ""
        middle = self.first_name(sex) if self.rng.random() < 0.3 else ""
        return Person(pid, first, middle, last, sex, dob, home["house"], home["street"],
                      home["suffix"], home["unit"], home["town"], phone, cell,
                      self.email(first, last, dob))

    def population(self, n: int) -> list[Person]:
        """n people, some in households and some twins."""
        people: list[Person] = []
        while len(people) < n:
            p = self.person(len(people))
            people.append(p)
            home = dict(house=p.house, street=p.street, suffix=p.suffix, unit=p.unit,
                        town=p.town, phone=p.phone)
            r = self.rng.random()
            if r < 0.01 and len(people) < n:
                # A twin: same last name, date of birth, home and phone.
                while True:
                    t = self.person(len(people), last=p.last, home=home, dob=p.dob,
                                    sex=self.rng.choice([p.sex, p.sex, "M", "F"]))
                    if t.first != p.first:
                        break
                people.append(t)
            elif r < 0.10 and len(people) < n:
                # A household member: same home and phone, usually the same last name.
                last = p.last if self.rng.random() < 0.8 else None
                people.append(self.person(len(people), last=last, home=home))
        return people

    # -- noise ----------------------------------------------------------------
    def typo(self, s: str) -> str:
        if len(s) < 3:
            return s
        i = self.rng.randrange(1, len(s))
        op = self.rng.choice(["sub", "del", "ins", "swap"])
        c = s[i].lower()
        if op == "sub" and c in KEYBOARD_NEIGHBOURS:
            r = self.rng.choice(KEYBOARD_NEIGHBOURS[c])
            return s[:i] + (r.upper() if s[i].isupper() else r) + s[i + 1:]
        if op == "del":
            return s[:i] + s[i + 1:]
        if op == "ins":
            return s[:i] + s[i - 1] + s[i:]
        if i < len(s) - 1:
            return s[:i] + s[i + 1] + s[i] + s[i + 2:]
        return s[:i]

    def noisy(self, p: Person, level: float) -> Person:
        """A version of p as one clerk entered it; level scales every probability."""
        rng = self.rng
        first, last, dob = p.first, p.last, p.dob
        nick = (MALE if p.sex == "M" else FEMALE).get(first, [])
        if nick and rng.random() < 0.10 * level:
            first = rng.choice(nick)
        if rng.random() < 0.03 * level:
            first = self.typo(first)
        if rng.random() < 0.03 * level:
            last = self.typo(last)
        if p.sex == "F" and rng.random() < 0.03 * level:
            last = rng.choices(LAST_NAMES, self.last_weights)[0]          # married name
        elif rng.random() < 0.01 * level:
            last = f"{last}-{rng.choice(LAST_NAMES)}"                       # hyphenated
        r = rng.random()
        if r < 0.02 * level and dob.day <= 12 and dob.day != dob.month:
            dob = dob.replace(month=dob.day, day=dob.month)                 # day/month swap
        elif r < 0.04 * level:
            try:                                                            # one wrong day digit
                dob = dob.replace(day=(dob.day + rng.choice([-10, -1, 1, 10])))
            except ValueError:
                dob = dob + dt.timedelta(days=1)
        elif r < 0.05 * level:
            dob = dob.replace(year=dob.year + rng.choice([-1, 1]), day=min(dob.day, 28))
        moved = rng.random() < 0.08 * level
        q = replace(p, first=first, last=last, dob=dob)
        if moved:
            a = self.address()
            q = replace(q, house=a["house"], street=a["street"], suffix=a["suffix"],
                        unit=a["unit"], town=a["town"],
                        phone=self.phone(a["town"][3]) if rng.random() < 0.5 else p.phone)
        if rng.random() < 0.02 * level:
            q = replace(q, street=self.typo(q.street))
        if rng.random() < 0.05 * level:
            q = replace(q, email=self.email(q.first, q.last, p.dob))        # a new address
        return q

    def missing(self, value: str, prob: float) -> str:
        return "" if self.rng.random() < prob else value


def ascii_fold(s: str) -> str:
    import unicodedata
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()


def fmt_phone(g: Gen, digits: str) -> str:
    if not digits:
        return ""
    a, b, c = digits[:3], digits[3:6], digits[6:]
    return g.rng.choice([f"({a}) {b}-{c}", f"{a}-{b}-{c}", digits, f"{a}.{b}.{c}"])


def street_line(g: Gen, q: Person) -> str:
    full, abbr = SUFFIXES[q.suffix]
    return f"{q.house} {q.street} {abbr if g.rng.random() < 0.5 else full}"


def case(g: Gen, s: str, level: float) -> str:
    return s.upper() if s and g.rng.random() < 0.08 * level else s


def ehr_row(g: Gen, rid: str, p: Person, chart: str) -> list[str]:
    q = g.noisy(p, level=0.6)
    city, state, zip5, _ = q.town
    zip_ = f"{zip5}-{g.rng.randrange(10000):04d}" if g.rng.random() < 0.2 else zip5
    no_addr = g.rng.random() < 0.02
    return [
        rid, case(g, q.first, 0.5), case(g, q.last, 0.5), q.dob.strftime("%m/%d/%Y"),
        g.missing(q.sex, 0.01),
        "" if no_addr else street_line(g, q), "" if no_addr else q.unit,
        "" if no_addr else city, "" if no_addr else state, "" if no_addr else zip_,
        # The EHR keeps one phone: the cell phone for some, else the home phone.
        fmt_phone(g, g.missing(q.cell if q.cell and g.rng.random() < 0.3 else q.phone, 0.05)),
        g.missing(q.email, 0.05),
        g.rng.choice(INSURERS), f"M{g.rng.randrange(10**9):09d}", "", chart,
    ]


def roster_row(g: Gen, chart: str, p: Person, ehr_id: str) -> list[str]:
    q = g.noisy(p, level=1.0)
    city, state, zip5, _ = q.town
    no_addr = g.rng.random() < 0.03
    home = g.missing(q.phone, 0.15)
    cell = q.cell if g.rng.random() < 0.8 else ""
    sex = g.missing(q.sex, 0.02)
    return [
        chart, ehr_id, case(g, q.last, 1.0), case(g, q.first, 1.0), q.middle,
        q.dob.isoformat(), sex,
        "" if no_addr else street_line(g, q), "" if no_addr else q.unit,
        "" if no_addr else city, "" if no_addr else state,
        "" if no_addr else (zip5.lstrip("0") if g.rng.random() < 0.03 else zip5),  # Excel ate the zero
        fmt_phone(g, home), fmt_phone(g, cell), g.missing(q.email, 0.25),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--records", type=int, default=10000, help="rows per side (default 10000)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    n = args.records
    g = Gen(args.seed)

    dups = round(0.02 * n)
    per_side = n - dups
    both = round(0.85 * per_side)
    only = per_side - both
    people = g.population(both + 2 * only)
    g.rng.shuffle(people)
    ehr_people = people[:both] + people[both:both + only]
    prac_people = people[:both] + people[both + only:]
    # Within-side duplicates: a second record of someone already on that side.
    ehr_people += g.rng.sample(ehr_people, dups)
    prac_people += g.rng.sample(prac_people, dups)
    g.rng.shuffle(ehr_people)
    g.rng.shuffle(prac_people)

    ehr_ids = [f"E{i:06d}" for i in g.rng.sample(range(1, 10**6), n)]
    # Chart numbers are zero-padded to 7 digits, so leading zeros matter.
    charts = [f"{i:07d}" for i in g.rng.sample(range(1, 2 * 10**6), n)]
    ehr_of = {p.pid: rid for p, rid in zip(ehr_people, ehr_ids)}
    chart_of = {p.pid: c for p, c in zip(prac_people, charts)}

    args.out_dir.mkdir(parents=True, exist_ok=True)
    truth = [("person_id", "side", "record_id")]
    with open(args.out_dir / "ehr_patients.csv", "w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(EHR_HEADER)
        for p, rid in zip(ehr_people, ehr_ids):
            # The cross ID is filled in for 60% of the matched people (no tool uses it).
            mrn = chart_of.get(p.pid, "") if g.rng.random() < 0.6 else ""
            w.writerow(ehr_row(g, rid, p, mrn))
            truth.append((f"P{p.pid:06d}", "ehr", rid))
    with open(args.out_dir / "practice_roster.csv", "w", encoding="cp1252", newline="") as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(ROSTER_HEADER)
        for p, chart in zip(prac_people, charts):
            eid = ehr_of.get(p.pid, "") if g.rng.random() < 0.6 else ""
            w.writerow(roster_row(g, chart, p, eid))
            truth.append((f"P{p.pid:06d}", "practice", chart))
    with open(args.out_dir / "truth.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(truth)
    persons_both = len({p.pid for p in ehr_people} & {p.pid for p in prac_people})
    print(f"wrote {n} EHR rows, {n} roster rows, {persons_both} people on both sides "
          f"to {args.out_dir}")


if __name__ == "__main__":
    main()
