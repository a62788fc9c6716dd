#!/usr/bin/env python3
"""Build rules/lexicon/terms.tsv from the shared English word lists.

Usage: tools/build-lexicon.py [LEXICONS_DIR]   (default: ../shared/data/lexicons next to the repo)

Reads the six lists credited in rules/lexicon/SOURCES.md, maps each one's labels to chatguard's
categories (toxicity, explicit) and severities (1 mild, 2 moderate, 3 severe), merges them, applies
the hand decisions in rules/lexicon/curated.tsv and the clean words in rules/lexicon/allow.txt, and
writes rules/lexicon/terms.tsv sorted, so two runs on the same input give the same bytes. SOURCES.md
explains the mapping and the merge rule; a summary goes to stderr. Python 3 standard library only.
"""

import argparse
import csv
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "rules" / "lexicon"
DEFAULT_SOURCES = REPO.parent / "shared" / "data" / "lexicons"

TOX, EXP = "toxicity", "explicit"

# Roots used as general-purpose profanity. The lists file "fuck" and friends under sexual acts or
# anatomy; in chat they swear or insult, so that evidence counts as toxicity unless the term also
# names something explicit (EXPLICIT_ROOTS, as in "titfuck"). Profanity alone is moderate at most:
# severity 3 is kept for slurs, threats, sexual violence and strong sexual terms (SEVERE_ROOTS).
PROFANITY_ROOTS = (
    "fuck", "fuk", "fuc", "fck", "fcuk", "phuk", "phuc", "phuq", "fuq", "motherf", "muthaf", "mothaf",
    "shit", "shyt", "ass", "arse", "bitch", "biatch", "bastard", "damn", "hell", "bollock", "bugger",
    "crap", "piss", "douche", "prick", "twat", "wank", "bellend", "tosser", "bloody", "mofo", "cunt",
    "feck", "fick", "fock", "fook", "joder", "cyka", "suka", "blyat",
)
# Surge names each entry's canonical word; entries whose canonical words are all plain profanity
# ("fvck" -> fuck) are toxicity even where surge files them under sexual acts.
PROFANITY_CANON = {
    "fuck", "motherfucker", "shit", "ass", "arse", "bitch", "bastard", "damn", "hell", "bollocks",
    "bugger", "twat", "cunt", "wank", "douche", "prick", "piss", "crap", "bellend",
}
EXPLICIT_ROOTS = (
    "cock", "dick", "pussy", "tit", "cum", "jizz", "porn", "anal", "blowjob", "boob", "penis",
    "vagina", "clit", "dildo", "orgasm", "sex", "masturbat", "fist", "finger", "gangbang", "horny",
    "nipple", "slut", "whore", "cunnil", "fellat", "rimjob", "handjob", "spunk", "semen", "sperm",
)
SEVERE_ROOTS = (
    "cunt", "nigg", "nigga", "niga", "nigr", "fag", "kike", "spic", "chink", "rape", "tranny", "coon",
    "paki", "gook", "wetback", "retard", "whore", "pedo", "paedo", "incest",
)
# Surge files semen and friends under "bodily fluids / excrement" next to shit and piss.
SEXUAL_FLUID_ROOTS = {
    "cum", "jizz", "sperm", "spunk", "baby batter", "man chowder", "man seed", "nut butter",
    "throat yogurt", "blow a load", "creampie", "ejaculation", "erectoplasm",
}
# A compound ending in one of these is an insult whatever its first half ("dickhead", "cumstain").
INSULT_TAILS = (
    "head", "face", "wad", "bag", "brain", "breath", "weed", "wipe", "stain", "tard", "wit", "hole",
    "sucker", "licker", "bucket", "nugget", "biscuit", "muncher", "gobbler",
)

# Letters, digits and the symbols lists use for obfuscation (the engine's normaliser folds those,
# so "sh!t" and "shit" meet after normalisation).
TERM_RE = re.compile(r"^[a-z0-9@$!+*'._ -]+$")
LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
                      "9": "g", "@": "a", "$": "s", "!": "i", "+": "t"})


