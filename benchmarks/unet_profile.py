"""Where a training step of ECLIPSE's diffusion UNet spends its time on this CPU, and how far it is from the peak.

    python benchmarks/unet_profile.py                        # the cpu UNet preset, batch 128, the real hybrid loss
    python benchmarks/unet_profile.py --steps 1 --batch 16 --tag smoke

Answers "why is the fit slow here" with numbers rather than guesses: torch.profiler's self time per operator kind
over a few real training steps (hybrid loss on t < 500, AdamW), the convolutions split by feature-map size, the
step's FLOPs (FlopCounterMode) as achieved GFLOP/s against this machine's fp32 matmul peak and against a ResNet-18
at width 1/4 (the throughput shared/reference/cpu-scale-notes.md quotes for this machine kind), and each UNet
level's 3×3 convolution alone, forward + backward, in NCHW and NHWC. Writes benchmarks/results/unet_profile*.json.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, machine, matmul_peak_gflops, save  # noqa: E402

from unpoison.models import create_model  # noqa: E402
from unpoison.models.diffusion import UNET_PRESETS, GaussianDiffusion, build_unet  # noqa: E402

KINDS = {"aten::convolution_backward": "convolution (backward)", "aten::mkldnn_convolution": "convolution (forward)",
         "aten::native_group_norm": "group norm", "aten::native_group_norm_backward": "group norm",
         "aten::silu": "SiLU", "aten::silu_backward": "SiLU", "aten::copy_": "copies"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3, help="profiled training steps (after two warm-up steps)")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds of the single-convolution timings")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.manual_seed(0)
    b = args.batch
    model = build_unet(args.preset, 3, (32, 32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    diffusion = GaussianDiffusion.cosine(4000)
    x0 = torch.rand(b, 3, 32, 32) * 2 - 1

    def step() -> None:
        t = torch.randint(0, 500, (b,))
        loss = diffusion.training_losses(model, x0, t, torch.randn_like(x0), 0.001)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        step()
    step_gflop = fc.get_total_flops() / 1e9
    step()
    with profile(record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    kinds: dict[str, float] = defaultdict(float)
    conv_by_size: dict[str, float] = defaultdict(float)
    for e in events:
        kinds[KINDS.get(e.key, "other")] += e.self_cpu_time_total
        if e.key in ("aten::convolution_backward", "aten::mkldnn_convolution") and e.input_shapes:
            # the first input is the output gradient (backward) or the input (forward): its spatial size names the level
            shape = e.input_shapes[0]
            size = f"{shape[-2]}x{shape[-1]}" if len(shape) == 4 else "?"
            conv_by_size[size] += e.self_cpu_time_total
    step_s = total / 1e6 / args.steps
    shares = {k: round(v / total, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}
    conv_shares = {k: round(v / total, 3) for k, v in sorted(conv_by_size.items(), key=lambda kv: -kv[1])}
    print(f"step {step_s:.3f} s (profiled), {step_gflop:.1f} GFLOP", shares, conv_shares, flush=True)

    # a ResNet-18 at width 1/4, batch 128: the reference notes' throughput for this machine kind (280-316 img/s)
    r18 = create_model("resnet18", width=0.25)
    r18_opt = torch.optim.SGD(r18.parameters(), lr=0.1, momentum=0.9)
    xr, yr = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))

    def r18_step() -> None:
        loss = F.cross_entropy(r18(xr), yr)
        r18_opt.zero_grad(set_to_none=True)
        loss.backward()
        r18_opt.step()

    # each level's 3x3 convolution (channels × channels), forward + backward, in both memory formats
    chans = UNET_PRESETS[args.preset]["channels"] if args.preset in UNET_PRESETS else ()
    convs = {}
    for i, c in enumerate(chans):
        size = 32 >> i
        for fmt in ("nchw", "nhwc"):
            xi = torch.randn(b, c, size, size)
            if fmt == "nhwc":
                xi = xi.contiguous(memory_format=torch.channels_last)
            xi.requires_grad_()
            w = torch.randn(c, c, 3, 3, requires_grad=True)

            def conv_step(xi: torch.Tensor = xi, w: torch.Tensor = w) -> None:
                F.conv2d(xi, w, padding=1).sum().backward()
            convs[f"{size}x{size}_{c}ch_{fmt}"] = (conv_step, 3 * 2 * b * c * c * 9 * size * size / 1e9)
    timed = {"unet_step": step, "resnet18_w4_step": r18_step, **{k: f for k, (f, _) in convs.items()}}
    med = interleaved_medians(timed, args.repeats)
    peak = matmul_peak_gflops()
    conv_rows = {k: {"ms": round(1e3 * med[k], 2), "gflops": round(g / med[k], 1)} for k, (_, g) in convs.items()}
    res = {"preset": args.preset, "batch": b, "profiled_steps": args.steps, "repeats": args.repeats,
           "unet_step_s": round(med["unet_step"], 4), "unet_step_gflop": round(step_gflop, 2),
           "unet_achieved_gflops": round(step_gflop / med["unet_step"], 1),
           "matmul_peak_gflops": round(peak, 1),
           "resnet18_w4_img_per_s": round(128 / med["resnet18_w4_step"], 1),
           "profiled_step_s": round(step_s, 4), "self_time_share": shares, "conv_share_by_feature_map": conv_shares,
           "single_conv_fwd_bwd": conv_rows, "machine": machine(), "command": "python " + " ".join(sys.argv)}
    for k, v in res.items():
        if k not in ("machine", "command"):
            print(k, v)
    print(save("unet_profile" + (f"_{args.tag}" if args.tag else ""), res))


if __name__ == "__main__":
    main()
