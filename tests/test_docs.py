"""The README and the pages in docs/: every relative link resolves (the file exists, and an
anchor names a heading of that file), the README stays short, and docs/contract.md is the
contract the code follows (it names every control command the wire module accepts)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream.config_docs import reference
from stream.wire import CONTROL_COMMANDS

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, flags=re.M)}


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [a or b for a, b in LINK.findall(text)]


def test_slug_follows_github() -> None:
    assert slug("The main job (`promptcam run`)") == "the-main-job-promptcam-run"
    assert slug("Many cameras, one engine") == "many-cameras-one-engine"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    checked = 0
    for target in links(page):
        if re.match(r"^[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: link to {target!r}: {dest} does not exist"
        assert ROOT in dest.parents or dest == ROOT, f"{page.name}: {target!r} leaves the repo"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{page.name}: no heading #{anchor} in {dest.name}"
        checked += 1
    if page.name == "README.md":
        assert checked >= 10, "the README links to the docs pages"


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert blocks[0].strip() == "bash .ci/install && promptcam run"
    assert blocks[1].strip() == "bash .ci/test"


def test_contract_ships_in_the_repo_and_names_every_control_command() -> None:
    contract = (ROOT / "docs" / "contract.md").read_text()
    assert "v1.2" in contract
    for cmd in CONTROL_COMMANDS:
        assert f'"cmd":"{cmd}"' in contract.replace(" ", ""), f"contract lacks control {cmd!r}"


def test_config_reference_is_current() -> None:
    """docs/config-reference.md is what ``python -m stream.config_docs`` generates now: a new or
    changed config field without a regenerated reference fails here."""
    shipped = (ROOT / "docs" / "config-reference.md").read_text()
    assert shipped == reference(), (
        "docs/config-reference.md is stale: run python -m stream.config_docs > "
        "docs/config-reference.md"
    )
    assert "`engine.state_file`" in shipped and "`bus.frames`" in shipped


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_points_outside_the_repository(page: Path) -> None:
    """A cloner has no ../shared: the pages name docs/contract.md, never the steering folder."""
    assert "../shared" not in page.read_text(), f"{page.name} mentions ../shared"
