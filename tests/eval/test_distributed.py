"""A sweep sharded over two gloo processes gives the same summary as one process."""

from __future__ import annotations

import json

import pytest
import torch

from lenssample.eval.config import load_config
from lenssample.eval.distributed import spawn_sweep
from lenssample.eval.records import read_records, record_files
from lenssample.eval.runs import run_sweep
from tests.eval.test_runs import config_text, write_inputs
from tests.eval_helpers import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_process_sharded_run_equals_one_process(tmp_path):
    write_inputs(tmp_path)
    path = tmp_path / "sweep.toml"
    path.write_text(config_text(tmp_path, tmp_path / "unused"))
    one = run_sweep(load_config(path, out=tmp_path / "one"), progress=False)
    two = spawn_sweep(path, 2, out=tmp_path / "two", threads=1)
    files = [p.name for p in record_files(tmp_path / "two")]
    assert files == ["records.rank0.jsonl", "records.rank1.jsonl"]
    per_rank = [len(p.read_text().splitlines()) for p in record_files(tmp_path / "two")]
    assert min(per_rank) > 0 and sum(per_rank) == len(read_records(tmp_path / "one"))
    assert two == one
    assert json.loads((tmp_path / "two" / "summary.json").read_text()) == one
