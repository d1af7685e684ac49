"""Does a consistency student's draft, finished by a few guided steps of its teacher, reach the
teacher's accuracy at a fraction of its cost? (SDXL's base + refiner, A1111's "switch at", with
the roles set by cost: the cheap student lays the scene out, the teacher draws the last stretch.)

The student (an LCM-LoRA model such as `shapes-lcm`) takes its first J steps of a K-step LCM run
and re-noises its x0 jump to the sigma where its step J would start; the teacher then runs M DDIM
steps from there to 0 with its own guidance (CFG: two UNet batch units per step). Cost in UNet
batch units: J + 2M, against 2 x 20 = 40 for the teacher's card. J = K, M = 0 is the student
alone. Each setting is judged on the fixed prompts of `t2i eval` (image i from seed i):

    python3 experiments/lcm_refine_probe.py shapes-lcm shapes --n 300 --plans 4:4:0 4:3:1 4:2:2
"""

from __future__ import annotations

import argparse

import torch

import t2i
from t2i.data.judge import judge
from t2i.data.shapes import shapes_eval_prompts
from t2i.evaluation.metrics import compositional_accuracy
from t2i.samplers import sample_ddim, sample_lcm


def teacher_sigmas(table: torch.Tensor, sigma_switch: float, steps: int) -> torch.Tensor:
    """`steps` DDIM sigmas of the teacher from sigma_switch to 0, evenly spaced in timesteps."""
    t_switch = int((table - sigma_switch).abs().argmin())
    ts = torch.linspace(t_switch, 0, steps + 1)[:-1].round().long()
    return torch.cat([table[ts], torch.zeros(1)])


@torch.no_grad()
def draw(student, teacher, prompts, seeds, k: int, j: int, m: int) -> torch.Tensor:
    p_s = student.params(prompts[0], steps=k)
    p_t = teacher.params(prompts[0])
    sig_s = student.sigmas(k, p_s.sampler, student.lcm_grid(p_s))
    x, gens = student.noise(p_s, len(seeds), seeds)
    x = x * sig_s[0]
    student.apply_loras(p_s)
    cond_s = student.condition(p_s, prompts)
    x = sample_lcm(student.guided(p_s, sig_s), x, sig_s[: j + 1], cond_s, generator=gens)
    if m:
        table = teacher.denoiser.sigmas
        sig_t = teacher_sigmas(table, float(sig_s[j]), m)
        cond_t = teacher.condition(p_t, prompts)
        x = sample_ddim(teacher.guided(p_t, sig_t), x, sig_t, cond_t, generator=gens)
    return teacher.decode(x.float())


def accuracy(student, teacher, n: int, plan: tuple[int, int, int], batch: int) -> float:
    prompts = shapes_eval_prompts(n)
    verdicts = []
    for a in range(0, n, batch):
        part = prompts[a : a + batch]
        images = draw(student, teacher, part, list(range(a, a + len(part))), *plan)
        verdicts += [judge(im, p) for im, p in zip(images, part)]
    return compositional_accuracy(verdicts)["overall"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("student", help="an LCM-LoRA model (shapes-lcm)")
    ap.add_argument("teacher", help="its teacher (shapes)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--plans", nargs="+", required=True, help="K:J:M (student K-step grid, J "
                    "student steps, M teacher steps)")  # fmt: skip
    args = ap.parse_args()
    student, teacher = t2i.load(args.student), t2i.load(args.teacher)
    for text in args.plans:
        k, j, m = (int(v) for v in text.split(":"))
        if not (0 < j <= k and m >= 0 and (m > 0 or j == k)):
            raise SystemExit(f"plan {text!r}: need 0 < J <= K, M >= 0, and M > 0 unless J = K")
        acc = accuracy(student, teacher, args.n, (k, j, m), args.batch)
        print(f"K {k}  J {j}  M {m}  units {j + 2 * m:2d}  accuracy {acc:.3f}", flush=True)


if __name__ == "__main__":
    main()
