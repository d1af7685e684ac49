"""The `t2i` command: each subcommand parses its flags and calls one package function.

Subcommand groups live beside the code they drive (`t2i/data/cli.py`, `t2i/training/cli.py`, ...)
and expose `add_parser(subparsers)`; this file only wires them together. Heavy imports (torch,
transformers) happen inside the command functions, so `t2i --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys

# Before anything loads torch (and with it libgomp, which reads this once): threads that wait
# sleep instead of spinning. Beside a second busy process, spinning threads took 5-9x the CPU
# time per image; sleeping ones cost nothing measurable on idle cores (BENCHMARKS.md, "Threads").
# A user's own OMP_WAIT_POLICY wins; T2I_KEEP_OMP=1 leaves libgomp's default, and so does `train`
# (long runs on a machine given to them, measured with spinning threads in BENCHMARKS.md).
if os.environ.get("T2I_KEEP_OMP") != "1" and sys.argv[1:2] != ["train"]:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from t2i.argtypes import add_cads_arguments, parse_interval  # noqa: E402

# The commands that run a network here and take --threads.
THREADED = ("generate", "interpolate", "restyle", "variations", "eval", "serve")
MAX_THREADS = 1024


def _threads(text: str) -> int:
    n = int(text) if text.strip().isdigit() else 0
    if not 1 <= n <= MAX_THREADS:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of threads from 1 to {MAX_THREADS}, got {text!r}"
        )
    return n


def cgroup_cpus(root: str = "/sys/fs/cgroup") -> int | None:
    """CPUs a cgroup CPU quota allows this process (cgroup v2 cpu.max or v1 cfs), None if none:
    in a container limited to 2 CPUs of a 64-core host the affinity mask still lists 64."""
    try:
        quota, period = open(os.path.join(root, "cpu.max")).read().split()[:2]
    except (OSError, ValueError):
        try:
            quota = open(os.path.join(root, "cpu", "cpu.cfs_quota_us")).read().strip()
            period = open(os.path.join(root, "cpu", "cpu.cfs_period_us")).read().strip()
        except OSError:
            return None
    try:
        q, per = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    return max(1, -(-q // per)) if q > 0 and per > 0 else None


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity mask (taskset, a container's cpuset),
    capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpus()
    return max(1, min(cores, quota or cores))


def choose_threads(flag: int | None, current: int, environ=os.environ) -> int | None:
    """The intra-op thread count a command sets, or None to leave torch's own: --threads when
    given; else OMP_NUM_THREADS when the user set it (torch already read it); else torch's
    default (`current`) capped by the cores this process may use. The system load is not used:
    with waiting threads asleep a busy neighbour cost two threads only a few percent more than one
    (BENCHMARKS.md, "Threads"), and a load average lags a minute and counts the whole host."""
    if flag is not None:
        return flag
    if environ.get("OMP_NUM_THREADS"):
        return None
    return min(current, usable_cores())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="t2i",
        description="Text-to-image diffusion: generate, train, evaluate.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_generate(sub)
    _add_interpolate(sub)
    _add_restyle(sub)
    _add_variations(sub)
    _add_train(sub)
    _add_export(sub)
    _add_data(sub)
    _add_eval(sub)
    _add_serve(sub)
    for name in THREADED:
        sub.choices[name].add_argument(
            "--threads",
            type=_threads,
            default=None,
            help="CPU threads for the network (default: the cores this process may use; "
            "OMP_NUM_THREADS when set)",
        )
    return parser


def _set_threads(args: argparse.Namespace) -> None:
    if args.command not in THREADED:
        return
    import torch

    n = choose_threads(args.threads, torch.get_num_threads())
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="turn a diffusion run's newest checkpoint into a model folder",
        epilog="example:\n  t2i export runs/shapes --out my-shapes-model\n"
        "  t2i generate 'a red circle' --model my-shapes-model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "run", help="run directory of `t2i train` (diffusion, autoregressive or autoencoder)"
    )
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--dtype", default="float16", help="float16 (default), float32 or bfloat16")
    p.add_argument("--data", default=None, help="the run's --data, if the run does not record it")
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="the model's default guidance scale (default: the run's --guidance_scale)",
    )
    p.add_argument(
        "--step",
        type=int,
        default=None,
        help="export the checkpoint of this step (one --loop.keep_ckpts kept), not the newest",
    )
    p.add_argument(
        "--base",
        default=None,
        help="an upscaler run (--low_res): the base model folder that draws its small images; "
        "copied in, the folder is then a cascade",
    )
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from t2i.training.cli import export_run

    print(
        export_run(
            args.run,
            args.out,
            args.dtype,
            args.data,
            base=args.base,
            guidance=args.guidance,
            step=args.step,
        )
    )
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from t2i.server import cli as server_cli

    server_cli.add_parser(sub)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from t2i.evaluation import cli as eval_cli

    eval_cli.add_parser(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from t2i.training import cli as training_cli

    training_cli.add_parser(sub)


GENERATE_EXAMPLES = """examples:
  t2i generate "a red circle above a blue square" --out scene.png
  t2i generate "an ankle boot" --model fashion --n 4 --guidance 4 --seed 7 --out boots.png
  t2i generate --from scene.png --out again.png    # the parameters stored in a t2i PNG
  t2i generate "fox emoji, 3d style" --model emoji
  t2i generate "a red circle above a blue square" --model runs/shapes/model
  t2i generate "a red star" --init circle.png --strength 0.6 --out star.png      # img2img
  t2i generate "a green square" --init scene.png --mask mask.png --out fixed.png # inpaint
  t2i generate "a (red:1.4) circle, [small]" --negative "blue" --out w.png       # weights
  t2i generate "a teal circle <lora:teal:0.8>" --lora-dir loras/ --out t.png    # a LoRA
  t2i generate "a teal circle" --lora runs/teal/model/teal.safetensors:0.8      # the same
  t2i generate "a sandal" --model fashion --guidance 0 --guide classifier:runs/g/model:4
  t2i generate "a red circle" --model runs/draw/model --strip steps.gif   # step by step
