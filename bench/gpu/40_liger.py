"""Step 40: Liger-Kernel 0.8.5 side by side with the fused kernels, each against its own essential-bytes floor.

- hard-label cross-entropy: `LigerCrossEntropyLoss` (gradient written into the logits: read logits, write
  gradient, 2 passes) beside the fused reweighted cross-entropy (3 passes: it also reads the teacher);
- the same gradient as the reweighted cross-entropy: `log_softmax` + `LigerKLDIVLoss` against the target q*
  (floor: read student, read q*, write the gradient) beside the fused kernel, which builds q* from the teacher;
- `LigerTVDLoss` on probabilities (it also writes a gradient: 3 passes) beside `tv_distance(from_logits=False)`
  (no gradient: 2 passes).

Liger travels as a wheel (no network on the GPU machine): `pip download liger-kernel==0.8.5 --no-deps -d .whl`
on a machine with PyPI, then name `.whl` in the device tool's carry; bench/gpu.sh installs it from there with
`--no-index`. Without it (or on a dry run: Liger needs CUDA) the step says so and records nothing else.
"""
# budget: 40

from common import Step, copy_floor_ms, median_ms

step = Step(__doc__)

import sys  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from kernel_cases import make_inputs  # noqa: E402

import fastforget_kernels as kernels  # noqa: E402

TABLE = "Liger-Kernel 0.8.5 side by side (forward + backward unless noted)"


def liger_modules():
    try:
        import liger_kernel
        from liger_kernel.transformers import LigerCrossEntropyLoss, LigerKLDIVLoss, LigerTVDLoss
    except ImportError as error:
        step.note(f"Liger-Kernel is ABSENT ({error}): carry .whl (see this step's docstring) to compare with it")
        return None
    step.note(f"Liger-Kernel {getattr(liger_kernel, '__version__', '?')} imported")
    return LigerCrossEntropyLoss(), LigerKLDIVLoss(reduction="batchmean"), LigerTVDLoss(reduction="batchmean")


def timed(what: str, impl: str, fn, passes: int, tensor: torch.Tensor, shape: str) -> None:
    essential = passes * tensor.numel() * tensor.element_size()
    floor = copy_floor_ms(essential, step.device, step.cuda)
    fn()
    ms = median_ms(fn, step.cuda)
    step.record(TABLE, {"op": what, "shape": shape, "dtype": str(tensor.dtype).removeprefix("torch."), "impl": impl,
                        "ms": ms, "essential passes": passes, "copy floor ms": floor, "fraction of copy": floor / ms})


def compare(batch: int, classes: int, dtype: torch.dtype, liger) -> None:
    liger_ce, liger_kl, liger_tvd = liger
    shape = f"{batch}x{classes}"
    student, teacher, mask = make_inputs(batch, classes, dtype, step.device)
    labels = torch.randint(0, classes, (batch,), device=step.device)
    logits = student.detach().clone().requires_grad_()

    def liger_hard() -> None:
        liger_ce(logits, labels).backward()
        logits.grad = None

    def fused() -> None:
        kernels.reweighted_cross_entropy(student, teacher, mask, backend="triton").backward()
        student.grad = None

    target = kernels.reweighted_target(teacher, mask).to(dtype)

    def liger_kl_step() -> None:
        liger_kl(F.log_softmax(student, dim=1), target).backward()
        student.grad = None

    timed("cross-entropy, hard labels", "LigerCrossEntropyLoss", liger_hard, 2, student, shape)
    timed("cross-entropy, reweighted target", "fused reweighted CE (teacher logits)", fused, 3, student, shape)
    timed("cross-entropy, reweighted target", "log_softmax + LigerKLDIVLoss (q* given)", liger_kl_step, 3, student,
          shape)
    p, q = student.detach().softmax(dim=1), teacher.softmax(dim=1)
    p_grad = p.clone().requires_grad_()
    timed("TV distance, probabilities", "LigerTVDLoss (forward, writes a gradient)",
          lambda: liger_tvd(p_grad, q), 3, p, shape)
    timed("TV distance, probabilities", "tv_distance(from_logits=False), forward",
          lambda: kernels.tv_distance(p, q, from_logits=False, backend="triton"), 2, p, shape)


liger = liger_modules()
if liger is not None and not step.cuda:
    step.note("dry run: Liger's kernels need CUDA, so nothing is timed")
elif liger is not None:
    for dtype in (torch.bfloat16, torch.float32):
        for batch, classes in ((65536, 1000), (4096, 32000), (1048576, 10)):
            if not step.out_of_time(f"Liger comparison {batch}x{classes} {dtype}"):
                compare(batch, classes, dtype, liger)
sys.exit(step.finish())