def clean(raw):
    """Lower-cases and trims a list entry; None when it is not usable English text."""
    term = " ".join(raw.strip().lower().split())
    if not term or not TERM_RE.match(term):
        return None  # other scripts, emoji and symbol art: English only for now
    if term.endswith("*") or term.startswith("*"):
        return None  # a wildcard, not a word
    if sum(c.isalpha() for c in term) < 3:
        return None  # "69", "2g1c" and two-letter words are too ambiguous
    if re.match(r"[sdtm] ", term):
        return None  # "s hit", "d in my mouth": the tail of "that's", "I'd" would start a hit
    if re.search(r"([a-z])\1\1", term):
        return None  # the normaliser collapses runs of 3+ letters, so "fuuuck" is "fuck" anyway
    return term


def fold(term):
    """Approximates the engine's normaliser (leetspeak, separators) to group spellings of one word.

    Only used here to merge evidence and decisions across "sh1t", "s_h_i_t" and "shit"; the engine
    normalises the emitted spellings itself at load.
    """
    return re.sub(r"[ _.*'-]+", "", term.translate(LEET))


def surge_severity(mean):
    """Surge's mean of five 1-3 ratings, rounded half up as its own severity_description does."""
    return max(1, min(3, int(float(mean) + 0.5)))


class Evidence:
    """What the lists say about one term, or about one group of spellings once merged."""

    def __init__(self):
        self.rated = {}  # source -> {category: severity}
        self.flat = set()  # lists that only say "bad word"
        self.cuss = None  # cuss sureness 0-2 (lowest over the group)
        self.rustrict_safe = False  # in rustrict with all-zero scores, i.e. its false-positive list

    def add(self, source, category, severity):
        cats = self.rated.setdefault(source, {})
        cats[category] = max(cats.get(category, 0), severity)

    def absorb(self, other):
        for source, cats in other.rated.items():
            for cat, sev in cats.items():
                self.add(source, cat, sev)
        self.flat |= other.flat
        if other.cuss is not None:
            self.cuss = other.cuss if self.cuss is None else min(self.cuss, other.cuss)
        self.rustrict_safe |= other.rustrict_safe

    def sources(self):
        return set(self.rated) | self.flat

    def n_lists(self):
        """Lists that hold the term; cuss counts only where it thinks the term is likely profane."""
        return len(self.rated) + len(self.flat - {"cuss"}) + (1 if self.cuss == 2 else 0)

    def max_severity(self):
        return max((s for cats in self.rated.values() for s in cats.values()), default=0)

    def categories(self):
        out = {}
        for cats in self.rated.values():
            for cat, sev in cats.items():
                out[cat] = max(out.get(cat, 0), sev)
        return out


def contains_any(key, roots):
    return any(r in key for r in roots)


def profanity_not_explicit(term):
    key = fold(term)
    return contains_any(key, PROFANITY_ROOTS) and not contains_any(key, EXPLICIT_ROOTS)


