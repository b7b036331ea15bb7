"""`fastforget train --ddp`: real torchrun gloo processes on the CPU against one process at the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastforget.data import load_dataset
from fastforget.data.loaders import Augment, InMemoryLoader
from fastforget.distributed import Shard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import ddp_fit  # noqa: E402


def _torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
               FASTFORGET_PROGRESS="0")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_sharded_batches_cover_the_global_batch_in_order():
    dataset = load_dataset("digits")
    options = dict(batch_size=12, shuffle=True, augment=Augment(crop_padding=2, flip=True), mean=dataset.mean,
                   std=dataset.std, drop_last=True, seed=5)
    whole = list(InMemoryLoader(dataset.train_images, dataset.train_labels, **options))
    shards = [list(InMemoryLoader(dataset.train_images, dataset.train_labels, shard=Shard(r, 3), **options))
              for r in range(3)]
    assert all(len(s) == len(whole) for s in shards)
    for step, (images, labels, indices) in enumerate(whole):
        for rank in range(3):
            got_images, got_labels, got_indices = shards[rank][step]
            assert torch.equal(got_indices, indices[rank::3]) and torch.equal(got_labels, labels[rank::3])
            assert torch.equal(got_images, images[rank::3])  # the same crops and flips as in one process
    with pytest.raises(ValueError, match="divisible"):
        InMemoryLoader(dataset.train_images, dataset.train_labels, shard=Shard(0, 5), **options)


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs (OMP_NUM_THREADS=1)
    try:
        ddp_fit.train(tmp_path)
    finally:
        torch.set_num_threads(threads)
    result = _torchrun(str(ROOT / "tests" / "ddp_fit.py"), str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    single = torch.load(tmp_path / "rank0-of-1.pt")
    ranks = [torch.load(tmp_path / f"rank{r}-of-2.pt") for r in range(2)]
    for name, weight in single.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # both ranks hold the same model
        assert torch.allclose(ranks[0][name], weight, rtol=0, atol=1e-5), (name, (ranks[0][name] - weight).abs().max())
    torch.manual_seed(0)
    start = torch.nn.Linear(64, 48)
    frozen = (torch.arange(48 * 64).view(48, 64) % 2) == 0
    assert torch.equal(ranks[0]["1.weight"][frozen], start.weight.detach()[frozen])  # masked: not even decayed
    assert (ranks[0]["1.weight"][~frozen] - start.weight.detach()[~frozen]).abs().min() > 0  # the rest trained


@pytest.mark.slow
def test_cli_train_ddp_under_torchrun(tmp_path):
    out = tmp_path / "original"
    result = _torchrun("-m", "fastforget", "train", "--config", "digits", "--out", str(out), "--ddp",
                       "--set", "train.epochs=3", "--set", "model.width=8")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    meta = json.loads((out / "model.json").read_text())
    assert meta["data_parallel"] == {"world_size": 2, "backend": "gloo", "sync_batchnorm": False}
    assert meta["test_accuracy"] > 50
    assert result.stdout.count("trained cnn on digits") == 1  # rank 0 alone reports


def test_ddp_outside_torchrun_says_how_to_launch(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fastforget", "train", "--out", str(tmp_path / "m"), "--ddp"],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "torchrun --standalone --nproc_per_node=N" in result.stderr
