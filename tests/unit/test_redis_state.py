"""The declaration of requeue's Redis state (``requeue.queues.keys``) and the Lua rendered from it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from requeue.cli import main
from requeue.queues import lua, statedoc
from requeue.queues.keys import Progress, Stage, owned_keys

LUA_SOURCE = Path(lua.__file__)
#: The scripts requeue registers from :mod:`requeue.queues.lua`.
SCRIPTS = (
    "SELECT_PAGE",
    "SELECT_WINDOW",
    "PLAN_MOVES",
    "FAST_GUARD",
    "FAST_TALLY",
    "BULK_GUARD",
    "BULK_TALLY",
    "TALLY_BATCH",
    "BATCH_HEAD",
    "ACQUIRE_LEASE",
    "RELEASE_LEASE",
)

#: The stored names a replay started by the previous requeue has in Redis. Changing one strands
#: those replays: migrate their progress hashes instead (tests/integration/test_replay_upgrade.py).
STORED_FIELDS = {
    "stage",
    "paused_before",
    "queue",
    "owner",
    "selection",
    "slow_pos",
    "upper",
    "started_ms",
    "sel_score",
    "sel_id",
    "matched",
    "scanned",
    "corrupt",
    "over_budget",
    "not_failed",  # added with selector.jobIds: absent in older replays, read as 0
    "lifo_count",
    "prio_count",
    "reasons_folded",
    "bulk_min",
    "bulk_max",
    "cursor",
    "replayed",
    "skipped",
    "missing",
    "bulk_moved",
    "fast_miss",
    "copied_upto",
    "we_paused",
    "replayed_ms",
    "v_pos",
    "p_c",
    "p_f",
    "p_p",
    "vc",
    "vf",
    "vp",
    # added with verify.smokeTest: absent in older replays, which never had one
    "smoke",
    "smoke_attempts",
    "smoke_next_ms",
    "smoke_sent_ms",
    "smoke_verified",
    "smoke_answer",
    "smoke_c",
    "smoke_f",
    "outcome",
    "outcome_reason",
    "outcome_message",
    "finished_ms",
    # added with selector.dedupeBy: only a replay with dedupeBy writes them; absent, read as 0 / not done
    "dd_score",
    "dd_id",
    "dd_scanned",
    "dd_done",
    "duplicates",
    "no_dedupe_key",
}
STORED_STAGES = {"gates", "selecting", "replaying", "verifying", "done"}
#: Literals in requeue's Lua that equal a declared name but are not one: BULK_GUARD's veto reason.
NOT_FIELDS = {'return "cursor"'}


def test_the_stored_names_are_those_of_the_previous_version() -> None:
    assert {f.value for f in Progress} == STORED_FIELDS
    assert {s.value for s in Stage} == STORED_STAGES


def test_every_name_has_a_one_line_meaning() -> None:
    for member in [*Progress, *Stage]:
        assert member.meaning and "\n" not in member.meaning, member.name
    for key in owned_keys():
        assert key.pattern.startswith("requeue:") and key.holds and key.lifetime, key


def test_a_stage_is_its_stored_string() -> None:
    stored: str = Stage.REPLAYING  # as a plain str, as Redis and the engine's lookups see it
    assert stored == "replaying"
    assert {"stage": "done"}[Progress.STAGE] == Stage.DONE
    assert f"{Progress.PASS_COMPLETED}" == "p_c"


def test_every_placeholder_is_filled() -> None:
    for name in SCRIPTS:
        text = getattr(lua, name)
        assert "${" not in text, name
    assert '"cursor"' in lua.BATCH_HEAD and '"replaying"' in lua.SELECT_WINDOW
    assert '"\\0other"' in lua.SELECT_WINDOW


def test_a_placeholder_naming_nothing_fails_loudly() -> None:
    assert lua.render("x(${Progress.V_POS}, ${Stage.DONE})") == 'x("v_pos", "done")'
    for bad in ("${Progress.NOPE}", "${Stage.meaning}", "${Nothing.X}", "${REASONS_OTHER.X}"):
        with pytest.raises(lua.UnknownPlaceholder, match="names nothing"):
            lua.render(bad)


def test_lua_string_escapes() -> None:
    assert lua.lua_string('a"b\\c') == '"a\\"b\\\\c"'
    assert lua.lua_string("\x00other") == '"\\0other"'
    assert lua.lua_string("\x001") == '"\\0001"'


def _lua_templates() -> list[str]:
    """Every string constant of lua.py that is Lua code (the templates, before rendering)."""
    tree = ast.parse(LUA_SOURCE.read_text())
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and ("rcall" in node.value or "redis.call" in node.value)
    ]


def test_no_declared_name_is_typed_into_the_lua() -> None:
    templates = _lua_templates()
    assert len(templates) >= len(SCRIPTS)
    declared = {m.value for m in [*Progress, *Stage]}
    for template in templates:
        for allowed in NOT_FIELDS:
            template = template.replace(allowed, "")
        typed = set(re.findall(r'"([^"\\]*)"', template)) & declared
        assert not typed, f"use ${{Progress.…}} / ${{Stage.…}} for {sorted(typed)} in:\n{template[:200]}"


def test_the_scripts_text_and_sha_are_stable() -> None:
    import importlib

    before = {name: getattr(lua, name) for name in SCRIPTS}
    importlib.reload(lua)
    assert {name: getattr(lua, name) for name in SCRIPTS} == before


# -- docs/architecture.md's Redis-state section --------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_the_repository_page_shows_the_declaration() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert statedoc.with_redis_state(page) == page, "run `requeue crds` and commit"
    for member in Progress:
        assert f"| `{member.value}` | `Progress.{member.name}` | {member.meaning} |" in page
    for key in owned_keys():
        assert f"`{key.pattern}`" in page


def test_crds_rewrites_the_section_and_check_names_a_stale_page(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    page = docs / "architecture.md"
    page.write_text(f"# Before\n\n{statedoc.BEGIN}\nold table\n{statedoc.END}\n\n## After\n")
    runner = CliRunner()
    checked = runner.invoke(main, ["crds", "--check", "--dir", str(tmp_path / "crds")])
    assert checked.exit_code == 1
    assert str(page) in checked.output
    written = runner.invoke(main, ["crds", "--dir", str(tmp_path / "crds")])
    assert written.exit_code == 0, written.output
    text = page.read_text()
    assert text.startswith(f"# Before\n\n{statedoc.BEGIN}\n")
    assert text.endswith(f"{statedoc.END}\n\n## After\n")
    assert "old table" not in text and "`requeue:replay:{id}:progress`" in text
    assert runner.invoke(main, ["crds", "--check", "--dir", str(tmp_path / "crds")]).exit_code == 0


def test_a_page_without_markers_is_refused(tmp_path: Path) -> None:
    with pytest.raises(statedoc.MarkersMissing, match="redis-state:begin"):
        statedoc.with_redis_state("# no markers\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "architecture.md").write_text("# no markers\n")
    result = CliRunner().invoke(main, ["crds", "--dir", str(tmp_path / "crds")])
    assert result.exit_code == 1
    assert "architecture.md" in result.output and "redis-state:begin" in result.output
