"""The README and docs/ cite files that exist: every relative link, and every result file named
(measurements in benchmarks/results/, records of training and compression runs in docs/runs/)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"  # measurements of the software: speed, field-mode accuracy, ...
RUNS = ROOT / "docs" / "runs"  # records of training, compression and model-selection runs
FOLDERS = (RESULTS, RUNS)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _expand(name: str) -> list[str]:
    """``pbc-v15-compress.{md,json}`` -> both names; ``soup-v56-compress.md/.json`` -> both."""
    m = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", name)
    if m:
        return [m[1] + alt + m[3] for alt in m[2].split(",")]
    m = re.fullmatch(r"(.*)\.(\w+)/\.(\w+)", name)
    if m:
        return [f"{m[1]}.{m[2]}", f"{m[1]}.{m[3]}"]
    return [name]


def _cited_results(text: str) -> set[str]:
    """File names in backticks that look like result files (``x.json``, ``x.{md,png}``, ``x.*``)."""
    names = set()
    for tok in re.findall(r"`([^`\s]+)`", text):
        for prefix in ("benchmarks/results/", "docs/runs/"):
            tok = tok.removeprefix(prefix)
        if tok.startswith(".") or "<" in tok:
            continue  # an extension or a pattern, not a file
        if "/" in tok.replace(".md/.json", "") or not re.search(r"\.(json|md|png|csv|\{[a-z,]+\}|\*|md/\.json)$", tok):
            continue
        if tok.startswith(("model", "export.", "bench.", "crosscheck.", "evaluation.", "split.", "config.", "history.",
                           "audit.", "flagged.", "state.", "curves.", "confusion.", "summary.", "sel",
                           "prior.", "published.", "truth.", "manifest.", "*", "{", "frames.")):
            continue  # files a command writes, not committed results
        names.add(tok)
    return names


def test_relative_links_exist():
    missing = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            if not (doc.parent / target).resolve().exists():
                missing.append(f"{doc.relative_to(ROOT)} -> {target}")
    # docs/cross-lab.md (other labs' figures) is announced in the README and written separately
    if not (ROOT / "docs" / "cross-lab.md").exists():
        missing = [m for m in missing if not m.endswith("cross-lab.md")]
    assert missing == []


def test_cited_result_files_exist():
    missing = []
    for doc in DOCS:
        for name in _cited_results(doc.read_text()):
            for one in _expand(name):
                if one.endswith(".*"):
                    if not any(list(folder.glob(one)) for folder in FOLDERS):
                        missing.append(f"{doc.relative_to(ROOT)}: {one}")
                elif not any((folder / one).exists() for folder in (*FOLDERS, ROOT)):
                    missing.append(f"{doc.relative_to(ROOT)}: {one}")
    assert missing == []
