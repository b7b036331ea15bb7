"""Step 10: the card, the software, and the two ceilings the other steps are measured against: device copy
bandwidth and bf16 matmul throughput (beside the card's dense bf16 peak from its datasheet, where known)."""
# budget: 20

from common import Step, copy_floor_ms, median_ms

step = Step(__doc__)

import subprocess  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
import triton  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0,
                    "H100 PCIe": 756.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def datasheet_peak(name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


name = torch.cuda.get_device_name() if step.cuda else "CPU (dry run)"
row = {"device": name, "torch": torch.__version__, "triton": triton.__version__,
       "cuda": torch.version.cuda or "-"}
if step.cuda:
    props = torch.cuda.get_device_properties(0)
    row.update(memory_GiB=props.total_memory / 2**30, SMs=props.multi_processor_count,
               capability=f"sm_{props.major}{props.minor}")
    smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,clocks.max.mem",
                          "--format=csv,noheader"], capture_output=True, text=True)
    row["driver, max SM / mem clock"] = smi.stdout.strip() or smi.stderr.strip()
nbytes = 2**31 if step.cuda else 2**22
row["copy GB/s (read + write)"] = nbytes / copy_floor_ms(nbytes, step.device, step.cuda) / 1e6
n = 8192 if step.cuda else 64
a = torch.randn(n, n, device=step.device, dtype=torch.bfloat16)
b = torch.randn(n, n, device=step.device, dtype=torch.bfloat16)
row["bf16 matmul TFLOP/s (measured)"] = 2 * n**3 / median_ms(lambda: a @ b, step.cuda) / 1e9
row["bf16 peak TFLOP/s (datasheet)"] = datasheet_peak(name)
step.record("Device", row)
sys.exit(step.finish())
