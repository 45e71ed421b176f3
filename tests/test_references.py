"""Citations in the code's docstrings and comments go through docs/references.md.

The bibliography page lists each work once under a short key (first author, year, a letter
where needed: ``Lu2022a``); a docstring or comment cites it as ``[Key]`` or with a place,
``[Key, eq. 14]``, several works as ``[Key1, eq. 2; Key2]``. These tests read the docstrings
and comments of samplers/, vi/, diffusion/ and benchmarks/ (Python's tokenizer finds them;
code is not read) and check that

* every cited key is on the bibliography page, and the page is sorted by key;
* no free-text author-year citation ("Song et al. 2021", "Roberts & Tweedie (1996)") is left;
* no docstring or comment points to a ``.md`` file the repository does not ship, nor to
  unshipped notes ("method note ...", "note §2.3", "notes B6");
* no docstring or comment ties a measurement to one JAX version ("jax 0.10.2").

Each test reports every offender at once.
"""
from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = ROOT / "docs" / "references.md"
SCANNED = ("samplers", "vi", "diffusion", "benchmarks")

KEY = re.compile(r"[A-Z][A-Za-z]*(19|20)\d\d[a-z]?")
# anything that looks like a citation key, old style ([DBCS23]) included
KEY_LIKE = re.compile(r"[A-Z][A-Za-z]*\d{2,4}[a-z]?")
ENTRY = re.compile(r'^- <a id="([^"]+)"></a>\*\*([^*]+)\*\*', re.M)

NAME = r"[A-Z][\w\u00c0-\u017f-]+"
# texts are matched with their line breaks kept (\s where a space may be a line break)
FREE_TEXT = [
    re.compile(r"\bet\sal\b"),  # "Song et al. 2021", "Haario et al.'s": cite the key instead
    re.compile(rf"\b{NAME}(?:,\s{NAME})*\s(?:&|and)\s{NAME},?\s\(?(?:19|20)\d\d"),
    re.compile(rf"\b{NAME}(?:,\s{NAME})*\s&\s{NAME}'s\b"),
    re.compile(rf"\b{NAME}\s\((?:19|20)\d\d[a-z]?[,)]"),  # "Vincent (2011)"
    # "Mezzadri 2007" (a capital then a lower-case letter: "ICML 2023" is a venue)
    re.compile(r"\b(?!NeurIPS\b)[A-Z][a-z\u00c0-\u017f][\w\u00c0-\u017f-]*,?\s(?:19|20)\d\d[a-z]?\b"),
]
NOTES = re.compile(r"\bmethod\snotes?\b|\bproject\snotes?\b|\bnotes?(?:'s)?\s(?:§|[A-Z]\.?\d)")
MD_PATH = re.compile(r"(?<![\w/.<>{-])((?:[\w.-]+/)*[\w-]+\.md)\b")
# .md names the code writes (not files of the repository)
MD_OUTPUTS = {"report.md"}
JAX_VERSION = re.compile(r"\bjax(?:lib)?[\s-]v?0\.\d+", re.I)
# files whose subject is one JAX version, with the reason
JAX_VERSION_ALLOWED = {
    "samplers/_xla.py": "the workaround exists for jaxlib 0.10's CPU YNN fusions and says so",
}


