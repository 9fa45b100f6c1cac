"""The front door: a short README whose every link resolves, docs that link to files that exist."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "data" / "NOTICE.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).strip().replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page):
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            headings = {_anchor(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(), flags=re.M)}
            assert anchor in headings, f"{page.name}: no heading #{anchor} in {dest.name}"


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "--source lidc" in text and "**not** results" in text  # the cluster command and the phantom warning
    assert "../shared" not in text


def test_nothing_cites_files_outside_the_repository():
    for p in [*ROOT.glob("*.md"), *ROOT.glob("docs/*.md"), *ROOT.glob("benchmarks/**/*.py"), *ROOT.glob("methods/*.py"),
              *ROOT.glob("clip_lung/*.py"), *ROOT.glob("benchmarks/reported/*.json"), *ROOT.glob(".ci/*")]:
        assert "../shared" not in p.read_text(errors="replace"), p
