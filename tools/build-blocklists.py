#!/usr/bin/env python3
"""Build rules/blocklists/ from the community block lists (Python 3 standard library only).

Usage: tools/build-blocklists.py [SOURCE_DIR]   (default ../shared/data/blocklists, relative to the
crate root). Reads the nikolaischunk discord-phishing-links and devspen scam-links folders and
writes, deterministically and sorted, into rules/blocklists/ next to this script's crate:

  scam-domains.txt        nikolaischunk domain-list ∪ devspen links.txt / scam-links.yml (hosts)
  suspicious-domains.txt  nikolaischunk suspicious-list, minus what is already a scam domain
  scam-urls.txt           entries of the scam lists that carry a path (e.g. a shortener link)
  scam-phrases.txt        devspen malicious-terms
  scam-paths.txt          devspen trailing-slashes (first path segment, no slash)
  tlds.txt                top-level domains seen in the lists plus common ones
  licenses/               copies of the source licences

Hand-written files in rules/blocklists/ are inputs, never overwritten: never-block.txt (dropped
from every generated list) and shorteners.txt (public shorteners are classified as shorteners, so
they are dropped from the scam lists too). Everything dropped is reported on stderr.
"""

import os
import re
import shutil
import sys
import unicodedata

CRATE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(CRATE, "rules", "blocklists")
NIKO = "nikolaischunk-discord-phishing-links"
DEVSPEN = "devspen-scam-links"

# Phrases from malicious-terms that are ordinary in game chat ("who is first pick?", "skins sold
# by steam"); as signals they would fire on clean messages far more often than on scams.
PHRASE_EXCLUDE = {"who is first", "by steam"}

# Common real TLDs, so that a bare "example.de" counts as a link even if no list entry uses it.
COMMON_TLDS = """
ac ae ag ai am app ar art at au be bg biz blog br by ca cc ch cl club cn co com cz de dev dk ee
es eu fi fm fr gg gl gov gr hk hr hu id ie il in info io is it jp kr kz la li link live lt lu lv
ly me mn ms mx my net nl no nu nz online org ph pl pro pt pw ro rs ru se sg sh si site sk so store
su th tk tn to top tr tv tw ua uk us uz vc vn ws xyz za рф xn--p1ai
""".split()

DOMAIN_RE = re.compile(r"^[^\s/*?#:@]+\.[^\s/*?#:@.]+$")


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f]


def read_hand_list(name):
    """A hand-written list in rules/blocklists: entries without comments or blank lines."""
    return [l.lower() for l in read_lines(os.path.join(OUT, name)) if l and not l.startswith("#")]


def yaml_entries(path):
    """The `  - value` items of the `links:` section of devspen's scam-links.yml (double-quoted
    items use \\x/\\u escapes)."""
    out = []
    in_links = False
    with open(path, encoding="utf-8") as f:
        raw_lines = f.read().splitlines()
    for raw in raw_lines:
        if raw and not raw[0].isspace():
            in_links = raw.rstrip() == "links:"
            continue
        line = raw.strip()
        if not in_links or not line.startswith("- "):
            continue
        value = line[2:].strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].encode("ascii").decode("unicode_escape")
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1].replace("''", "'")
        out.append(value)
    return out


def clean_host(entry):
    """Lower-cased NFC host without `www.` or a trailing dot; None if it is not a plain host."""
    host = unicodedata.normalize("NFC", entry.strip().lower()).rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    return host if DOMAIN_RE.match(host) else None


def punycode(host):
    """The ASCII (IDNA) form of a non-ASCII host, when it stays distinct after nameprep."""
    if host.isascii():
        return None
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return ascii_host if "xn--" in ascii_host else None


def split_entries(entries, dropped):
    """Hosts and host/path URLs of a domain list; anything else goes to `dropped`."""
    hosts, urls = set(), set()
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        if "/" in entry:
            host, _, path = entry.partition("/")
            host = clean_host(host)
            path = path.strip("/").lower()
            if host and path:
                urls.add(f"{host}/{path}")
            else:
                dropped.append(entry)
            continue
        host = clean_host(entry)
        if host is None:
            dropped.append(entry)
            continue
        hosts.add(host)
        alias = punycode(host)
        if alias:
            hosts.add(alias)
    return hosts, urls