def doc_texts(source: str):
    """(line, text) of every docstring and comment of a Python source."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    out, prev = [], tokenize.NEWLINE
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.COMMENT:
            out.append((tok.start[0], tok.string))
        elif tok.type == tokenize.STRING and prev in (tokenize.NEWLINE, tokenize.INDENT,
                                                       tokenize.DEDENT):
            nxt = next((t for t in tokens[i + 1:] if t.type not in (tokenize.COMMENT, tokenize.NL)))
            if nxt.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                out.append((tok.start[0], tok.string))
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            prev = tok.type
    return out


def scanned_texts():
    """(path relative to the root, first line, text) of each docstring and comment in the
    scanned directories; the text keeps its line breaks, without indentation."""
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for line, text in doc_texts(path.read_text(encoding="utf-8")):
                yield rel, line, re.sub(r"[ \t]*\n[ \t]*", "\n", text)


def where(rel: str, line: int, text: str, match: re.Match) -> str:
    """``path:line: 'match'`` for a match in a text that starts on ``line``."""
    found = re.sub(r"\s+", " ", match.group(0))
    return f"{rel}:{line + text.count(chr(10), 0, match.start())}: {found!r}"


def bibliography() -> list[str]:
    text = REFERENCES.read_text(encoding="utf-8")
    entries = ENTRY.findall(text)
    assert entries, "docs/references.md lists no entries"
    bad = [f"{a} / {b}" for a, b in entries if a != b or not KEY.fullmatch(a)]
    assert not bad, f"entries whose anchor and key differ or are not of the key form: {bad}"
    return [a for a, _ in entries]


def citations(text: str):
    """(match, key) for every key-like head of a ``[Key, place; Key2]`` citation in ``text``."""
    for m in re.finditer(r"\[([^\[\]]+)\]", text):
        for part in m.group(1).split(";"):
            head = part.split(",")[0].strip()
            if KEY_LIKE.fullmatch(head):
                yield m, head


def cited_keys(text: str):
    return [key for _, key in citations(text)]


def test_bibliography_sorted_and_unique():
    keys = bibliography()
    assert len(set(keys)) == len(keys), sorted(k for k in keys if keys.count(k) > 1)
    assert keys == sorted(keys, key=str.lower), "docs/references.md is not sorted by key"


def test_bibliography_in_nav():
    assert "references.md" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def test_every_cited_key_is_in_the_bibliography():
    keys = set(bibliography())
    missing = [where(rel, line, text, m) for rel, line, text in scanned_texts()
               for m, key in citations(text) if key not in keys]
    assert not missing, "cited but not in docs/references.md:\n" + "\n".join(missing)


def test_no_citation_right_after_a_bracket():
    """Markdown (mkdocstrings renders docstrings as Markdown) reads ``E[x] [Key]`` as a
    reference link to the id "Key": put the citation in parentheses there."""
    found = [where(rel, line, text, m) for rel, line, text in scanned_texts()
             for m, _ in citations(text) if re.search(r"\]\s?$", text[:m.start()])]
    assert not found, "citations read as Markdown reference links:\n" + "\n".join(found)


def test_every_bibliography_entry_is_cited():
    """An entry nobody cites (code or docs) is dead weight."""
    cited = {key for _, _, text in scanned_texts() for key in cited_keys(text)}
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page != REFERENCES:
            cited |= set(cited_keys(page.read_text(encoding="utf-8")))
    unused = sorted(set(bibliography()) - cited)
    assert not unused, f"entries of docs/references.md that nothing cites: {unused}"


def test_no_free_text_citations():
    found = {}  # one report per place, however many patterns match there
    for rel, line, text in scanned_texts():
        for pattern in FREE_TEXT:
            for m in pattern.finditer(text):
                report = where(rel, line, text, m)
                found.setdefault(report.split(": ")[0], report)
    found = [found[place] for place in sorted(found)]
    assert not found, "free-text citations (cite [Key, place] instead):\n" + "\n".join(found)


def test_no_pointers_to_unshipped_files():
    found = []
    for rel, line, text in scanned_texts():
        found += [where(rel, line, text, m) for m in NOTES.finditer(text)]
        for m in MD_PATH.finditer(text):
            path = m.group(1)
            if path in MD_OUTPUTS or any(part.isupper() for part in path.split("/")[:-1]):
                continue  # a file the code writes, or a placeholder directory (DIR/report.md)
            if not (ROOT / path).is_file():
                found.append(where(rel, line, text, m))
    assert not found, "docstrings/comments point to files not in the repository:\n" + "\n".join(found)


def test_no_version_tied_timings():
    found = [where(rel, line, text, m) for rel, line, text in scanned_texts()
             if rel not in JAX_VERSION_ALLOWED and not rel.startswith("benchmarks/")
             for m in JAX_VERSION.finditer(text)]
    assert not found, ("docstrings/comments tied to one JAX version (move the measurement to "
                       "the docs):\n" + "\n".join(found))


def test_checker_catches_what_it_should():
    """The patterns flag the drift this test exists for, and pass the forms it allows."""
    for text in ("(Song et al. 2021, eq. 13)", "Roberts & Tweedie (1996)", "Shi, Liu & Mackey 2022",
                 "Vincent (2011)", "Haario, Saksman & Tamminen's banana", "Li et al.'s sampler",
                 "(Mezzadri 2007)", "Lazaro-Gredilla 2014"):
        assert any(p.search(text) for p in FREE_TEXT), text
    assert not any(p.search("[Song2021, eq. 13]; [Dowson1982; Givens1984]; ICML 2023; "
                            "NumPyro's and Stan's defaults; NeurIPS 2022; Bernoulli 23(3)")
                   for p in FREE_TEXT)
    assert list(cited_keys("[Lu2022b, eq. 14]; [Dowson1982; Givens1984]; x[0, 1); [DBCS23]")) \
        == ["Lu2022b", "Dowson1982", "Givens1984", "DBCS23"]
    assert NOTES.search("method note foo-detail.md") and NOTES.search("note §2.3")
    assert NOTES.search("notes B6") and NOTES.search("note A.4")
    assert not NOTES.search("``note`` says why")
    assert [m.group(1) for m in MD_PATH.finditer("see docs/vi.md; <name>.md; x.md")] \
        == ["docs/vi.md", "x.md"]
    assert JAX_VERSION.search("measured with jax 0.10.2") and JAX_VERSION.search("jaxlib 0.10's")
