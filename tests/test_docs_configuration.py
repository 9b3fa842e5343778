"""docs/configuration.md stays complete: every setting and every FXCM_* variable is in it."""

from __future__ import annotations

from pathlib import Path

from config.reference import render, rows
from config.settings import ENVIRONMENT

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_every_setting_and_variable_is_documented() -> None:
    text = DOC.read_text()
    missing = [key for key, _ in rows() if "`{}`".format(key) not in text]
    missing += [variable for variable in ENVIRONMENT if variable not in text]
    assert missing == [], "run: python -m config.reference > docs/configuration.md"


def test_the_document_is_what_the_generator_writes() -> None:
    assert DOC.read_text() == render(), "run: python -m config.reference > docs/configuration.md"
