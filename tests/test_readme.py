"""The README's Python block runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_the_python_block_runs_as_written(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no Python block"
    monkeypatch.chdir(tmp_path)  # it writes runs/ where it stands
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - the repository's own README
    assert (tmp_path / "runs" / "rwft" / "model.safetensors").is_file()
    assert namespace["report"].acc_f_test <= namespace["report"]["acc_r_test"]
    assert namespace["mine"].meta["method"] == "rwft-o"