"""


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise argparse.ArgumentTypeError(f"size must look like 64x64 (WxH), got {text!r}")
    return int(w), int(h)


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="make images from a prompt",
        epilog=GENERATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", nargs="?", help="what to draw")
    p.add_argument("--negative", default=None, help="what to steer away from")
    p.add_argument("--model", default=None, help="bundled model name or model folder (shapes)")
    p.add_argument("--sampler", default=None, help="ddim, euler, heun, dpmpp_2m, ... (model's)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (model's default)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument(
        "--guidance-interval",
        type=parse_interval,
        default=None,
        help="guide only where LO < sigma <= HI ('LO,HI'), or 'all' steps (model's default)",
    )
    add_cads_arguments(p)
    p.add_argument("--seed", type=int, default=None, help="image i uses seed + i (default 0)")
    p.add_argument("--n", type=int, default=1, help="number of images")
    p.add_argument("--size", type=_size, default=None, help="WxH in pixels (model's default)")
    p.add_argument("--out", default="t2i.png", help="PNG path; with --n > 1, -<seed> is added")
    p.add_argument("--from", dest="from_png", default=None, help="reuse a t2i PNG's parameters")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--init", default=None, help="start from this image (img2img / inpainting)")
    p.add_argument(
        "--image-prompt",
        metavar="IMAGE",
        help="an unCLIP model draws from this image's CLIP embedding (variations; the prompt may "
        "be left out)",
    )
    p.add_argument("--strength", type=float, default=None, help="img2img in [0, 1] (0.75)")
    p.add_argument("--mask", default=None, help="inpainting mask PNG, white = repaint")
    p.add_argument("--resample", type=int, default=None, help="inpainting RePaint passes (1)")
    p.add_argument(
        "--mask-blur",
        type=int,
        default=None,
        help="inpainting: pixels over which the result fades into the init at the mask's edge (0)",
    )
    p.add_argument(
        "--lora",
        action="append",
        metavar="FILE[:SCALE]",
        help="apply a LoRA file at a scale (1 when left out); repeatable",
    )
    p.add_argument(
        "--lora-dir",
        default=None,
        help="folder where <lora:NAME:SCALE> in the prompt finds NAME.safetensors (T2I_LORA_DIR)",
    )
    p.add_argument(
        "--embedding",
        action="append",
        metavar="FILE|DIR",
        help="a textual-inversion word (t2i train textual_inversion), or a folder of them "
        "(those learnt on this model); repeatable",
    )
    p.add_argument(
        "--guide",
        action="append",
        metavar="KIND:DIR[:SCALE]",
        help="steer by a network trained on noisy samples (t2i train guide): KIND classifier "
        "or clip, its folder, a scale (1 when left out); with --guidance 0 it steers the "
        "unconditional model; repeatable",
    )
    p.add_argument(
        "--control",
        action="append",
        metavar="NAME:IMAGE[:SCALE[:START:END]]",
        help="a spatial control (ControlNet or T2I-Adapter) by name, its condition image (a grey "
        "map of the image's size: white edges, strokes or shapes on black), a scale (1) and the "
        "fraction of the steps it acts on (0:1); the model folder's controls/ or --control-model; "
        "repeatable, several at once",
    )
    p.add_argument(
        "--control-model",
        action="append",
        metavar="DIR",
        help="load a control folder (t2i train controlnet / t2i_adapter); repeatable",
    )
    p.add_argument(
        "--guess-mode",
        action="store_true",
        default=None,
        help="the controls reach the prompt's half of guidance only: the condition drawn "
        "with an empty or short prompt (ControlNet's guess mode)",
    )
    p.add_argument(
        "--bf16", action="store_true", help="bf16 networks: faster on CPUs with AVX512-BF16/AMX"
    )
    p.add_argument(
        "--strip",
        metavar="FILE.png|FILE.gif",
        default=None,
        help="also write the first image after every step: a strip (.png) or an animation "
        "(.gif); AlignDRAW's canvas, a diffusion model's denoised estimate",
    )
    p.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> int:
    from t2i.generate import generate_to_files

    paths = generate_to_files(args)
    for path in paths:
        print(path)
    return 0


INTERPOLATE_EXAMPLES = """examples:
  t2i interpolate "a red circle" --seeds 1 2 --frames 6 --out seeds.png
  t2i interpolate "a red circle" "a blue square" --frames 6 --out prompts.png
  t2i interpolate "a red circle" --images a.png b.png --out real.png   # by DDIM inversion
