"""`t2i eval MODEL` and `t2i eval sweep MODEL`: parse flags, call evaluate() / sweep(), say where
the outputs went. Heavy imports happen inside the command functions."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  t2i eval runs/shapes64/model --data shapes --n 200 --sampler dpmpp_2m --steps 20 --out eval/shapes
  t2i eval runs/fashion/model --data fashion --n 1000 --steps 50 --guidance 3 --out eval/fashion
  t2i eval sweep runs/shapes64/model --data shapes --n 100 \\
      --sampler ddim,euler,heun,dpmpp_2m,ddpm --steps 5,10,20,50 --guidance 3 --out eval/sweep
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from t2i.argtypes import add_cads_arguments, parse_interval

    p = subparsers.add_parser(
        "eval",
        help="score a model folder: JSON report + image grid, or a sampler sweep",
        description="Evaluate a model folder (`t2i eval MODEL`) or sweep samplers x steps "
        "(`t2i eval sweep MODEL`; --sampler, --steps, --guidance then take comma lists).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "target", nargs="+", metavar="[sweep] MODEL", help="model folder or bundled name"
    )
    p.add_argument(
        "--data", required=True, help="shapes, fashion, or an image folder (heldout split)"
    )
    p.add_argument("--n", type=int, default=None, help="images (eval default 1000, sweep 200)")
    p.add_argument("--sampler", default=None, help="ddim, euler, heun, dpmpp_2m, ddpm (model's)")
    p.add_argument("--steps", default=None, help="sampling steps (model's default)")
    p.add_argument("--guidance", default=None, help="classifier-free guidance scale (model's)")
    p.add_argument(
        "--guidance-interval",
        type=parse_interval,
        default=None,
        help="guide only where LO < sigma <= HI ('LO,HI'), or 'all' steps (model's default)",
    )
    add_cads_arguments(p)
    p.add_argument(
        "--guide",
        action="append",
        metavar="KIND:DIR[:SCALE]",
        help="steer by a classifier or CLIP guide (t2i generate --guide); repeatable",
    )
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--batch-size", type=int, default=32, help="images per sampler call")
    p.add_argument("--no-heldout", action="store_true", help="shapes: skip held-out combinations")
    p.add_argument(
        "--paraphrases",
        action="store_true",
        help="shapes: also prompts in phrasings held out of training (plurals, synonyms, frames)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", default=None, help="output folder (default eval/ or eval/sweep)")
    p.add_argument(
        "--card", action="store_true", help="also write the figures into the model's data card"
    )
    p.add_argument(
        "--nll",
        type=int,
        default=None,
        metavar="N",
        help="instead of sampling: bits per dimension of N held-out images given their captions "
        "(the family's own bound), into OUT/likelihood.json",
    )
    p.add_argument(
        "--nll-timesteps",
        default="all",
        metavar="K|all",
        help="--nll: sum every step exactly (all, default) or estimate from K drawn per image",
    )
    p.set_defaults(func=run)


def _list(text: str | None, cast, name: str) -> tuple:
    if text is None:
        return ()
    try:
        return tuple(cast(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise ValueError(f"--{name} must be a comma list of {cast.__name__}, got {text!r}") from err


def _one(text: str | None, cast, name: str):
    values = _list(text, cast, name)
    if len(values) > 1:
        raise ValueError(f"--{name} takes one value for `t2i eval` (lists are for sweep): {text!r}")
    return values[0] if values else None


def run(args: argparse.Namespace) -> int:
    target = args.target
    if target[0] == "sweep":
        if len(target) != 2:
            raise ValueError(f"usage: t2i eval sweep MODEL; got {' '.join(target)!r}")
        return _sweep(target[1], args)
    if len(target) != 1:
        raise ValueError(f"usage: t2i eval MODEL or t2i eval sweep MODEL; got {' '.join(target)!r}")
    return _eval(target[0], args)


def _eval(model: str, args: argparse.Namespace) -> int:
    from t2i.evaluation.evaluate import EvalConfig, evaluate, format_report, write_card

    if args.nll is not None:
        return _likelihood(model, args)

    cfg = EvalConfig(
        data=args.data,
        n=1000 if args.n is None else args.n,
        sampler=_one(args.sampler, str, "sampler"),
        steps=_one(args.steps, int, "steps"),
        guidance=_one(args.guidance, float, "guidance"),
        guidance_interval=args.guidance_interval,
        cads_noise=args.cads_noise,
        cads_interval=args.cads_interval,
        seed=args.seed,
        batch_size=args.batch_size,
        heldout=not args.no_heldout,
        paraphrases=args.paraphrases,
        progress=not args.quiet,
    )
    cfg.guides = tuple(_guide(spec) for spec in args.guide or ())
    out = args.out or "eval"
    report = evaluate(model, cfg, out_dir=out)
    print(format_report(report))
    print(f"wrote {out}/report.json and {out}/grid.png (+ grid.txt captions)")
    if args.card:
        print(f"wrote the figures into {write_card(model, report)}")
    return 0


def _likelihood(model: str, args: argparse.Namespace) -> int:
    from pathlib import Path

    from t2i.checkpoint import atomic_write_json
    from t2i.evaluation.likelihood import format_likelihood, likelihood_report
    from t2i.families import load

    steps = None if args.nll_timesteps == "all" else _one(args.nll_timesteps, int, "nll-timesteps")
    report = {"model": model, **likelihood_report(load(model), args.data, args.nll, steps)}
    out = Path(args.out or "eval")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "likelihood.json", report)
    print(format_likelihood(report))
    print(f"wrote {out}/likelihood.json")
    return 0


def _guide(spec: str) -> tuple[str, str, float]:
    from t2i.generate import guide_flag

    kind, path, scale = guide_flag(spec)
    return kind, path, 1.0 if scale is None else scale


def _sweep(model: str, args: argparse.Namespace) -> int:
    from t2i.evaluation.sweep import SweepConfig, sweep

    cfg = SweepConfig(data=args.data, seed=args.seed, batch_size=args.batch_size)
    cfg.n = 200 if args.n is None else args.n
    cfg.samplers = _list(args.sampler, str, "sampler") or cfg.samplers
    cfg.steps = _list(args.steps, int, "steps") or cfg.steps
    cfg.guidances = _list(args.guidance, float, "guidance") or cfg.guidances
    out = args.out or "eval/sweep"
    sweep(model, cfg, out_dir=out)
    print(f"wrote {out}/sweep.md, {out}/sweep.json, {out}/sweep.png and {out}/sweep_nfe.png")
    return 0
