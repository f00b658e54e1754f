"""Command-line interface: ``surrinf simulate | info | validate | train | generate | run``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__


def _floats(text: str, n: int, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be {n} comma-separated numbers, got {text!r}") from None
    if len(values) != n:
        raise argparse.ArgumentTypeError(f"{name} must be {n} comma-separated numbers, got {text!r}")
    return values


def _cmd_simulate(args: argparse.Namespace) -> int:
    import jax

    from .sim import DetectorParams, calorimeter, simulate_to_file
    from .sim.spectrum import parse_energy_spec

    if args.n < 1:
        raise ValueError(f"--n must be a positive number of showers, got {args.n}")
    spectrum = parse_energy_spec(args.energy)
    theta = _floats(args.theta, 3, "--theta") if args.theta else None
    offset = _floats(args.offset, 2, "--offset") if args.offset else None
    cal = calorimeter(args.geometry, args.material, DetectorParams(*theta) if theta else None)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out {out} exists; pass --overwrite to replace it")
    k_energy, k_sim = jax.random.split(jax.random.key(args.seed))
    energies = spectrum.sample(k_energy, args.n)
    simulate_to_file(cal, k_sim, energies, out, offset_mm=offset, progress=not args.quiet, chunk_size=args.chunk_size)
    print(out)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .data import file_info, file_info_json, validate_file

    info = file_info(args.file)
    if args.validate:
        validate_file(args.file)
    if args.json:
        print(file_info_json(args.file))
        return 0
    for k, v in info.items():
        if isinstance(v, dict):
            v = json.dumps(v, default=str)
        print(f"{k:>22}: {v}")
    if args.validate:
        print(f"{'validation':>22}: ok")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .data import get_geometry, read_showers
    from .validation.validate import ValidationConfig, validate

    geometry = get_geometry(args.geometry) if args.geometry else None
    ref = read_showers(args.reference, geometry=geometry, stop=args.max_showers)
    geometry = geometry or ref.geometry
    if geometry is None:
        raise ValueError(f"--geometry is needed: {args.reference} stores no geometry")
    cand = read_showers(args.candidate, geometry=geometry, stop=args.max_showers)
    material = args.material or ref.attrs.get("material")
    x0_mm = None
    if material:
        from .sim import get_material

        x0_mm = get_material(str(material)).X0_mm
    cfg = ValidationConfig(classifier=not args.no_classifier, low_level=not args.no_low_level)
    report = validate(ref, cand, geometry, seed=args.seed, x0_mm=x0_mm, config=cfg)
    path = report.save(args.out, title=f"Validation: {Path(args.candidate).name} vs {Path(args.reference).name}")
    print(path)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from .data import ShowerBijection, read_showers
    from .generators import TrainConfig, save
    from .generators.models import DEFAULT_TRAIN_CONFIGS, fit_surrogate

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    model_cfg = json.loads(args.model_config) if args.model_config else None
    if model_cfg is not None and not isinstance(model_cfg, dict):
        raise ValueError(f"--model-config must be a JSON object, got {args.model_config!r}")
    tc = DEFAULT_TRAIN_CONFIGS[args.model].to_dict()
    for name in ("max_steps", "batch_size", "learning_rate"):
        if getattr(args, name) is not None:
            tc[name] = getattr(args, name)
    data = read_showers(args.data, stop=args.max_showers)
    if data.geometry is None:
        raise ValueError(f"--data {args.data} stores no geometry (surrinf_geometry attribute); cannot train")
    showers = data.showers_gev()
    n_neg = int(np.sum(showers < 0))
    if n_neg:
        print(f"note: {n_neg} negative voxel values (noise) set to 0: surrogates model non-negative showers")
        showers = np.maximum(showers, 0.0)
    theta = None
    if args.with_theta:
        if data.theta is None:
            raise ValueError(f"--with-theta: {args.data} has no theta dataset")
        theta = data.theta.astype(np.float32)
    log_dir = Path(args.log_dir) if args.log_dir else out.with_name(out.name + "-train")
    model, result = fit_surrogate(
        args.model,
        jax.random.key(args.seed),
        showers,
        data.energies_gev(),
        ShowerBijection(data.geometry),
        theta=theta,
        model_config=model_cfg,
        train_config=TrainConfig.from_dict(tc),
        out_dir=log_dir,
        progress=not args.quiet,
    )
    meta = {
        "data": str(args.data),
        "n_showers": data.n,
        "data_attrs": {k: v for k, v in data.attrs.items() if isinstance(v, (str, int, float, bool))},
        "seed": args.seed,
        "train_config": TrainConfig.from_dict(tc).to_dict(),
        "steps_run": result.steps_run,
        "best_val_loss": result.best_val_loss,
        "train_log": str(log_dir),
    }
    path = save(model, out, model.config(), metadata=meta)
    print(path)
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from .data import ShowerData, ShowerWriter
    from .generators import load
    from .generators.base import ShowerSurrogate, sample_batched
    from .sim.spectrum import parse_energy_spec

    if args.n < 1:
        raise ValueError(f"--n must be a positive number of showers, got {args.n}")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out {out} exists; pass --overwrite to replace it")
    model, info = load(args.model_dir)
    if not isinstance(model, ShowerSurrogate):
        raise ValueError(f"{args.model_dir} holds a {info.get('model_type')!r}, not a shower surrogate")
    spectrum = parse_energy_spec(args.energy)
    theta = np.asarray(_floats(args.theta, model.n_theta, "--theta"), np.float32) if args.theta else None
    if model.n_theta and theta is None:
        raise ValueError(f"--theta is required: the model is conditioned on {model.n_theta} theta values")
    attrs = dict((info.get("metadata") or {}).get("data_attrs") or {})
    attrs.update(generator=str(info.get("model_type")), generator_dir=str(args.model_dir))
    k_energy, k_gen = jax.random.split(jax.random.key(args.seed))
    energies = np.asarray(spectrum.sample(k_energy, args.n), np.float32)
    chunk = int(args.chunk_size)
    with ShowerWriter(out, model.geometry, attrs=attrs) as writer:
        for i, start in enumerate(range(0, args.n, chunk)):
            e = energies[start : start + chunk]
            cond = e if theta is None else np.concatenate([e[:, None], np.broadcast_to(theta, (e.size, theta.size))], 1)
            showers = sample_batched(model, jax.random.fold_in(k_gen, i), cond, batch_size=min(chunk, 4096))
            writer.append(ShowerData.from_gev(e, showers, geometry=model.geometry))
            if not args.quiet:
                print(f"\r{start + e.size}/{args.n} showers", end="", file=sys.stderr)
    if not args.quiet:
        print(file=sys.stderr)
    print(out)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import load_config

    config = load_config(args.config)  # a bad configuration fails before the stages are imported
    if args.quick:
        config = config.quick()

    from .pipeline import run_pipeline

    result = run_pipeline(config, progress=not args.quiet)
    print(result.run_dir / "report.html")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from .pipeline import default_toml, load_config, to_toml

    if args.action == "show":
        print(to_toml(load_config(args.file)) if args.file else default_toml(), end="")
    else:  # check
        if not args.file:
            raise ValueError("surrinf config check needs a FILE")
        load_config(args.file)
        print(f"{args.file}: valid")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .data.geometry import GEOMETRY_NAMES
    from .sim.materials import MATERIALS

    p = argparse.ArgumentParser(prog="surrinf", description="Surrogate-assisted inference for particle physics.")
    p.add_argument("--version", action="version", version=f"surrinf {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="simulate reference showers into a CaloChallenge HDF5 file (MeV)")
    s.add_argument("--geometry", default="default", choices=GEOMETRY_NAMES)
    s.add_argument("--material", default=None, choices=sorted(MATERIALS), help="default: the geometry's own")
    s.add_argument("--n", type=int, default=10_000, help="number of showers")
    s.add_argument(
        "--energy",
        default="log-uniform:1,1000",
        help="incident energies in GeV: log-uniform:LO,HI | uniform:LO,HI | fixed:E | discrete:E1,E2,... | "
        "power-law:LO,HI,GAMMA",
    )
    s.add_argument("--theta", default=None, help="detector parameters s,a,sigma_n (a in GeV^1/2, sigma_n in GeV)")
    s.add_argument("--offset", default=None, help="beam impact offset x,y in mm")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--chunk-size", type=int, default=None, help="showers per batch (default: automatic)")
    s.add_argument("--out", required=True, help="output HDF5 file")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_simulate)

    i = sub.add_parser("info", help="describe a CaloChallenge HDF5 file")
    i.add_argument("file")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--validate", action="store_true", help="check every shower (chunk-wise)")
    i.set_defaults(func=_cmd_info)

    v = sub.add_parser("validate", help="compare a candidate shower file with a reference file")
    v.add_argument("reference")
    v.add_argument("candidate")
    v.add_argument("--out", required=True, help="report directory")
    v.add_argument("--geometry", default=None, choices=GEOMETRY_NAMES, help="default: the one stored in the file")
    v.add_argument("--material", default=None, choices=sorted(MATERIALS), help="for depth of maximum [X0]")
    v.add_argument("--max-showers", type=int, default=None, help="use at most this many showers of each file")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--no-classifier", action="store_true", help="skip the classifier tests")
    v.add_argument("--no-low-level", action="store_true", help="skip the low-level (voxel) classifier")
    v.set_defaults(func=_cmd_validate)

    t = sub.add_parser("train", help="train a surrogate on a CaloChallenge HDF5 file and save it to a model directory")
    t.add_argument("--model", required=True, choices=["flow", "vae", "diffusion", "gan"])
    t.add_argument("--data", required=True, help="training showers (CaloChallenge HDF5 with a stored geometry)")
    t.add_argument("--out", required=True, help="model directory (model.eqx + model.json)")
    t.add_argument("--log-dir", default=None, help="training log and checkpoints (default: OUT-train beside OUT)")
    t.add_argument("--max-steps", type=int, default=None, help="default: the model family's budget")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--learning-rate", type=float, default=None)
    t.add_argument("--model-config", default=None, help="JSON object of model hyperparameters, e.g. '{\"latent\": 16}'")
    t.add_argument("--max-showers", type=int, default=None, help="use at most this many showers of the file")
    t.add_argument("--with-theta", action="store_true", help="condition on the file's theta (s, a, sigma_n)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    g = sub.add_parser("generate", help="sample showers from a saved surrogate into a CaloChallenge HDF5 file")
    g.add_argument("model_dir")
    g.add_argument("--n", type=int, default=100_000, help="number of showers")
    g.add_argument("--energy", default="log-uniform:1,1000", help="incident-energy spectrum [GeV], e.g. fixed:50")
    g.add_argument("--theta", default=None, help="detector parameters for a theta-conditioned model (comma-separated)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--chunk-size", type=int, default=20_000, help="showers per written batch")
    g.add_argument("--out", required=True, help="output HDF5 file")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(func=_cmd_generate)

    r = sub.add_parser(
        "run",
        help="the main job: simulate, train, validate, calibrate, unfold, dijet fit, sensitivity -> report.html",
    )
    r.add_argument("--config", default=None, help="TOML configuration (default: the embedded one; see 'config show')")
    r.add_argument(
        "--quick", action="store_true", help="tiny sizes for every stage: checks the whole chain; numbers mean nothing"
    )
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.set_defaults(func=_cmd_run)

    c = sub.add_parser("config", help="print or check the main job's TOML configuration")
    c.add_argument(
        "action", choices=["show", "check"], help="show: the defaults (or FILE merged with them); check: validate FILE"
    )
    c.add_argument("file", nargs="?", default=None, help="a TOML configuration file")
    c.set_defaults(func=_cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileExistsError, FileNotFoundError, argparse.ArgumentTypeError) as err:
        print(f"surrinf {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
