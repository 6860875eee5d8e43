"""The README's code is examples/quickstart.py: it runs, and the README quotes it verbatim."""

from __future__ import annotations

import re
from pathlib import Path

from examples import quickstart
from oversync_sa.testing import PostgresServer, sqlalchemy_url

ROOT = Path(__file__).resolve().parents[2]


async def test_quickstart_syncs_a_note_between_two_devices(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    url = pg_server.create_database()
    try:
        body = await quickstart.run(sqlalchemy_url(url), tmp_path)
    finally:
        pg_server.drop_database(url)
    assert body == "Bring boots"


def test_readme_python_blocks_are_quoted_from_the_quickstart() -> None:
    readme = (ROOT / "README.md").read_text()
    source = (ROOT / "examples" / "quickstart.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "the README shows no Python code"
    for block in blocks:
        for line in block.strip().splitlines():
            assert line.rstrip() in source, f"README line not in examples/quickstart.py: {line!r}"
