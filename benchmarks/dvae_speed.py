"""Cost per D-VAE training step: unpoison's model vs a stand-in for the official architecture, same batch.

    python benchmarks/dvae_speed.py                       # CPU-default widths and the paper widths
    python benchmarks/dvae_speed.py --repeats 3 --batch 32 --tag smoke
    python benchmarks/dvae_speed.py --compile --tag compile   # adds the NHWC step under compile=true

The official ``ResNetDVAE`` (yuyi-sd/D-VAE) computes, per step, besides the used parts: the unused rest of its
ResNet-18 (``layer2[1]``, ``layer3``, ``layer4``, ``linear``) on the encoder features, whose logits enter no loss,
and four forward passes of a separate monitoring ResNet-18 (on x̂, x̂ + p̂, x − p̂ and once more in the code's
``loss_cls*`` terms) that are only logged. The stand-in below rebuilds that from the description in
shared/reference/dvae.md (a faithful cost model, not the official code): the same used D-VAE plus an unused tail and
a frozen monitor ResNet-18 run under no_grad. Reports the median of ``--repeats`` timed steps and the ratio.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, machine, save  # noqa: E402

from unpoison.defenses.purify.dvae import (  # noqa: E402
    DVAE,
    BasicBlock,
    DVAEConfig,
    forward_loss,
    vae_loss,
)
from unpoison.utils.device import compiled_or_error  # noqa: E402


def _resnet18(num_classes: int, width: int) -> nn.Module:
    """A CIFAR ResNet-18 (3×3 stem, 4 stages of 2 BasicBlocks) at base width ``width``."""
    w = [width, 2 * width, 4 * width, 8 * width]
    layers: list[nn.Module] = [nn.Conv2d(3, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU()]
    c = w[0]
    for i, wi in enumerate(w):
        layers += [BasicBlock(c, wi, 1 if i == 0 else 2), BasicBlock(wi, wi)]
        c = wi
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


class OfficialStandIn(nn.Module):
    """The used D-VAE plus the unused ResNet-18 tail computed on the encoder features (its logits are discarded)."""

    def __init__(self, cfg: DVAEConfig, num_classes: int) -> None:
        super().__init__()
        self.dvae = DVAE(3, (32, 32), num_classes, cfg)
        f = cfg.feat_channels  # layer2 width; the official tail: layer2[1], layer3, layer4, linear
        self.tail = nn.Sequential(BasicBlock(f, f), BasicBlock(f, 2 * f, 2), BasicBlock(2 * f, 2 * f),
                                  BasicBlock(2 * f, 4 * f, 2), BasicBlock(4 * f, 4 * f), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(4 * f, num_classes))

    def forward(self, x, y, noise):  # noqa: ANN001
        d = self.dvae
        h = d.encoder(x)  # the stem is shared by the VAE and the unused tail, as in the official forward
        mu, logvar = d.fc_mu(h), d.fc_var(h)
        w = d.post(mu + (0.5 * logvar).exp() * noise)
        return {"xhat": d.decoder(w), "mu": mu, "logvar": logvar, "p": d.decoder_p(d.class_emb[y] + w),
                "logits": self.tail(h)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--widths", default="cpu,paper", help="comma list of cpu | paper")
    ap.add_argument("--compile", action="store_true",
                    help="also time the NHWC step with compile=true (torch.compile of forward + loss)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.manual_seed(0)
    bs, k = args.batch, 10
    x, y = torch.rand(bs, 3, 32, 32), torch.randint(0, k, (bs,))
    out_rows = {}
    for which in [w.strip() for w in args.widths.split(",") if w.strip()]:
        cfg = DVAEConfig.from_dict({}, preset="paper" if which == "paper" else None)
        ours = DVAE(3, (32, 32), k, cfg)
        noise = torch.randn(ours.latent_shape(bs))

        def make_step(model: nn.Module, inp: torch.Tensor, fwd_loss=forward_loss):  # noqa: ANN001, ANN202
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

            def step() -> None:
                loss, _ = fwd_loss(model, inp, y, noise, 1.0, 0.01, 0.002)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
            return step

        # ``channels_last`` (the default since 2026-12-06): the same model in NHWC memory format, as D-VAE trains
        step_ours = make_step(copy.deepcopy(ours), x)
        x_nhwc = x.contiguous(memory_format=torch.channels_last)
        step_nhwc = make_step(copy.deepcopy(ours).to(memory_format=torch.channels_last), x_nhwc)
        compiled = {}
        if args.compile:  # what D-VAE runs with compile=true; the warm-up call below compiles it (not timed)
            compiled["nhwc_compiled"] = make_step(copy.deepcopy(ours).to(memory_format=torch.channels_last), x_nhwc,
                                                  compiled_or_error(forward_loss))

        official = OfficialStandIn(cfg, k)
        monitor = _resnet18(k, 64).eval()  # full-width ResNet-18 monitor, trained on the poisons (frozen here)
        opt2 = torch.optim.Adam(official.parameters(), lr=cfg.lr)

        def step_official() -> None:
            out = official(x, y, noise)
            loss, _ = vae_loss(out, x, 1.0, 0.01, 0.002)
            with torch.no_grad():  # the four monitoring forwards (logged only)
                for inp in (out["xhat"], (out["xhat"] + out["p"]).clamp(0, 1), (x - out["p"]).clamp(0, 1),
                            (x - out["p"]).clamp(0, 1)):
                    F.cross_entropy(monitor(inp), y)
            opt2.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(official.parameters(), 5.0)
            opt2.step()

        t0 = time.perf_counter()
        for step in compiled.values():
            step()
        compile_s = time.perf_counter() - t0
        t = interleaved_medians({"ours": step_ours, "nhwc": step_nhwc, "official": step_official, **compiled},
                                args.repeats)
        t_ours, t_nhwc, t_off = t["ours"], t["nhwc"], t["official"]
        # "ours" and the stand-in both NCHW: the architecture's saving alone; "nhwc": what the memory format adds
        out_rows[which] = {"config": cfg.to_dict(), "ours_step_s": round(t_ours, 4), "official_step_s": round(t_off, 4),
                           "ratio": round(t_off / t_ours, 2), "ours_img_per_s": round(bs / t_ours, 1),
                           "ours_nhwc_step_s": round(t_nhwc, 4), "nhwc_speedup": round(t_ours / t_nhwc, 2),
                           "ratio_nhwc": round(t_off / t_nhwc, 2)}
        if compiled:
            out_rows[which] |= {"nhwc_compiled_step_s": round(t["nhwc_compiled"], 4),
                                "compile_speedup": round(t_nhwc / t["nhwc_compiled"], 2),
                                "first_compiled_step_s": round(compile_s, 1)}
        r = out_rows[which]
        print(which, r["ours_step_s"], r["ours_nhwc_step_s"], r["official_step_s"], r["ratio"], r["nhwc_speedup"],
              r.get("compile_speedup", ""), flush=True)
    res = {"batch": bs, "repeats": args.repeats, "rows": out_rows, "machine": machine(),
           "command": "python " + " ".join(sys.argv)}
    print(save("dvae_speed" + (f"_{args.tag}" if args.tag else ""), res))


if __name__ == "__main__":
    main()
