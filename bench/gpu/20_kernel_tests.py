"""Step 20: the kernel tests on CUDA tensors, the Triton kernels compiled for the card instead of interpreted.

First `python -m fastforget_kernels.aot` compiles every specialization for this card's arch on all CPU cores, into the
Triton cache the tests then hit (deduped compiles: each specialization once, in parallel); then the tests run,
bfloat16 cases first, so that a budget cut still leaves the numerics that matter most checked.
A dry run runs a few of the same tests on the CPU, interpreted.
"""
# budget: 100

from common import REPO, Step

step = Step(__doc__)

import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

TESTS = ["tests/test_reweighted_cross_entropy.py", "tests/test_tv_distance.py"]
env = dict(os.environ, KERNELS_TEST_DEVICE=str(step.device), PYTHONPATH=str(REPO))
env.pop("TRITON_INTERPRET", None) if step.cuda else env.update(TRITON_INTERPRET="1")


def run(what: str, command: list[str], timeout: float, required: bool = True) -> None:
    start = time.monotonic()
    try:
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=max(timeout, 5))
        output, status = result.stdout + result.stderr, result.returncode
    except subprocess.TimeoutExpired as error:
        output, status = (error.stdout or b"").decode() + "\n(timed out)", "timeout"
    print(output[-4000:], flush=True)
    summary = re.findall(r"\d+ (?:passed|failed|skipped|deselected|errors?)", output)
    step.record("Kernel tests on the device", {"what": what, "exit": status, "seconds": time.monotonic() - start,
                                                "summary": ", ".join(summary) or output.strip()[-200:]})
    if status != 0 and required:
        step.fail(f"{what}: exit {status}")
    elif status != 0:
        step.note(f"{what} did not complete (exit {status}): the tests compile on first use instead")


if step.cuda:
    capability = "sm_{}{}".format(*torch.cuda.get_device_capability())
    if capability in ("sm_80", "sm_90"):
        run(f"AOT compile, {capability}, {os.cpu_count()} processes",
            [sys.executable, "-m", "fastforget_kernels.aot", "--arch", capability], step.left_s() * 0.4, required=False)
    for selection in ("bfloat16", "not bfloat16"):
        if not step.out_of_time(f"kernel tests ({selection})"):
            run(f"pytest -k '{selection}'", [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                             "-k", selection, *TESTS], step.left_s())
else:
    run("pytest -k 'two_classes and triton'", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                                "-k", "two_classes and triton", *TESTS], step.left_s())
sys.exit(step.finish())
