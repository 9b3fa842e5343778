"""docs/configuration.md stays complete (every setting and every FXCM_* variable is in it), and
the migration tables of docs/operations.md say what config/legacy.py does."""

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


def test_the_migration_tables_of_operations_md_are_what_the_generator_writes() -> None:
    from config.reference import render_migration

    text = (DOC.parent / "operations.md").read_text()
    start = "<!-- migration tables: python -m config.reference --migration -->\n"
    end = "<!-- end of migration tables -->"
    assert start in text and end in text
    assert text[text.index(start) + len(start):text.index(end)] == render_migration(), \
        "run: python -m config.reference --migration, and paste it into docs/operations.md"


def test_the_migration_tables_name_every_predecessor_key_and_variable() -> None:
    from config.legacy import LEGACY_KEYS, PREDECESSOR_VARIABLES, REDIS_VARIABLES
    from config.reference import render_migration

    text = render_migration()
    for name in list(LEGACY_KEYS) + list(PREDECESSOR_VARIABLES) + list(REDIS_VARIABLES):
        assert "| `{}` |".format(name) in text, name
