"""One place decides about colour: ``--no-color`` or a non-empty ``NO_COLOR`` (https://no-color.org)
mean no ANSI escapes at all, even on a terminal; otherwise a terminal gets colour."""

from __future__ import annotations

import io

import pytest

from requeue.commands.output import make_console

STYLED = "[bold red]failed[/] [dim]3[/]"


def _printed(*, no_color: bool = False) -> str:
    out = io.StringIO()
    make_console(no_color=no_color, file=out, force_terminal=True).print(STYLED)
    return out.getvalue()


@pytest.fixture(autouse=True)
def _a_colour_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)


def test_a_terminal_gets_colour() -> None:
    assert "\x1b[" in _printed()


def test_an_empty_no_color_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "")
    assert "\x1b[" in _printed()


@pytest.mark.parametrize("value", ["1", "0", "true", "no"])
def test_no_color_with_any_value_means_no_escapes(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NO_COLOR", value)
    assert _printed() == "failed 3\n"


def test_the_flag_means_no_escapes() -> None:
    assert _printed(no_color=True) == "failed 3\n"