"""


def _add_interpolate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "interpolate",
        help="a strip of images between two seeds, prompts or images",
        epilog=INTERPOLATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompts", nargs="+", help="one prompt, or two to interpolate between")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="two seeds (noise slerp)")
    p.add_argument("--images", nargs="+", default=None, help="two images to invert and join")
    p.add_argument("--frames", type=int, default=5, help="images in the strip (5)")
    p.add_argument("--negative", default=None, help="what to steer away from")
    p.add_argument("--model", default=None, help="bundled model name or model folder (shapes)")
    p.add_argument("--sampler", default=None, help="sampler (model's default)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (model's default)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0, help="both ends' seed without --seeds (0)")
    p.add_argument("--size", type=_size, default=None, help="WxH in pixels (model's default)")
    p.add_argument("--out", default="interpolation.png", help="the strip PNG")
    p.set_defaults(func=_interpolate)


def _interpolate(args: argparse.Namespace) -> int:
    from t2i.interpolate import interpolate_to_file

    print(interpolate_to_file(args))
    return 0


def _add_restyle(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "restyle",
        help="a GAN's style transfer: an image's style redrawn under other prompts",
        epilog='example:\n  t2i restyle shirt.png "a pullover" "a dress" --model runs/gan/model',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", help="the image whose style (what its caption leaves open) to keep")
    p.add_argument("prompts", nargs="+", help="what to redraw it as")
    p.add_argument("--model", required=True, help="a GAN model folder (t2i train gan)")
    p.add_argument("--out", default="restyled.png", help="the strip PNG: the image, then each")
    p.set_defaults(func=_restyle)


def _restyle(args: argparse.Namespace) -> int:
    from t2i.restyle import restyle_to_file

    print(restyle_to_file(args))
    return 0


def _add_variations(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "variations",
        help="an unCLIP model's variations of an image, or a walk between two images",
        epilog="examples:\n  t2i variations cat.png --model runs/unclip/model --n 4 --out var.png\n"
        "  t2i variations cat.png --towards dog.png --frames 6 --model M --out walk.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", help="the image whose CLIP embedding is drawn again")
    p.add_argument("--model", required=True, help="an unCLIP model folder (t2i train unclip)")
    p.add_argument("--n", type=int, default=4, help="variations to draw (seeds seed, seed+1, ...)")
    p.add_argument("--towards", metavar="IMAGE", help="walk to this image's embedding instead")
    p.add_argument("--frames", type=int, default=6, help="frames of the walk (--towards)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    p.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    p.add_argument("--sampler", help="sampler (default: the model's)")
    p.add_argument("--out", default="variations.png", help="PNG; several get -<seed> suffixes")
    p.set_defaults(func=_variations)


def _variations(args: argparse.Namespace) -> int:
    from t2i.variations import variations_to_file

    for path in variations_to_file(args):
        print(path)
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build, pack and inspect data sets")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    from t2i.data import cli as data_cli
    from t2i.data import emoji

    data_cli.add_parser(data_sub)
    emoji.add_parser(data_sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _set_threads(args)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"t2i {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