def read_surge(path, ev):
    with open(path / "surge-ai-profanity" / "profanity_en.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            term = clean(row["text"])
            if term is None:
                continue
            canon = [row[k] for k in ("canonical_form_1", "canonical_form_2", "canonical_form_3")]
            sev = surge_severity(row["severity_rating"])
            for key in ("category_1", "category_2", "category_3"):
                label = row[key]
                if not label:
                    continue
                if label.startswith("sexual anatomy"):
                    plain = all(c in PROFANITY_CANON for c in canon if c)
                    cat = TOX if plain or profanity_not_explicit(term) else EXP
                elif label.startswith("bodily fluids"):
                    cat = EXP if any(c in SEXUAL_FLUID_ROOTS for c in canon) else TOX
                else:  # insults, slurs, orientation/gender, disability, religion, politics, animals
                    cat = TOX
                ev[term].add("surge", cat, sev)


def read_dsojevic(path, ev):
    with open(path / "dsojevic-profanity-list" / "en.json", encoding="utf-8") as f:
        entries = json.load(f)
    for e in entries:
        tags = set(e.get("tags", []))
        # 1 mild, 2 medium, 3 strong, 4 severe; 3 is also the list's unreviewed default (its README),
        # so 3 counts as moderate except for slurs (racial, lgbtq), which are severe.
        sev = {1: 1, 2: 2, 3: 2, 4: 3}[e["severity"]]
        if e["severity"] == 3 and tags & {"racial", "lgbtq"}:
            sev = 3
        cats = set()
        if tags & {"sexual", "shock"}:
            cats.add(EXP)
        if tags & {"general", "racial", "lgbtq", "religious"}:
            cats.add(TOX)
        # "fu*c*k|fucks": alternatives split on "|"; "*" lets the letter before it repeat.
        for raw in e["match"].split("|"):
            term = clean(raw.replace("*", ""))
            if term is None:
                continue
            for cat in cats:
                ev[term].add("dsojevic", TOX if profanity_not_explicit(term) else cat, sev)


def read_rustrict(path, ev):
    with open(path / "rustrict" / "profanity.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            term = clean(row["word"])
            if term is None:
                continue
            # 0-3 per type (mild, moderate, severe); a few slurs say 5 for "offensive".
            score = {k: min(3, int(row[k])) for k in ("profane", "offensive", "sexual", "mean")}
            if not any(score.values()):
                ev[term].rustrict_safe = True
                continue
            tox = max(score["profane"], score["offensive"], score["mean"])
            if tox:
                ev[term].add("rustrict", TOX, tox)
            # rustrict scores "fuck" as sexual as it is profane; a term counts as explicit only where
            # its sexual score beats the others, as for "penis" (1 profane, 3 sexual).
            if score["sexual"] > tox and not profanity_not_explicit(term):
                ev[term].add("rustrict", EXP, score["sexual"])


def read_flat(path, ev):
    for name, rel in (("google", "google-profanity-words/en.txt"), ("ldnoobw", "ldnoobw/en")):
        for line in (path / rel).read_text(encoding="utf-8").splitlines():
            term = clean(line)
            if term is not None:
                ev[term].flat.add(name)
    with open(path / "cuss" / "cuss_en.tsv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            term = clean(row["word"])
            if term is not None:
                ev[term].flat.add("cuss")
                ev[term].cuss = int(row["sureness"])


def read_curated(path):
    """fold(term) -> None (drop) or {category: severity}, in file order; plus the spellings."""
    out, spelled = {}, {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].rstrip()
        if not line:
            continue
        term, sep, spec = line.partition("\t")
        if not sep or clean(term) != term:
            sys.exit(f"{path}:{n}: expected a lower-case term<TAB>drop, or category:severity items")
        if spec.strip() == "drop":
            cats = None
        else:
            cats = {}
            for item in spec.split():
                cat, _, sev = item.partition(":")
                if cat not in (TOX, EXP) or sev not in ("1", "2", "3"):
                    sys.exit(f"{path}:{n}: bad item {item!r}")
                cats[cat] = int(sev)
        if fold(term) in out:
            sys.exit(f"{path}:{n}: {term!r} is decided twice (same spelling group)")
        out[fold(term)] = cats
        spelled[fold(term)] = term
    return out, spelled


def read_allow(path):
    words = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = " ".join(line.split("#", 1)[0].lower().split())
        if line:
            words.add(line)
    return words


def decide(e, stats):
    """Categories and severities for one spelling group from its evidence, or None to drop it."""
    sev = e.max_severity()
    if e.cuss == 0 and sev < 3:
        stats["dropped: cuss sureness 0 (usually clean)"] += 1
        return None
    if e.n_lists() < 2 and sev < 2:
        stats["dropped: one list, mild"] += 1
        return None
    ordinary = e.rustrict_safe or e.cuss == 1
    if ordinary and not (len(e.rated) >= 2 or (e.n_lists() >= 2 and sev >= 2)):
        stats["dropped: ordinary word, weak evidence"] += 1
        return None
    return e.categories()


def adjust(key, cats):
    """Rules that hold whatever the lists say: see SOURCES.md."""
    if contains_any(key, PROFANITY_ROOTS) and not contains_any(key, SEVERE_ROOTS + EXPLICIT_ROOTS):
        for cat in cats:
            cats[cat] = min(cats[cat], 2)
    if TOX not in cats and cats and key.endswith(INSULT_TAILS):
        cats[TOX] = max(cats.values())
    return cats


def build(ev, curated, allow, stats):
    """term -> ({category: severity}, sources) for every spelling that is kept."""
    groups = defaultdict(list)
    for term in ev:
        groups[fold(term)].append(term)
    # A single allowed word rules out its spelling group ("c0cktail" follows "cocktail"); an allowed
    # phrase ("strap on") rules out only that spelling, not "strapon".
    allow_keys = {fold(w) for w in allow if " " not in w}

    decided = {}  # key -> (cats, sources)
    evidence = {}
    for key, spellings in groups.items():
        e = Evidence()
        for t in spellings:
            e.absorb(ev[t])
        evidence[key] = e
        if key in curated or key in allow_keys or not e.rated:
            continue
        cats = decide(e, stats)
        if cats:
            decided[key] = (adjust(key, cats), e.sources())

    for key, cats in curated.items():
        if cats is not None:
            e = evidence.get(key, Evidence())
            decided[key] = (dict(cats), e.sources() | {"curated"})

    # Compounds found only in flat lists ("fingerfuck", "cumguzzler") take the categories of the
    # terms of severity >= 2 they contain (highest severity per category); other flat-only words are
    # not used, because a flat list gives neither category nor severity.
    roots = sorted(
        k for k, (cats, _) in decided.items()
        if len(k) >= 4 and k.isalpha() and max(cats.values()) >= 2
    )
    for key, e in evidence.items():
        if e.rated or key in curated or key in allow_keys or e.rustrict_safe or e.cuss in (0, 1):
            continue
        found = [r for r in roots if r in key and r != key]
        if not found:
            stats["dropped: flat lists only, no known root"] += 1
            continue
        cats = {}
        for root in found:
            for cat, sev in decided[root][0].items():
                cats[cat] = max(cats.get(cat, 0), sev)
        decided[key] = (adjust(key, cats), e.sources() | {"root=" + r for r in found})
        stats["kept: flat lists only, categories from the terms inside"] += 1

    out = {}
    for key, (cats, sources) in decided.items():
        for term in groups.get(key, []):
            if term not in allow:
                out[term] = (cats, sources)
    return out, decided


def write_terms(path, terms):
    lines = [
        "# Generated by tools/build-lexicon.py from the lists credited in SOURCES.md. Do not edit:",
        "# change curated.tsv or allow.txt and run the script again.",
        "# term<TAB>category<TAB>severity (1 mild, 2 moderate, 3 severe)<TAB>sources",
    ]
    for term in sorted(terms):
        cats, sources = terms[term]
        for cat in sorted(cats):
            lines.append(f"{term}\t{cat}\t{cats[cat]}\t{','.join(sorted(sources))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines) - 3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lexicons", nargs="?", type=Path, default=DEFAULT_SOURCES,
                        help="folder holding the source lists (default: %(default)s)")
    args = parser.parse_args()
    src = args.lexicons
    if not (src / "surge-ai-profanity").is_dir():
        sys.exit(f"{src}: not a lexicons folder (no surge-ai-profanity/)")

    ev = defaultdict(Evidence)
    read_surge(src, ev)
    read_dsojevic(src, ev)
    read_rustrict(src, ev)
    read_flat(src, ev)
    curated, spelled = read_curated(OUT_DIR / "curated.tsv")
    allow = read_allow(OUT_DIR / "allow.txt")
    for key, term in spelled.items():
        if curated[key] is not None and term not in ev:
            ev.setdefault(term, Evidence())  # a curated addition no list has

    stats = Counter()
    terms, groups = build(ev, curated, allow, stats)
    rows = write_terms(OUT_DIR / "terms.tsv", terms)

    per = Counter((cat, sev) for cats, _ in terms.values() for cat, sev in cats.items())
    print(f"{len(ev)} spellings in {len({fold(t) for t in ev})} groups; kept {len(terms)} spellings"
          f" ({len(groups)} groups), {rows} rows", file=sys.stderr)
    for k in sorted(stats):
        print(f"  {k}: {stats[k]} groups", file=sys.stderr)
    for cat in (TOX, EXP):
        by_sev = ", ".join(f"severity {s}: {per[(cat, s)]}" for s in (1, 2, 3))
        print(f"  {cat}: {sum(per[(cat, s)] for s in (1, 2, 3))} rows ({by_sev})", file=sys.stderr)


if __name__ == "__main__":
    main()