def covered(host, domains):
    """Whether `host` or one of its parent domains is in `domains`."""
    labels = host.split(".")
    return any(".".join(labels[i:]) in domains for i in range(len(labels) - 1))


def write_list(name, header, entries):
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    with open(os.path.join(OUT, name), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines + sorted(entries)) + "\n")
    print(f"{name}: {len(entries)}", file=sys.stderr)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(CRATE, "..", "shared", "data", "blocklists")
    src = os.path.abspath(src)
    niko, devspen = os.path.join(src, NIKO), os.path.join(src, DEVSPEN)
    never = set(read_hand_list("never-block.txt"))
    shorteners = set(read_hand_list("shorteners.txt"))
    generated = "Generated by tools/build-blocklists.py; do not edit (see SOURCES.md)."

    dropped = []
    scam_entries = read_lines(os.path.join(niko, "domain-list.txt"))
    scam_entries += read_lines(os.path.join(devspen, "links.txt"))
    scam_entries += yaml_entries(os.path.join(devspen, "scam-links.yml"))
    scam, scam_urls = split_entries(scam_entries, dropped)
    suspicious, suspicious_urls = split_entries(read_lines(os.path.join(niko, "suspicious-list.txt")), dropped)
    dropped += sorted(suspicious_urls)

    removed = sorted((scam | suspicious) & (never | shorteners))
    scam -= never | shorteners
    suspicious -= never | shorteners
    suspicious -= scam
    scam_urls = {u for u in scam_urls if u.partition("/")[0] not in never}
    for entry in sorted(set(dropped)):
        print(f"skipped (not a host or host/path): {entry}", file=sys.stderr)
    for host in removed:
        print(f"removed (never-block or shortener): {host}", file=sys.stderr)

    write_list(
        "scam-domains.txt",
        f"{generated}\nPhishing and scam hosts: {NIKO}/domain-list.txt (MIT) and\n"
        f"{DEVSPEN}/links.txt + scam-links.yml (Unlicense). Subdomains match too.",
        scam,
    )
    write_list(
        "suspicious-domains.txt",
        f"{generated}\nSuspicious hosts: {NIKO}/suspicious-list.txt (MIT), minus scam hosts.",
        suspicious,
    )
    write_list(
        "scam-urls.txt",
        f"{generated}\nScam links that need their path (mostly shortener links): host/path, lower-case.",
        scam_urls,
    )

    phrases = set()
    for line in read_lines(os.path.join(devspen, "malicious-terms.txt")):
        phrase = " ".join(line.lower().split())
        if phrase and phrase not in PHRASE_EXCLUDE:
            phrases.add(phrase)
    write_list(
        "scam-phrases.txt",
        f"{generated}\nScam phrases: {DEVSPEN}/malicious-terms.txt (Unlicense), minus: "
        + ", ".join(sorted(PHRASE_EXCLUDE)) + ".",
        phrases,
    )

    paths = {l.strip("/").lower() for l in read_lines(os.path.join(devspen, "trailing-slashes.txt"))}
    paths.discard("")
    write_list(
        "scam-paths.txt",
        f"{generated}\nFirst path segments common in scam links: {DEVSPEN}/trailing-slashes.txt (Unlicense).",
        paths,
    )

    tlds = set(COMMON_TLDS)
    for host in scam | suspicious | shorteners:
        tld = host.rsplit(".", 1)[-1]
        if re.fullmatch(r"[a-z]{2,}|xn--[a-z0-9-]+", tld):
            tlds.add(tld)
    write_list(
        "tlds.txt",
        f"{generated}\nTop-level domains a link without a scheme may end in: those of the lists, plus common ones.",
        tlds,
    )

    licenses = os.path.join(OUT, "licenses")
    os.makedirs(licenses, exist_ok=True)
    shutil.copyfile(os.path.join(niko, "LICENSE"), os.path.join(licenses, "nikolaischunk-discord-phishing-links-MIT.txt"))
    shutil.copyfile(os.path.join(devspen, "LICENSE.md"), os.path.join(licenses, "devspen-scam-links-Unlicense.md"))


if __name__ == "__main__":
    main()
